#!/usr/bin/env python3
"""The naive way of measuring, as the seed thread wrote it: a Python loop polling NVML every
10 ms (power, utilisation, SM clock, temperature of every GPU) into a CSV, a row flushed each
time. flinch's own cost is published next to this one's (docs/performance.md).

    python3 benches/pollers/seed_poller.py --out seed.csv --duration 30

The file is opened once and each row is flushed (the seed thread's "paranoid about Ctrl-C"
version), the loop keeps an absolute 10 ms schedule and stamps rows with
time.monotonic_ns(). On exit it prints its own CPU time after start-up (imports and
nvmlInit left out) as one JSON line on stderr.
"""

import argparse
import csv
import json
import os
import sys
import time

import pynvml


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="CSV to write")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds to poll")
    ap.add_argument("--interval", type=float, default=0.010, help="seconds between polls")
    ap.add_argument("--gpus", default=None, help="comma-separated NVML indices (default: all)")
    a = ap.parse_args()

    pynvml.nvmlInit()
    n = pynvml.nvmlDeviceGetCount()
    idx = [int(x) for x in a.gpus.split(",")] if a.gpus else list(range(n))
    handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in idx]
    f = open(a.out, "w", newline="")
    w = csv.writer(f)
    w.writerow(["t_ns", "gpu", "power_w", "util_gpu", "util_mem", "sm_clock_mhz", "temp_c"])
    f.flush()

    cpu0 = time.process_time()
    t0 = time.monotonic()
    k = 0
    rows = 0
    while True:
        deadline = t0 + k * a.interval
        now = time.monotonic()
        if now - t0 >= a.duration:
            break
        if deadline > now:
            time.sleep(deadline - now)
        k += 1
        for i, h in handles:
            p = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            u = pynvml.nvmlDeviceGetUtilizationRates(h)
            c = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
            t = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
            w.writerow([time.monotonic_ns(), i, p, u.gpu, u.memory, c, t])
            f.flush()
            rows += 1
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    f.close()
    pynvml.nvmlShutdown()
    print(json.dumps({"poller": "seed", "pid": os.getpid(), "cpu_s": cpu, "wall_s": wall,
                      "polls": k, "rows": rows, "gpus": len(handles)}), file=sys.stderr)


if __name__ == "__main__":
    main()
