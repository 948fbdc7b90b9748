"""Send flinch marks from Python without ever blocking the sender.

Standard library only. A mark is one line written in one non-blocking ``os.write``:
``LABEL t=<CLOCK_MONOTONIC ns> [key=value ...]``. ``time.monotonic_ns()`` reads the same
clock as flinch on Linux, so the mark lands exactly where it happened.

    from flinch_marks import Marks
    marks = Marks()                      # $FLINCH_MARKS, else the per-user default FIFO
    marks.mark("infer_start", req=7)
    with marks.span("prefill_start", "prefill_end", req=7):
        run_prefill()
    print(marks.stats())                 # sent / dropped / no_recorder
    print(marks.recorder())              # which recorder takes them: {"pid": ..., "trace": ...}

With no recorder running, or with its pipe full, marks are dropped and counted: the caller
is never slowed down and never sees an exception for it.
"""

import contextlib
import errno
import json
import os
import re
import stat
import time

__all__ = ["Marks", "mark", "default_path", "MAX_MARK_BYTES"]

MAX_MARK_BYTES = 4096
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]+$")


def default_path():
    """``$FLINCH_MARKS`` if set, else ``$XDG_RUNTIME_DIR/flinch/marks.fifo``, else
    ``/tmp/flinch-<uid>/marks.fifo`` (where ``flinch record`` puts its FIFO)."""
    p = os.environ.get("FLINCH_MARKS")
    if p:
        return p
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "flinch", "marks.fifo")
    return "/tmp/flinch-%d/marks.fifo" % os.geteuid()


def format_mark(label, t_ns=None, **fields):
    """Formats one mark line (with its newline); raises ValueError on a bad label, key or
    value, or a line over 4096 bytes."""
    if not _NAME.match(label):
        raise ValueError("label %r must be [A-Za-z0-9_.:/-]+" % label)
    parts = [label]
    if t_ns is not None:
        parts.append("t=%d" % t_ns)
    for k, v in fields.items():
        if v is None:
            continue
        v = str(v)
        if not _NAME.match(k) or k == "t":
            raise ValueError("key %r must be [A-Za-z0-9_.:/-]+ and not 't'" % k)
        if any(c.isspace() for c in v):
            raise ValueError("value of %s must not contain blanks: %r" % (k, v))
        parts.append("%s=%s" % (k, v))
    line = " ".join(parts) + "\n"
    if len(line.encode()) > MAX_MARK_BYTES:
        raise ValueError("mark line of %d bytes is over the 4096-byte limit" % len(line.encode()))
    return line


class Marks:
    """A non-blocking mark sender. Thread-safe enough for CPython: each mark is one
    ``os.write`` call, which the kernel keeps atomic for lines of at most 4096 bytes.

    ``retry_open_s``: after finding no recorder, how long to wait before trying to open the
    FIFO again (so a recorder started later is picked up without an ``open`` per mark).
    """

    def __init__(self, path=None, retry_open_s=1.0):
        self.path = path or default_path()
        self.retry_open_s = retry_open_s
        self._fd = None
        self._next_try = 0.0
        self.sent = 0
        self.dropped = 0
        self.no_recorder = 0

    def _open(self):
        now = time.monotonic()
        if now < self._next_try:
            return None
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            self._next_try = now + self.retry_open_s
            return None
        if stat.S_ISFIFO(st.st_mode):
            if st.st_uid != os.geteuid():
                # another user's FIFO: marks could leak to, or be forged by, them
                self._next_try = now + self.retry_open_s
                return None
            flags = os.O_WRONLY | os.O_NONBLOCK
        elif stat.S_ISREG(st.st_mode):
            flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK
        else:
            # a symlink, directory, ...: never write through it
            self._next_try = now + self.retry_open_s
            return None
        try:
            self._fd = os.open(self.path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.ENOENT, errno.ELOOP, errno.EACCES):
                self._next_try = now + self.retry_open_s
                return None
            raise
        return self._fd

    def send_line(self, line):
        """Sends a preformatted line; returns "sent", "dropped" or "no-recorder"."""
        fd = self._fd if self._fd is not None else self._open()
        if fd is None:
            self.no_recorder += 1
            return "no-recorder"
        try:
            os.write(fd, line.encode())
        except BlockingIOError:
            self.dropped += 1
            return "dropped"
        except BrokenPipeError:
            # the recorder went away: close, count, and try again later
            self.close()
            self._next_try = time.monotonic() + self.retry_open_s
            self.no_recorder += 1
            return "no-recorder"
        self.sent += 1
        return "sent"

    def mark(self, label, req=None, t_ns=None, **fields):
        """Sends ``label`` stamped now (or at ``t_ns``), with ``req`` and other fields."""
        t = time.monotonic_ns() if t_ns is None else t_ns
        return self.send_line(format_mark(label, t, req=req, **fields))

    @contextlib.contextmanager
    def span(self, start_label, end_label, req=None, **fields):
        """Marks ``start_label`` on entry and ``end_label`` on exit (also on an exception,
        with ``error=1``)."""
        self.mark(start_label, req=req, **fields)
        try:
            yield
        except BaseException:
            self.mark(end_label, req=req, error=1, **fields)
            raise
        self.mark(end_label, req=req, **fields)

    def stats(self):
        return {"sent": self.sent, "dropped": self.dropped, "no_recorder": self.no_recorder}

    def recorder(self):
        """Which recorder reads this FIFO, as it says next to it (``<fifo>.recorder``): a dict
        with ``pid``, ``trace`` (the file it writes) and ``fifo``; ``None`` when no recorder
        is there, for a marks file, or when the description cannot be trusted (not yours,
        about another FIFO, or its process is gone)."""
        fd = self._fd if self._fd is not None else self._open()
        if fd is None:
            return None
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode):
            return None
        try:
            info_fd = os.open(
                self.path + ".recorder",
                os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
            )
        except OSError:
            return None
        try:
            ist = os.fstat(info_fd)
            if not stat.S_ISREG(ist.st_mode) or ist.st_uid != os.geteuid():
                return None
            info = json.loads(os.read(info_fd, 65536).decode())
        except (OSError, ValueError):
            return None
        finally:
            os.close(info_fd)
        if not isinstance(info, dict) or (info.get("fifo_dev"), info.get("fifo_ino")) != (st.st_dev, st.st_ino):
            return None
        try:
            os.kill(int(info["pid"]), 0)
        except PermissionError:
            pass
        except (OSError, KeyError, TypeError, ValueError):
            return None
        return {"pid": info["pid"], "trace": info.get("trace"), "fifo": info.get("fifo")}

    def close(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_default = None


def mark(label, req=None, **fields):
    """Sends a mark through a process-wide default :class:`Marks`."""
    global _default
    if _default is None:
        _default = Marks()
    return _default.mark(label, req=req, **fields)
