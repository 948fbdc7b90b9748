"""Tests of the Python marks client against real FIFOs and files (standard library only).

Run: python3 -m unittest discover -s python/tests
"""

import os
import stat
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import flinch_marks  # noqa: E402
from flinch_marks import Marks, format_mark  # noqa: E402


class Reader:
    """A FIFO reader standing in for the recorder."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""

    def drain(self):
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.data += chunk
        return self.data.decode().splitlines()

    def close(self):
        os.close(self.fd)


class FormatTest(unittest.TestCase):
    def test_lines_are_the_protocol(self):
        self.assertEqual(format_mark("first_token", 42, req=7, n=1), "first_token t=42 req=7 n=1\n")
        self.assertEqual(format_mark("x", None, req=None), "x\n")
        for bad in [lambda: format_mark("bad label"), lambda: format_mark("ok", k="two words"),
                    lambda: format_mark("ok", t=1), lambda: format_mark("ok", v="x" * 5000)]:
            with self.assertRaises(ValueError):
                bad()


class FifoTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "marks.fifo")

    def tearDown(self):
        self.dir.cleanup()

    def test_no_recorder_is_counted_not_raised_and_not_blocking(self):
        m = Marks(self.path, retry_open_s=0)
        t0 = time.monotonic()
        self.assertEqual(m.mark("a"), "no-recorder")  # nothing at the path
        os.mkfifo(self.path, 0o600)
        self.assertEqual(m.mark("a"), "no-recorder")  # a FIFO nobody reads: ENXIO
        self.assertLess(time.monotonic() - t0, 5.0)
        self.assertEqual(m.stats(), {"sent": 0, "dropped": 0, "no_recorder": 2})

    def test_marks_carry_monotonic_stamps_and_fields(self):
        os.mkfifo(self.path, 0o600)
        r = Reader(self.path)
        m = Marks(self.path)
        before = time.monotonic_ns()
        self.assertEqual(m.mark("infer_start", req=7, model="tiny"), "sent")
        with m.span("prefill_start", "prefill_end", req=7):
            pass
        with self.assertRaises(RuntimeError):
            with m.span("s", "e", req=8):
                raise RuntimeError("boom")
        after = time.monotonic_ns()
        lines = r.drain()
        r.close()
        self.assertEqual(len(lines), 5)
        label, t, *rest = lines[0].split(" ")
        self.assertEqual(label, "infer_start")
        self.assertTrue(before <= int(t[2:]) <= after)
        self.assertEqual(rest, ["req=7", "model=tiny"])
        self.assertTrue(lines[2].startswith("prefill_end t="))
        self.assertTrue(lines[4].endswith("req=8 error=1"))

    def test_a_full_pipe_drops_and_counts_instead_of_blocking(self):
        os.mkfifo(self.path, 0o600)
        r = Reader(self.path)  # never drained
        m = Marks(self.path)
        outcomes = [m.mark("fill", pad="x" * 3000) for _ in range(2000)]
        self.assertIn("dropped", outcomes)
        self.assertEqual(m.sent + m.dropped, 2000)
        # what did get through is whole lines only
        lines = r.drain()
        self.assertEqual(len(lines), m.sent)
        self.assertTrue(all(l.startswith("fill t=") and l.endswith("x" * 3000) for l in lines))
        r.close()

    def test_a_recorder_that_goes_away_is_survived(self):
        os.mkfifo(self.path, 0o600)
        r = Reader(self.path)
        m = Marks(self.path, retry_open_s=0)
        self.assertEqual(m.mark("one"), "sent")
        r.close()
        self.assertEqual(m.mark("two"), "no-recorder")  # EPIPE handled
        r2 = Reader(self.path)  # a new recorder on the same FIFO
        self.assertEqual(m.mark("three"), "sent")
        self.assertEqual([l.split(" ")[0] for l in r2.drain()], ["three"])
        r2.close()

    def test_recorder_says_which_recorder_reads_the_fifo_and_only_when_it_can_be_trusted(self):
        import json
        os.mkfifo(self.path, 0o600)
        m = Marks(self.path, retry_open_s=0)
        self.assertIsNone(m.recorder())  # nobody reads it
        r = Reader(self.path)
        self.assertIsNone(m.recorder())  # a reader that says nothing about itself
        st = os.stat(self.path)
        info = {"pid": os.getpid(), "trace": "/data/run.flinch.csv", "fifo": self.path,
                "fifo_dev": st.st_dev, "fifo_ino": st.st_ino}
        with open(self.path + ".recorder", "w") as f:
            json.dump(info, f)
        self.assertEqual(m.recorder(), {"pid": os.getpid(), "trace": "/data/run.flinch.csv",
                                        "fifo": self.path})
        # about another FIFO (left by an earlier recorder): not trusted
        with open(self.path + ".recorder", "w") as f:
            json.dump(dict(info, fifo_ino=st.st_ino + 1), f)
        self.assertIsNone(m.recorder())
        # its process is gone: not trusted
        with open(self.path + ".recorder", "w") as f:
            json.dump(dict(info, pid=2**31 - 1), f)
        self.assertIsNone(m.recorder())
        # a symlink: never followed
        os.remove(self.path + ".recorder")
        target = os.path.join(self.dir.name, "elsewhere.json")
        with open(target, "w") as f:
            json.dump(info, f)
        os.symlink(target, self.path + ".recorder")
        self.assertIsNone(m.recorder())
        r.close()

    def test_concurrent_threads_never_interleave(self):
        os.mkfifo(self.path, 0o600)
        r = Reader(self.path)
        m = Marks(self.path)
        lines = []
        stop = threading.Event()

        def drain():
            while not stop.is_set():
                lines.extend(r.drain())
                r.data = b"" if r.data.endswith(b"\n") else r.data[r.data.rfind(b"\n") + 1:]
                time.sleep(0.001)

        t = threading.Thread(target=drain)
        t.start()
        ws = [threading.Thread(target=lambda w=w: [m.mark("tok", w=w, n=i, pad=w * 100) for i in range(2000)])
              for w in "ab"]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
        time.sleep(0.1)
        stop.set()
        t.join()
        lines.extend(r.drain())
        r.close()
        got = [l for l in lines if l.startswith("tok ")]
        self.assertEqual(len(got) + m.dropped, 4000)
        for l in got:
            parts = dict(p.split("=", 1) for p in l.split(" ")[1:])
            self.assertEqual(parts["pad"], parts["w"] * 100)

    def test_never_writes_through_a_symlink(self):
        target = os.path.join(self.dir.name, "victim")
        with open(target, "w") as f:
            f.write("precious\n")
        os.symlink(target, self.path)
        m = Marks(self.path, retry_open_s=0)
        self.assertEqual(m.mark("x"), "no-recorder")
        with open(target) as f:
            self.assertEqual(f.read(), "precious\n")

    @unittest.skipUnless(os.geteuid() == 0, "needs root to make a FIFO owned by another user")
    def test_never_writes_into_another_users_fifo(self):
        os.mkfifo(self.path, 0o666)
        os.chown(self.path, 65534, 65534)
        r = Reader(self.path)
        m = Marks(self.path, retry_open_s=0)
        self.assertEqual(m.mark("x"), "no-recorder")
        self.assertEqual(r.drain(), [])
        r.close()

    def test_regular_files_are_appended_to(self):
        with open(self.path, "w"):
            pass
        os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)
        m = Marks(self.path)
        m.mark("a", req=1)
        m.mark("b", req=1)
        with open(self.path) as f:
            self.assertEqual([l.split(" ")[0] for l in f.read().splitlines()], ["a", "b"])

    def test_default_path_follows_the_recorder(self):
        old = dict(os.environ)
        try:
            os.environ["FLINCH_MARKS"] = "/x/y"
            self.assertEqual(flinch_marks.default_path(), "/x/y")
            del os.environ["FLINCH_MARKS"]
            os.environ["XDG_RUNTIME_DIR"] = "/run/user/5"
            self.assertEqual(flinch_marks.default_path(), "/run/user/5/flinch/marks.fifo")
            del os.environ["XDG_RUNTIME_DIR"]
            self.assertEqual(flinch_marks.default_path(), "/tmp/flinch-%d/marks.fifo" % os.geteuid())
        finally:
            os.environ.clear()
            os.environ.update(old)


if __name__ == "__main__":
    unittest.main()
