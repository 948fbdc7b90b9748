"""What `rec.window()` costs the caller: enter + exit of a window, timed on the caller's
thread while the recorder samples on its own threads.

    python python/bench/window_overhead.py [--windows 20000] [--source synthetic]

Prints, in the same run: an empty `with` block (the floor: Python's own cost of a context
manager), `rec.mark()` alone, and `with rec.window(...)` (two marks, two clock reads, the
window handed to the measuring observer); their medians, p99 and max in µs; and how long
`w.result()` waited after the window ended (the sensors covering its end). Build the wheel
in release mode for meaningful figures (`maturin build --release`). Target: enter + exit
≤ 5 µs of the caller's time.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

import flinch


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def row(name, ns):
    us = [x / 1e3 for x in ns]
    print(
        "%-28s n=%-6d p50 %7.2f µs   p99 %7.2f µs   max %8.1f µs   mean %6.2f µs"
        % (name, len(us), pct(us, 0.5), pct(us, 0.99), max(us), statistics.fmean(us))
    )
    return pct(us, 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=20000)
    ap.add_argument("--source", default="synthetic")
    ap.add_argument("--interval", default="10ms")
    a = ap.parse_args()
    clock = time.perf_counter_ns
    out = os.path.join(tempfile.mkdtemp(prefix="flinch-bench-"), "bench.flinch.csv")
    with flinch.Recorder(sources=[a.source], out=out, interval=a.interval) as rec:
        null = contextlib.nullcontext()
        empty, marks, wins = [], [], []
        for _ in range(1000):  # warm up
            with rec.window("warm"):
                pass
        for i in range(a.windows):
            t0 = clock()
            with null:
                pass
            t1 = clock()
            rec.mark("m")
            t2 = clock()
            with rec.window("w", i=i):
                pass
            t3 = clock()
            empty.append(t1 - t0)
            marks.append(t2 - t1)
            wins.append(t3 - t2)
        # How long result() waits: windows of 50 ms, result asked at once.
        waits = []
        for _ in range(20):
            with rec.window("timed") as w:
                time.sleep(0.05)
            t0 = clock()
            w.result(timeout=10)
            waits.append(clock() - t0)
    print("flinch %s, Python %s, source %s every %s, %d windows"
          % (flinch.__version__, sys.version.split()[0], a.source, a.interval, a.windows))
    floor = row("empty with-block", empty)
    row("rec.mark()", marks)
    w = row("rec.window() enter+exit", wins)
    print("%-28s %.2f µs above the empty with-block" % ("", w - floor))
    ms = [x / 1e6 for x in waits]
    print("w.result() right after a 50 ms window: p50 %.1f ms, max %.1f ms (n=%d)"
          % (pct(ms, 0.5), max(ms), len(ms)))
    print("target: enter+exit <= 5 µs: %s" % ("met" if w <= 5.0 else "MISSED"))


if __name__ == "__main__":
    main()
