#!/usr/bin/env bash
# Real-GPU checks for flinch, run on a GPU machine from prebuilt binaries (the GPU machine
# has no Rust toolchain and no network). Leaves everything in one folder.
#
#   scripts/build-gpu-bins.sh            # on the build machine: release binaries -> .device-carry/
#   scripts/gpu-check.sh [BIN_DIR] [OUT_DIR] [STEP ...]
#
# Steps (default, in this order): info sources tests calibrate bench busy llm analyze
# (also: overhead prometheus multi sampling python, which run the scripts named below)
#   info      nvidia-smi and torch facts
#   sources   flinch sources, and --probe (read costs and update intervals)
#   tests     the NVML tests that need a GPU (ignored on CI)
#   overhead  20 s of recording an idle GPU at 100 Hz: the recorder's CPU time per tick
#   calibrate 10 s idle profile of the GPUs (flinch calibrate)
#   bench     recorder_overhead (docs/performance.md): the recorder's CPU per tick next to
#             the bare cost of the same NVML reads, schedule deviation, memory, mark latency
#   busy      busy/light/idle matmul phases of 50 ms to 1 s with marks (busy-idle.flinch.csv)
#   llm       a transformers model with random weights serving requests (llm.flinch.csv)
#   analyze   flinch analyze on both traces, when this flinch has the command
#   prometheus scripts/prometheus-gpu-check.sh: scraped energy vs the NVML counter (~1 min)
#   multi     scripts/gpu-multi.sh: every GPU at once, with and without the exporter (~2 min)
#   sampling  scripts/gpu-sampling.sh with SAMPLING_STEPS (default "costs side1 side2")
#   python    scripts/gpu-python-check.sh: the Python package on the GPU (needs the wheel)
# Their files land in OUT_DIR beside gpu-check.log.
set -u
BIN=${1:-.device-carry}
OUT=${2:-gpu-results}
shift $(( $# >= 2 ? 2 : $# ))
STEPS=${*:-info sources tests calibrate bench busy llm analyze}
FLINCH="$BIN/flinch"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
want() { [[ " $STEPS " == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1

if want info; then
    say "info"
    { nvidia-smi; nvidia-smi --query-gpu=index,name,uuid,driver_version,power.limit,clocks.sm,pstate --format=csv;
      python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.device_count(), "transformers", transformers.__version__)';
      uname -a; nproc; } >>"$LOG" 2>&1
fi

if want sources; then
    say "sources"
    "$FLINCH" sources >>"$LOG" 2>&1
    say "sources --probe"
    "$FLINCH" sources --probe --json >"$OUT/probe.json" 2>>"$LOG"
    "$FLINCH" sources --probe >>"$LOG" 2>&1
fi

if want tests; then
    say "NVML tests that need a GPU"
    timeout 300 "$BIN/nvml-gpu-tests" --ignored --nocapture --test-threads=1 >>"$LOG" 2>&1
    say "tests exit status $?"
fi

if want overhead; then
    say "overhead: 20 s of an idle GPU at 100 Hz, default NVML channels"
    python3 - "$FLINCH" "$OUT" >>"$LOG" 2>&1 <<'PY'
import resource, subprocess, sys, json
flinch, out = sys.argv[1], sys.argv[2]
trace = f"{out}/overhead.flinch.csv"
subprocess.run([flinch, "record", "--quiet", "--no-fifo", "--source", "nvml", "--interval", "10ms",
                "--duration", "20s", "--force", "--out", trace], check=True)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu_s = ru.ru_utime + ru.ru_stime
foot = None
for line in open(trace):
    if line.startswith("# end "):
        foot = json.loads(line[6:])
fast = min(foot["cadences"], key=lambda c: c["interval_ns"])
print(f"process CPU {cpu_s:.3f} s over {fast['ticks']} fast ticks: {cpu_s / fast['ticks'] * 1e6:.1f} us per 10 ms tick (all threads)")
for c in foot["cadences"]:
    print(f"  thread every {c['interval_ns']/1e6:g} ms: {c['ticks']} ticks, cpu {c['cpu_ns']/max(c['ticks'],1)/1e3:.1f} us/tick, "
          f"off schedule p50 {c['deviation_p50_ns']/1e3:.0f} us p99 {c['deviation_p99_ns']/1e3:.0f} us max {c['deviation_max_ns']/1e3:.0f} us, missed {c['missed_ticks']}: {c['sources']}")
print("samples", foot["samples"], "dropped", foot["dropped_readings"])
PY
    rm -f "$OUT/overhead.flinch.csv"
fi

if want calibrate; then
    say "calibrate: 10 s of the idle GPUs (no CUDA context)"
    "$FLINCH" calibrate --source nvml --seconds 10 --force --out "$OUT/idle-no-context.json" >>"$LOG" 2>&1
    say "calibrate exit status $?"
fi

if want bench; then
    say "bench: recorder_overhead (NVML at 10 ms, synthetic at 10 ms and 1 ms, 20 s each)"
    timeout 400 "$BIN/recorder_overhead" --sources nvml,synthetic --require-nvml --duration 20s \
        --json "$OUT/recorder_overhead.json" 2>&1 | tee "$OUT/recorder_overhead.txt" >>"$LOG"
    say "bench exit status ${PIPESTATUS[0]}"
fi

if want busy; then
    say "busy/idle workload"
    timeout 240 "$FLINCH" record --source nvml --source cpu --nvml-average-power --nvml-energy-interval 100ms --interval 10ms --force \
        --meta workload=busy_idle --out "$OUT/busy-idle.flinch.csv" \
        -- python3 examples/workloads/busy_idle.py >>"$LOG" 2>&1
    say "busy exit status $?"
fi

if want llm; then
    say "LLM serving workload"
    timeout 400 "$FLINCH" record --source nvml --source cpu --interval 10ms --force \
        --meta workload=llm_serve_sim --out "$OUT/llm.flinch.csv" \
        -- python3 examples/llm/serve_sim.py >>"$LOG" 2>&1
    say "llm exit status $?"
fi

if want analyze && "$FLINCH" analyze --help >/dev/null 2>&1; then
    say "analyze"
    if [ -f "$OUT/busy-idle.flinch.csv" ]; then
        "$FLINCH" analyze "$OUT/busy-idle.flinch.csv" --from phase_start --to phase_end \
            --idle-window calib_start..calib_end --json >"$OUT/busy-idle.analysis.json" 2>>"$LOG"
        "$FLINCH" analyze "$OUT/busy-idle.flinch.csv" --from phase_start --to phase_end \
            --idle-window calib_start..calib_end -v >>"$LOG" 2>&1
        python3 examples/tools/step_response.py "$OUT/busy-idle.flinch.csv" >>"$LOG" 2>&1
    fi
    if [ -f "$OUT/llm.flinch.csv" ]; then
        "$FLINCH" analyze "$OUT/llm.flinch.csv" --from infer_start --to first_token \
            --idle-window calib_start..calib_end -v >>"$LOG" 2>&1
        "$FLINCH" analyze "$OUT/llm.flinch.csv" --from enqueue --to dequeue \
            --idle-window calib_start..calib_end -v >>"$LOG" 2>&1
    fi
fi
if want prometheus; then
    say "prometheus"
    timeout 240 bash scripts/prometheus-gpu-check.sh "$BIN" "$OUT" >/dev/null 2>&1
    say "prometheus exit status $?"
fi

if want multi; then
    say "multi"
    timeout 300 bash scripts/gpu-multi.sh "$BIN" "$OUT" >/dev/null 2>&1
    say "multi exit status $?"
fi

if want sampling; then
    say "sampling: ${SAMPLING_STEPS:-costs side1 side2}"
    STEPS="${SAMPLING_STEPS:-costs side1 side2}" timeout 420 bash scripts/gpu-sampling.sh \
        "$BIN" "$OUT" >/dev/null 2>&1
    say "sampling exit status $?"
fi

if want python; then
    say "python"
    timeout 300 bash scripts/gpu-python-check.sh "$BIN" "$OUT" >>"$LOG" 2>&1
    say "python exit status $?"
fi
say "done"
