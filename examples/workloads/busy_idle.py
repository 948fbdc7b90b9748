"""A GPU workload of busy, light and idle phases from 50 ms to 1 s, with a mark at every
phase boundary, for checking what each power signal can see.

Run under flinch (marks go to $FLINCH_MARKS):

    flinch record --out busy-idle.flinch.csv -- python3 examples/workloads/busy_idle.py

Marks:
  calib_start / calib_end            3 s of idle with the CUDA context open (an idle window)
  phase_start / phase_end            req=<n> kind=busy|light|idle ms=<planned length>
  square_start / square_end          a 50 ms on / 50 ms off square wave (kind=square)

busy  = back-to-back 8192^3 bf16 matmuls (~700 W on an H100)
light = two 4096^3 matmuls then a 1 ms sleep, repeated (about a quarter of the time busy)
idle  = sleep, CUDA context open
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from flinch_marks import Marks  # noqa: E402

import torch  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "3"))
LENGTHS_S = [1.0, 0.724, 0.5, 0.2, 0.1, 0.05]

marks = Marks()
dev = torch.device("cuda")
big_a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
big_b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
small_a = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
small_b = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)


def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        torch.matmul(big_a, big_b)
        torch.cuda.synchronize()


def light(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        torch.matmul(small_a, small_b)
        torch.matmul(small_a, small_b)
        torch.cuda.synchronize()
        time.sleep(0.001)


def idle(seconds):
    time.sleep(seconds)


KINDS = {"busy": busy, "light": light, "idle": idle}

# warm up cuBLAS and the clocks, then settle
busy(2.0)
idle(1.5)
marks.mark("calib_start")
idle(3.0)
marks.mark("calib_end")

req = 0
for r in range(ROUNDS):
    for length in LENGTHS_S:
        for kind in ("busy", "idle", "light", "idle"):
            req += 1
            ms = int(round(length * 1000))
            marks.mark("phase_start", req=req, kind=kind, ms=ms, round=r)
            KINDS[kind](length)
            torch.cuda.synchronize()
            marks.mark("phase_end", req=req, kind=kind, ms=ms, round=r)

# a periodic load that aliases the instant-power field
marks.mark("square_start", kind="square")
end = time.monotonic() + 3.0
while time.monotonic() < end:
    busy(0.05)
    idle(0.05)
marks.mark("square_end", kind="square")
idle(1.0)
print("marks:", marks.stats(), file=sys.stderr)
