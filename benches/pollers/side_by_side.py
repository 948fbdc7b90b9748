#!/usr/bin/env python3
"""Runs several samplers at the same time and measures the CPU each uses over the same
window, so that their costs can be compared as ratios from one run (docs/performance.md).

    python3 benches/pollers/side_by_side.py --window 20 --json out.json \
        --run flinch="target/release/flinch record --quiet --source synthetic --source cpu --out /tmp/t.csv --duration 25s" \
        --run poller="python3 benches/pollers/proc_poller.py --out /tmp/p.csv --duration 25"

Each --run NAME=COMMAND starts at once; after --warmup seconds (start-up: imports, NVML
initialisation, the first polls) the CPU time of every thread of every process is read
from /proc/<pid>/task/*/schedstat (ns, the scheduler's own accounting), and again
--window seconds later. The difference divided by the window is the process's CPU per
second. utime+stime from /proc/<pid>/stat (clock ticks) is kept as a cross-check. Then each
process is left to finish (its own --duration), or sent SIGINT after --grace seconds.
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time


def task_cpu_ns(pid):
    """Sum of the run time of every thread of pid (ns), and utime+stime (ticks)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        fields = st[st.rindex(")") + 2:].split()
        ticks = int(fields[11]) + int(fields[12])
    except FileNotFoundError:
        return None, None
    return total, ticks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, metavar="NAME=COMMAND")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--grace", type=float, default=30.0, help="seconds to wait for each to end")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--log", help="append the commands' stderr here")
    a = ap.parse_args()

    log = open(a.log, "a") if a.log else subprocess.DEVNULL
    procs = []
    for r in a.run:
        name, _, cmd = r.partition("=")
        p = subprocess.Popen(shlex.split(cmd), stdout=log, stderr=log)
        procs.append((name, cmd, p))
    time.sleep(a.warmup)
    t0 = time.monotonic()
    start = {name: task_cpu_ns(p.pid) for name, _, p in procs}
    time.sleep(a.window)
    t1 = time.monotonic()
    end = {name: task_cpu_ns(p.pid) for name, _, p in procs}
    tps = os.sysconf("SC_CLK_TCK")
    res = {"window_s": t1 - t0, "warmup_s": a.warmup, "processes": {}}
    for name, cmd, p in procs:
        (c0, k0), (c1, k1) = start[name], end[name]
        if c0 is None or c1 is None:
            res["processes"][name] = {"command": cmd, "error": "ended before the window closed"}
            continue
        res["processes"][name] = {
            "command": cmd,
            "cpu_ns": c1 - c0,
            "cpu_ms_per_s": (c1 - c0) / 1e6 / (t1 - t0),
            "ticks_cpu_ms_per_s": (k1 - k0) * 1000 / tps / (t1 - t0),
        }
    deadline = time.monotonic() + a.grace
    for name, _, p in procs:
        left = deadline - time.monotonic()
        try:
            p.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        res["processes"][name]["exit"] = p.returncode
    names = [n for n, _, _ in procs]
    for n in names:
        for m in names:
            x, y = res["processes"][n], res["processes"][m]
            if n != m and x.get("cpu_ns") and y.get("cpu_ns"):
                res.setdefault("ratios", {})[f"{m}/{n}"] = y["cpu_ns"] / x["cpu_ns"]
    text = json.dumps(res, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    for n in names:
        x = res["processes"][n]
        if "cpu_ms_per_s" in x:
            print(f"{n:12s} {x['cpu_ms_per_s']:8.3f} ms CPU per s (ticks: {x['ticks_cpu_ms_per_s']:.1f}), exit {x['exit']}")
        else:
            print(f"{n:12s} {x['error']}")
    for k, v in sorted(res.get("ratios", {}).items()):
        print(f"  {k}: {v:.2f}")


if __name__ == "__main__":
    main()
