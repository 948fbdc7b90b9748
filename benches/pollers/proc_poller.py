#!/usr/bin/env python3
"""A naive CPU poller for the machine without a GPU: /proc/stat and /proc/self/stat read
every 10 ms, a CSV row (host busy and total ticks, own utime and stime) flushed each time.
It is what `flinch record --source synthetic --source cpu` is compared with in
docs/performance.md.

    python3 benches/pollers/proc_poller.py --out proc.csv --duration 20

Each tick opens and reads both files, as a script would; the CSV file is opened once and
flushed after every row; the schedule is absolute. On exit it prints its own CPU time after
start-up as one JSON line on stderr.
"""

import argparse
import csv
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="CSV to write")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds to poll")
    ap.add_argument("--interval", type=float, default=0.010, help="seconds between polls")
    a = ap.parse_args()

    f = open(a.out, "w", newline="")
    w = csv.writer(f)
    w.writerow(["t_ns", "host_busy_ticks", "host_total_ticks", "self_utime", "self_stime"])
    f.flush()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    k = 0
    while True:
        deadline = t0 + k * a.interval
        now = time.monotonic()
        if now - t0 >= a.duration:
            break
        if deadline > now:
            time.sleep(deadline - now)
        k += 1
        with open("/proc/stat") as s:
            cpu = s.readline().split()[1:]
        v = [int(x) for x in cpu]
        busy = v[0] + v[1] + v[2] + v[5] + v[6]
        total = sum(v[:8])
        with open("/proc/self/stat") as s:
            st = s.read()
        fields = st[st.rindex(")") + 2:].split()
        w.writerow([time.monotonic_ns(), busy, total, fields[11], fields[12]])
        f.flush()
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - t0
    f.close()
    print(json.dumps({"poller": "proc", "pid": os.getpid(), "cpu_s": cpu, "wall_s": wall,
                      "polls": k}), file=sys.stderr)


if __name__ == "__main__":
    main()
