"""``Recorder``, windows and ``calibrate``: flinch's Rust recorder in this process."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

from . import _flinch
from ._errors import InvalidInput, NotIdleError

__all__ = ["Recorder", "Window", "Measurement", "calibrate"]

PathLike = Union[str, "os.PathLike[str]"]
IdleArg = Union[None, str, "os.PathLike[str]", Mapping[str, Any]]
F = TypeVar("F", bound=Callable[..., Any])


def _seconds(x: Union[float, int, str]) -> float:
    """Seconds from a number or a string like ``"10ms"``, ``"1.5s"``, ``"250us"``."""
    if isinstance(x, (int, float)):
        return float(x)
    s = str(x).strip()
    for unit, mult in (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)):
        if s.endswith(unit):
            try:
                return float(s[: -len(unit)]) * mult
            except ValueError:
                break
    raise InvalidInput("%r is not a duration (give seconds, or e.g. '10ms', '1.5s')" % (x,))


def _source_args(
    interval: Union[float, str],
    synthetic: Optional[str],
    rapl_root: Optional[PathLike],
    nvml_lib: Optional[PathLike],
    gpus: Optional[Sequence[Union[int, str]]],
    nvml_energy_interval: Optional[Union[float, str]],
    dcgm_lib: Optional[PathLike],
    dcgm_host: Optional[str],
    pid: Optional[int],
) -> Dict[str, Any]:
    return {
        "dcgm_lib": os.fspath(dcgm_lib) if dcgm_lib is not None else None,
        "dcgm_host": dcgm_host,
        "pid": pid,
        "interval_s": _seconds(interval),
        "synthetic": synthetic,
        "rapl_root": os.fspath(rapl_root) if rapl_root is not None else None,
        "nvml_lib": os.fspath(nvml_lib) if nvml_lib is not None else None,
        "gpus": [str(g) for g in gpus] if gpus is not None else None,
        "nvml_energy_interval_s": (
            _seconds(nvml_energy_interval) if nvml_energy_interval is not None else None
        ),
    }


def _sources(sources: Union[None, str, Sequence[str]]) -> List[str]:
    if sources is None:
        return []
    if isinstance(sources, str):
        return [sources]
    return [str(s) for s in sources]


def _bound(b: Any) -> Optional[Tuple[float, float]]:
    return None if b is None else (float(b[0]), float(b[1]))


@dataclass
class Measurement:
    """What a window measured, computed by the code behind ``flinch analyze``.

    Attributes:
        name: the window's name.
        req: the request id its two marks carry.
        start_ns, end_ns: its edges, ``CLOCK_MONOTONIC`` ns (``time.monotonic_ns()``).
        duration_s: ``(end_ns - start_ns) / 1e9``.
        resolved: whether the sensors could see the window: every device measured it, and
            the channel each device's energy came from updated at least twice inside it
            and spans one sensor period. A window shorter than that is *not* resolved: its
            energy is still given (interpolated between samples), never a silent 0 J.
        reason: why it is not resolved (None when it is).
        verdict: ``gpu-compute``, ``cpu-compute``, ``idle-wait`` or ``unresolved``.
        evidence: the lines that decided the verdict.
        energy_j: per device, J over the window (None where no channel measured it).
        active_energy_j: per device, J above the idle level (None without an idle
            profile: give ``Recorder(idle=...)``).
        mean_power_w, idle_power_w: per device, W.
        methods: per device, the kind of channel the energy came from
            (``driver-samples``, ``instant``, ``modelled``, ``counter``, ``average``).
        energy_bound_j, active_energy_bound_j: per device, ``(lo, hi)`` J: where the true
            energy (above idle) lies given the sensors' update periods, the edges and the
            idle spread (None where there is none); see ``docs/analysis.md``.
        span: the whole span as ``flinch analyze --json`` reports it (per channel energy
            with sensor updates and status, per device state, activity).
    """

    name: str
    req: Optional[str]
    start_ns: int
    end_ns: int
    duration_s: float
    resolved: bool
    reason: Optional[str]
    verdict: str
    evidence: List[str]
    energy_j: Dict[str, Optional[float]]
    active_energy_j: Dict[str, Optional[float]]
    mean_power_w: Dict[str, Optional[float]]
    idle_power_w: Dict[str, Optional[float]]
    methods: Dict[str, Optional[str]]
    energy_bound_j: Dict[str, Optional[Tuple[float, float]]]
    active_energy_bound_j: Dict[str, Optional[Tuple[float, float]]]
    span: Dict[str, Any] = field(repr=False)

    @classmethod
    def _from_json(cls, name: str, text: str) -> "Measurement":
        m = json.loads(text)
        s = m["span"]
        devs = s.get("devices", {})
        return cls(
            name=name,
            req=s.get("req"),
            start_ns=s["start_ns"],
            end_ns=s["end_ns"],
            duration_s=s["duration_s"],
            resolved=bool(m["resolved"]),
            reason=m.get("reason"),
            verdict=s["verdict"],
            evidence=list(s.get("evidence", [])),
            energy_j={d: v.get("energy_j") for d, v in devs.items()},
            active_energy_j={d: v.get("active_energy_j") for d, v in devs.items()},
            mean_power_w={d: v.get("mean_power_w") for d, v in devs.items()},
            idle_power_w={d: v.get("idle_power_w") for d, v in devs.items()},
            methods={d: v.get("method") for d, v in devs.items()},
            energy_bound_j={d: _bound(v.get("energy_bound_j")) for d, v in devs.items()},
            active_energy_bound_j={
                d: _bound(v.get("active_energy_bound_j")) for d, v in devs.items()
            },
            span=s,
        )


class Window:
    """A named stretch of code measured by a running :class:`Recorder`.

    Made by :meth:`Recorder.window`. As a context manager it measures its ``with`` block;
    as a decorator, every call of the function (each call is a window of its own; the
    one that ended last is ``func.last_window``). Entering stamps the start and sends the mark
    ``NAME_start``; leaving stamps the end and sends ``NAME_end`` (both with the window's
    fields and a ``req``, its own unless given, so that windows of one name that overlap or
    nest pair exactly in the trace too). Neither waits for anything: no sensor is read on
    the caller's thread.

    After the block, :meth:`result` returns the :class:`Measurement` once the sensors have
    covered the window's end.
    """

    __slots__ = ("_rec", "_name", "_fields", "_native")

    def __init__(self, rec: "Recorder", name: str, fields: Dict[str, Any]) -> None:
        self._rec = rec
        self._name = name
        self._fields = fields
        self._native: Any = None

    def __enter__(self) -> "Window":
        if self._native is not None:
            raise RuntimeError(
                "window %r was entered already: a window measures one block; "
                "call rec.window(...) again for another" % self._name
            )
        self._native = self._rec._native.open_window(self._name, self._fields)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._native.close()

    def __call__(self, func: F) -> F:
        rec, name, fields = self._rec, self._name, self._fields

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            w = Window(rec, name, fields)
            try:
                with w:
                    return func(*args, **kwargs)
            finally:
                wrapper.last_window = w  # type: ignore[attr-defined]

        wrapper.last_window = None  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The window's name (its marks are ``NAME_start`` and ``NAME_end``)."""
        return self._name

    @property
    def start_ns(self) -> Optional[int]:
        """``CLOCK_MONOTONIC`` ns of the start (None before the window is entered)."""
        return self._native.start_ns if self._native is not None else None

    @property
    def end_ns(self) -> Optional[int]:
        """``CLOCK_MONOTONIC`` ns of the end (None while open)."""
        return self._native.end_ns if self._native is not None else None

    @property
    def req(self) -> Optional[str]:
        """The request id the window's marks carry."""
        return self._native.req if self._native is not None else None

    @property
    def done(self) -> bool:
        """Whether the measurement is ready (``result()`` would return at once)."""
        return self._native is not None and self._native.done

    def result(self, timeout: Optional[float] = None) -> Measurement:
        """The window's measurement, waiting (without holding the GIL) only until the
        sensors have covered its end: about one sensor period for polled channels, up to
        ~0.5 s for NVML's driver sample buffer. A source that stops answering is waited for
        at most 2 s plus three of its update periods, then left out (its status says so).

        Raises:
            TimeoutError: not measured within ``timeout`` seconds.
            flinch.InvalidInput: the window has not ended, or the recording stopped before
                it did.
        """
        if self._native is None:
            raise InvalidInput("window %r was never entered" % self._name)
        text = self._native.result(timeout)
        if text is None:
            raise TimeoutError(
                "window %r: not measured within %s s (the sensors have not covered its end yet)"
                % (self._name, timeout)
            )
        return Measurement._from_json(self._name, text)

    def __repr__(self) -> str:
        state = "not entered" if self._native is None else (
            "open" if self.end_ns is None else ("measured" if self.done else "ended")
        )
        return "Window(%r, %s)" % (self._name, state)


