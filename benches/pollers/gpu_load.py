#!/usr/bin/env python3
"""A steady, changing GPU load for the side-by-side cost measurements: on each GPU given,
bf16 matmuls for --busy seconds, then idle for --idle seconds, repeated until --seconds
have passed. Writes --ready (an empty file) once every GPU has run its first matmul, so a
harness can start measuring after CUDA's start-up.

    python3 benches/pollers/gpu_load.py --gpus 0,1 --seconds 60 --ready /tmp/load.ready
"""

import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", default="0", help="comma-separated CUDA device indices")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--busy", type=float, default=0.3)
    ap.add_argument("--idle", type=float, default=0.2)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--ready", help="file to create once the load runs")
    a = ap.parse_args()
    devs = [torch.device(f"cuda:{int(g)}") for g in a.gpus.split(",")]
    mats = [(torch.randn(a.size, a.size, device=d, dtype=torch.bfloat16),
             torch.randn(a.size, a.size, device=d, dtype=torch.bfloat16)) for d in devs]
    for x, y in mats:
        torch.matmul(x, y)
    for d in devs:
        torch.cuda.synchronize(d)
    if a.ready:
        open(a.ready, "w").close()
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        busy_end = time.monotonic() + a.busy
        while time.monotonic() < busy_end:
            for x, y in mats:
                torch.matmul(x, y)
            for d in devs:
                torch.cuda.synchronize(d)
        time.sleep(a.idle)


if __name__ == "__main__":
    main()
