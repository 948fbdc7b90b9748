"""Every GPU of the host at once, each in its own phase: busy, light or idle, with a mark per
GPU and phase (`gpu=` field), for checking per-GPU verdicts and energies.

Run under flinch (marks go to $FLINCH_MARKS):

    flinch record --out multi.flinch.csv -- python3 examples/workloads/multi_gpu.py

Marks:
  calib_start / calib_end    3 s of idle with every GPU's CUDA context open (an idle window)
  phase_start / phase_end    req=g<gpu>-<n> gpu=<gpu> kind=busy|light|idle

One thread per GPU (torch releases the GIL in CUDA calls). In round r, GPU g runs
KINDS[(g + r) % 3] for PHASE_S seconds, so at any moment the GPUs are in different states
and every GPU goes through every state.

busy  = back-to-back 8192^3 bf16 matmuls
light = two 4096^3 matmuls then a 1 ms sleep, repeated
idle  = sleep, CUDA context open
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from flinch_marks import Marks  # noqa: E402

import torch  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "6"))
PHASE_S = float(os.environ.get("PHASE_S", "2.0"))
KINDS = ["busy", "light", "idle"]

marks = Marks()
n = torch.cuda.device_count()
tensors = []
for g in range(n):
    d = torch.device(f"cuda:{g}")
    tensors.append(
        (
            torch.randn(8192, 8192, device=d, dtype=torch.bfloat16),
            torch.randn(4096, 4096, device=d, dtype=torch.bfloat16),
        )
    )


def run(g, kind, seconds):
    big, small = tensors[g]
    end = time.monotonic() + seconds
    with torch.cuda.device(g):
        if kind == "busy":
            while time.monotonic() < end:
                torch.matmul(big, big)
                torch.cuda.synchronize(g)
        elif kind == "light":
            while time.monotonic() < end:
                torch.matmul(small, small)
                torch.matmul(small, small)
                torch.cuda.synchronize(g)
                time.sleep(0.001)
        else:
            time.sleep(seconds)


def gpu_thread(g, barrier):
    for r in range(ROUNDS):
        barrier.wait()
        kind = KINDS[(g + r) % len(KINDS)]
        marks.mark("phase_start", req=f"g{g}-{r}", gpu=g, kind=kind)
        run(g, kind, PHASE_S)
        marks.mark("phase_end", req=f"g{g}-{r}", gpu=g, kind=kind)


# warm up every GPU, then an idle window with every context open
for g in range(n):
    run(g, "busy", 0.5)
time.sleep(1.0)
marks.mark("calib_start")
time.sleep(3.0)
marks.mark("calib_end")
barrier = threading.Barrier(n)
threads = [threading.Thread(target=gpu_thread, args=(g, barrier)) for g in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
time.sleep(1.0)
print(f"{n} GPU(s), {ROUNDS} rounds of {PHASE_S} s", flush=True)
