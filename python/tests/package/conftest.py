"""Shared by the tests of the installed `flinch` package (run with pytest, on the wheel).

These tests live outside `python/` on purpose: `python/flinch` there is the source tree
without its compiled half, and must not shadow the installed package.
"""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
EXAMPLES = {
    "llm": os.path.join(REPO, "examples", "llm", "llm.flinch.csv"),
    "busy-idle": os.path.join(REPO, "examples", "workloads", "busy-idle.flinch.csv"),
}


def flinch_bin():
    """The `flinch` binary to compare with: $FLINCH_BIN, else the workspace's debug build.
    A missing binary fails the test that needs it (never a silent skip)."""
    p = os.environ.get("FLINCH_BIN") or os.path.join(REPO, "target", "debug", "flinch")
    if not os.access(p, os.X_OK):
        pytest.fail(
            "no flinch binary at %s: build it (cargo build -p flinch-cli) or set FLINCH_BIN" % p
        )
    return p


def run_flinch(*args):
    r = subprocess.run([flinch_bin(), *args], capture_output=True, text=True)
    assert r.returncode == 0, "flinch %s failed: %s" % (" ".join(args), r.stderr)
    return r.stdout


@pytest.fixture(scope="session", autouse=True)
def installed_package():
    """The tests run against the installed wheel, not a source tree."""
    import flinch

    assert hasattr(flinch, "_flinch"), flinch.__file__
    assert "site-packages" in flinch.__file__, (
        "flinch imported from %s, not from the installed wheel" % flinch.__file__
    )
    return flinch


class FakeRapl:
    """A powercap tree in a temporary directory, laid out like /sys/class/powercap (as
    flinch-rapl's own FakePowercap lays it out), whose package energy counter a thread
    advances along a known power schedule.

    `energy_uj` is rewritten in place with one pwrite of fixed width (zero-padded), as the
    kernel's file never changes length: a reader never sees it short.
    """

    WIDTH = 20
    RANGE_UJ = 262_143_328_850

    def __init__(self, root, steps, period_s=0.0002):
        self.root = os.path.join(root, "powercap")
        self.steps = steps  # [(seconds, watts)], repeating
        self.period_s = period_s
        ctype = os.path.join(self.root, "intel-rapl")
        zone = os.path.join(ctype, "intel-rapl:0")
        os.makedirs(zone)
        with open(os.path.join(ctype, "enabled"), "w") as f:
            f.write("1\n")
        for name, text in (
            ("name", "package-0\n"),
            ("max_energy_range_uj", "%d\n" % self.RANGE_UJ),
            ("enabled", "1\n"),
            ("energy_uj", "%0*d\n" % (self.WIDTH, 0)),
        ):
            with open(os.path.join(zone, name), "w") as f:
                f.write(text)
        os.symlink(os.path.join("intel-rapl", "intel-rapl:0"), os.path.join(self.root, "intel-rapl:0"))
        self.energy_path = os.path.join(zone, "energy_uj")
        self.origin_ns = time.monotonic_ns()
        self._stop = threading.Event()
        self._fd = os.open(self.energy_path, os.O_WRONLY)
        self._write(self.origin_ns)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def energy_j(self, t_ns):
        """The schedule's exact energy from the origin to t_ns."""
        period = sum(d for d, _ in self.steps)
        el = max(0.0, (t_ns - self.origin_ns) / 1e9)
        n, phase = divmod(el, period)
        e = n * sum(d * w for d, w in self.steps)
        for d, w in self.steps:
            part = min(phase, d)
            e += part * w
            phase -= part
            if phase <= 0:
                break
        return e

    def _write(self, t_ns):
        uj = int(self.energy_j(t_ns) * 1e6) % (self.RANGE_UJ + 1)
        os.pwrite(self._fd, b"%0*d\n" % (self.WIDTH, uj), 0)

    def _run(self):
        # The hardware counter advances on time whatever the load; a Python thread
        # descheduled for 100 ms on a busy machine would make the counter jump (and be
        # flagged implausible). As root (CI), this thread gets a real-time priority: it only
        # ever writes 21 bytes and sleeps.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except (AttributeError, OSError):
            pass
        while not self._stop.is_set():
            self._write(time.monotonic_ns())
            time.sleep(self.period_s)

    def close(self):
        self._stop.set()
        self._thread.join()
        os.close(self._fd)


@pytest.fixture
def fake_rapl(tmp_path):
    made = []

    def make(steps):
        f = FakeRapl(str(tmp_path), steps)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()