class Recorder:
    """Records power, energy and activity in this process, with flinch's Rust recorder.

    The sources are sampled on the recorder's own threads (never holding the GIL), into a
    trace file like ``flinch record`` writes. Marks and windows sent from Python are stamped
    on the same ``CLOCK_MONOTONIC`` clock and land in that trace; windows are also measured
    in-process.

    >>> with flinch.Recorder(sources=["nvml"], out="run.flinch.csv", idle="idle.json") as rec:
    ...     with rec.window("prefill", req=7) as w:
    ...         run_prefill()
    ...     m = w.result()
    ...     print(m.duration_s, m.energy_j["gpu0"], m.active_energy_j["gpu0"], m.verdict)
    ...     rec.mark("first_token", req=7)

    Args:
        sources: backend names (``"nvml"``, ``"dcgm"``, ``"rapl"``, ``"cpu"``,
            ``"synthetic"``); None: every available hardware backend, like ``flinch record``
            (the synthetic source when there is none, with a warning).
        out: the trace file; None: a new file in the temporary directory (``rec.out``).
        idle: an idle profile (a file from ``flinch calibrate`` / :func:`calibrate`, or
            the dict ``calibrate`` returned): embedded in the trace, and what windows'
            ``active_energy_j`` subtracts.
        interval: the sampling interval (seconds, or ``"10ms"``).
        force: replace ``out`` if it exists (else an existing file is an error).
        meta: ``key=value`` pairs for the trace header (``--meta``).
        marks_fifo: also take marks from other processes through a FIFO at this path
            (``flinch mark``, ``flinch_marks``); None: marks only from this process.
        synthetic: the synthetic source's schedule, e.g. ``"60W/1s,300W/1s;class=gpu"``.
        rapl_root: the powercap tree RAPL reads (default ``/sys/class/powercap``).
        nvml_lib: the NVML library to load instead of ``libnvidia-ml.so.1``.
        gpus: GPU indices or UUIDs to record (None: all).
        nvml_energy_interval: how often NVML's energy counter is read (each read costs
            milliseconds of CPU in the driver; default 1 s).
        dcgm_lib: the DCGM library to load instead of ``libdcgm.so.4`` / ``.so.3``.
        dcgm_host: a running DCGM host engine (``IP[:PORT]`` or ``unix:///path``); None:
            start one embedded.
        pid: the process whose tree's CPU time the ``cpu`` source records (``proc.cpu_time``,
            what tells ``cpu-compute`` from waiting); None: this Python process.

    Raises:
        flinch.SourceError: a named source is not available here (the message says why).
        flinch.InvalidInput: an unknown source name or a bad option.
        FileExistsError, OSError: ``out`` exists (without ``force``) or cannot be created.
    """

    def __init__(
        self,
        sources: Union[None, str, Sequence[str]] = None,
        out: Optional[PathLike] = None,
        *,
        idle: IdleArg = None,
        interval: Union[float, str] = 0.01,
        force: bool = False,
        meta: Optional[Mapping[str, Any]] = None,
        marks_fifo: Optional[PathLike] = None,
        synthetic: Optional[str] = None,
        rapl_root: Optional[PathLike] = None,
        nvml_lib: Optional[PathLike] = None,
        gpus: Optional[Sequence[Union[int, str]]] = None,
        nvml_energy_interval: Optional[Union[float, str]] = None,
        dcgm_lib: Optional[PathLike] = None,
        dcgm_host: Optional[str] = None,
        pid: Optional[int] = None,
    ) -> None:
        if out is None:
            fd, path = tempfile.mkstemp(prefix="flinch-", suffix=".flinch.csv")
            os.close(fd)
            out, force = path, True
        elif os.path.exists(out) and not force:
            raise FileExistsError(
                17, "%s exists: choose another out= or pass force=True to replace it"
                % os.fspath(out), os.fspath(out),
            )
        idle_kw: Dict[str, Any] = {}
        if isinstance(idle, Mapping):
            idle_kw["idle_json"] = json.dumps(dict(idle))
        elif idle is not None:
            idle_kw["idle"] = os.fspath(idle)
        self._native = _flinch.NativeRecorder(
            os.fspath(out),
            sources=_sources(sources),
            force=force,
            meta=[(str(k), str(v)) for k, v in (meta or {}).items()],
            marks_fifo=os.fspath(marks_fifo) if marks_fifo is not None else None,
            argv=list(sys.argv),
            source_args=_source_args(
                interval, synthetic, rapl_root, nvml_lib, gpus, nvml_energy_interval,
                dcgm_lib, dcgm_host, pid,
            ),
            **idle_kw,
        )
        self.footer: Optional[Dict[str, Any]] = None
        for note in self._native.notes:
            warnings.warn("flinch: " + note, RuntimeWarning, stacklevel=2)

    def window(self, name: str, **fields: Any) -> Window:
        """A window named ``name`` (a mark label: ``[A-Za-z0-9_.:/-]+``), used as a context
        manager or a decorator. ``fields`` go into its marks (``req=7``, ``batch=8``);
        values are written with ``str()``, without blanks."""
        return Window(self, name, fields)

    def mark(self, label: str, **fields: Any) -> bool:
        """Sends a mark stamped now (``label`` is ``[A-Za-z0-9_.:/-]+``; ``req=`` pairs
        spans of overlapping requests). Never waits: returns False when the recorder's
        queue is full and the mark was dropped.

        Raises:
            flinch.InvalidInput: a bad label or field, or the recording has stopped.
        """
        return self._native.mark(label, fields)

    def stop(self) -> Optional[Dict[str, Any]]:
        """Stops recording: a last poll of every source, the footer written, every window
        still waiting measured. Returns the footer (None when already stopped)."""
        text = self._native.stop()
        if text is not None:
            self.footer = json.loads(text)
        return self.footer

    @property
    def out(self) -> str:
        """The trace file."""
        return os.fspath(self._native.out)

    @property
    def backends(self) -> List[str]:
        """The backends being recorded."""
        return list(self._native.backends)

    @property
    def sources(self) -> List[Dict[str, Any]]:
        """The sources with their channels and attributes, as in the trace header."""
        return json.loads(self._native.sources_json)

    @property
    def running(self) -> bool:
        """Whether the recording is still going."""
        return bool(self._native.running)

    def stats(self) -> Optional[Dict[str, int]]:
        """Live counts (samples, marks, bad_marks, dropped_readings, gaps); None once
        stopped."""
        return self._native.stats()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return "Recorder(%s -> %r, %s)" % (
            ", ".join(self.backends),
            self.out,
            "running" if self.running else "stopped",
        )


