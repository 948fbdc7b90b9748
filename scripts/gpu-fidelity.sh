#!/usr/bin/env bash
# Records the two GPU traces behind the fidelity figures of docs/analysis.md (issue 16), on
# a GPU machine, with a prebuilt release `flinch` (the GPU machine has no Rust and no
# network). Run from the repository root:
#
#   scripts/build-gpu-bins.sh                        # here: release binaries -> .device-carry/
#   scripts/gpu-fidelity.sh [BIN_DIR] [OUT_DIR]      # there: BIN_DIR=.device-carry, OUT_DIR=$OUT
#
# Writes OUT_DIR/gpu-fidelity.tar.gz (the traces and a log) and OUT_DIR/gpu-fidelity.log.
# Takes 3-5 minutes; every step has a timeout so the whole stays under 8 minutes:
#   busy  examples/workloads/busy_idle.py with ROUNDS=5 (80 phases of 50 ms to 1 s),
#         default sources, energy counter every 100 ms   -> busy-idle.flinch.csv
#   llm   examples/llm-gpu/serve_gpu.py (a 27 B-parameter random-weight model; the GPU is
#         the bottleneck), default sources, counter every 100 ms  -> llm-gpu.flinch.csv
# Then `flinch analyze` of both (the carried binary's own analysis, for a first look).
set -u
BIN=${1:-.device-carry}
OUT=${2:-${OUT:-gpu-results}}
FLINCH="$BIN/flinch"
W="$OUT/gpu-fidelity"
mkdir -p "$W"
LOG="$W/gpu-fidelity.log"
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1
SECONDS=0

say "info"
{ nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,clocks.sm,pstate,memory.total --format=csv
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.device_count(), "transformers", transformers.__version__)'
  "$FLINCH" --version; nproc; } >>"$LOG" 2>&1

say "busy/idle workload, 5 rounds"
ROUNDS=5 timeout 150 "$FLINCH" record --quiet --nvml-energy-interval 100ms --interval 10ms --force \
    --meta workload=busy_idle --meta rounds=5 --out "$W/busy-idle.flinch.csv" \
    -- python3 examples/workloads/busy_idle.py >>"$LOG" 2>&1
say "busy exit status $? (${SECONDS} s)"

say "GPU-bound LLM serving"
DEADLINE_S=90 timeout 270 "$FLINCH" record --quiet --nvml-energy-interval 100ms --interval 10ms --force \
    --meta workload=llm_gpu --out "$W/llm-gpu.flinch.csv" \
    -- python3 examples/llm-gpu/serve_gpu.py >>"$LOG" 2>&1
say "llm exit status $? (${SECONDS} s)"

say "analyze (the carried flinch)"
if [ -f "$W/busy-idle.flinch.csv" ]; then
    timeout 30 "$FLINCH" analyze "$W/busy-idle.flinch.csv" --from phase_start --to phase_end \
        --idle-window calib_start..calib_end >>"$LOG" 2>&1
fi
if [ -f "$W/llm-gpu.flinch.csv" ]; then
    timeout 30 "$FLINCH" analyze "$W/llm-gpu.flinch.csv" >>"$LOG" 2>&1
    for pair in "infer_start first_token" "first_token done" "enqueue dequeue" "server_recv enqueue" "wait_start wait_end"; do
        set -- $pair
        timeout 30 "$FLINCH" analyze "$W/llm-gpu.flinch.csv" --from "$1" --to "$2" \
            --idle-window calib_start..calib_end >>"$LOG" 2>&1
    done
fi
ls -la "$W" >>"$LOG" 2>&1
say "done (${SECONDS} s)"
cp "$LOG" "$OUT/gpu-fidelity.log"
tar czf "$OUT/gpu-fidelity.tar.gz" -C "$W" .
ls -la "$OUT"