def calibrate(
    seconds: float = 30.0,
    *,
    sources: Union[None, str, Sequence[str]] = None,
    out: Optional[PathLike] = "idle.json",
    allow_busy: bool = False,
    force: bool = False,
    interval: Union[float, str] = 0.01,
    synthetic: Optional[str] = None,
    rapl_root: Optional[PathLike] = None,
    nvml_lib: Optional[PathLike] = None,
    gpus: Optional[Sequence[Union[int, str]]] = None,
    nvml_energy_interval: Optional[Union[float, str]] = None,
    dcgm_lib: Optional[PathLike] = None,
    dcgm_host: Optional[str] = None,
) -> Dict[str, Any]:
    """Records the machine left alone for ``seconds`` and returns its idle profile (what
    ``flinch calibrate`` writes): per channel mean, median, p5, p95, std, drift, and the
    conditions (clocks, temperatures, driver versions). Calibrate in the state your
    windows wait in: an H100 idles near 70 W without a CUDA context and ~119 W with one.

    Args:
        seconds: how long to record (Ctrl-C stops it and raises KeyboardInterrupt).
        sources: as for :class:`Recorder` (None: every available one).
        out: where to write the profile (JSON, atomically; like ``flinch calibrate``, the
            default is ``idle.json``), for ``Recorder(idle=...)``, ``flinch.analyze(idle=...)``
            or ``flinch record --idle``; None: only return it.
        allow_busy: return (and write) a profile of a machine that was not idle, marked
            ``idle_ok: false``, instead of raising.
        force: replace ``out`` if it exists.
        interval, synthetic, rapl_root, nvml_lib, gpus, nvml_energy_interval, dcgm_lib,
            dcgm_host: as for :class:`Recorder`.

    Raises:
        flinch.NotIdleError: the machine was not idle (the message says what was seen);
            nothing is written.
        FileExistsError: ``out`` exists and ``force`` is false.
        flinch.SourceError, flinch.InvalidInput: as for :class:`Recorder`.
    """
    if out is not None and os.path.exists(out) and not force:
        raise FileExistsError(17, "%s exists; pass force=True to replace it" % os.fspath(out), os.fspath(out))
    text, problems, notes = _flinch.calibrate(
        _seconds(seconds),
        _source_args(
            interval, synthetic, rapl_root, nvml_lib, gpus, nvml_energy_interval,
            dcgm_lib, dcgm_host, None,
        ),
        sources=_sources(sources),
    )
    for note in notes:
        warnings.warn("flinch: " + note, RuntimeWarning, stacklevel=2)
    profile = json.loads(text)
    if problems and not allow_busy:
        raise NotIdleError(
            "the machine was not idle during calibration: %s; calibrate again with the "
            "machine left alone, or pass allow_busy=True" % "; ".join(problems),
            list(problems),
            profile,
        )
    if out is not None:
        path = os.fspath(out)
        tmp = "%s.tmp-%d-%d" % (path, os.getpid(), time.monotonic_ns())
        try:
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return profile
