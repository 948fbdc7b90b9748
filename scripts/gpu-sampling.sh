#!/usr/bin/env bash
# Issue 15's measurements on the GPU machine: what a default recording costs, next to the
# recorder it replaces (the previous flinch) and to the naive Python poller, all three
# running at the same time; and that nothing was lost (the busy/idle workload recorded by
# both recorders at once, analysed the same way). Runs in one go in about 5 minutes.
#
#   scripts/build-gpu-sampling-bins.sh        # build machine: .device-carry/{flinch,nvml_costs,baseline/flinch}
#   scripts/gpu-sampling.sh [BIN_DIR] [OUT]   # GPU machine, repository root (OUT defaults to $OUT)
#
# Steps, in order (each logged to OUT/gpu-sampling.log; all files in OUT/gpu-sampling.tar.gz):
#   costs   nvml_costs: each NVML read's CPU time, GPM the old way and the new, the
#           driver-buffer drain against its age, a thread wake-up (GPU 0, idle)
#   side1   GPU 0 under a busy/idle matmul load; at once, for 40 s: the previous flinch and
#           this one (`flinch record --source nvml --gpus 0`, defaults) and the seed poller
#           (power, utilisation, SM clock, temperature every 10 ms, a flushed CSV row);
#           CPU per second of each from /proc/<pid>/task/*/schedstat
#   side2   the same on GPUs 0 and 1 (when there are two)
#   busy    examples/workloads/busy_idle.py wrapped by this flinch (nvml + cpu), recorded
#           at the same time by the previous flinch (nvml + cpu, --pid of the workload) and
#           by this flinch with --precise-sleep (nvml); the previous trace gets the marks,
#           both are analysed with this flinch, span by span
#
# STEPS (environment) picks steps, e.g. STEPS="costs side1" for a quick re-measure (~2 min);
# all four by default.
set -u
STEPS=${STEPS:-costs side1 side2 busy}
want() { [[ " $STEPS " == *" $1 "* ]]; }
BIN=${1:-.device-carry}
OUT=${2:-${OUT:-gpu-results}}
NEW="$BIN/flinch"
BASE="$BIN/baseline/flinch"
COSTS="$BIN/nvml_costs"
W="$OUT/gpu-sampling"
mkdir -p "$W"
LOG="$OUT/gpu-sampling.log"
say() { echo "== $(date +%T) $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1
REPORT="python3 scripts/gpu_sampling_report.py"
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
for b in "$NEW" "$BASE" "$COSTS"; do
    [ -x "$b" ] || { say "missing $b (see scripts/build-gpu-sampling-bins.sh)"; }
done

say "info: $NGPU GPU(s)"
{ nvidia-smi --query-gpu=index,name,driver_version,power.draw,clocks.sm,pstate --format=csv;
  nproc; uname -r; "$NEW" --version; "$BASE" --version; } >>"$LOG" 2>&1

if want costs; then
    say "costs"
    timeout 120 "$COSTS" --gpu 0 --json "$W/nvml_costs.json" >"$W/nvml_costs.txt" 2>>"$LOG"
    cat "$W/nvml_costs.txt" >>"$LOG"
fi

# side NAME GPUS: the three samplers at once on GPUS, under a load.
side() {
    local name=$1 gpus=$2 n=$3
    say "$name: GPUs $gpus, load, then 40 s of the previous flinch, this flinch and the seed poller"
    rm -f "$W/$name.ready"
    timeout 120 python3 benches/pollers/gpu_load.py --gpus "$gpus" --seconds 55 \
        --ready "$W/$name.ready" >>"$LOG" 2>&1 &
    local load=$!
    for _ in $(seq 120); do [ -f "$W/$name.ready" ] && break; sleep 0.5; done
    timeout 120 python3 benches/pollers/side_by_side.py --warmup 5 --window 40 --grace 20 \
        --json "$W/$name.json" --log "$LOG" \
        --run base="$BASE record --quiet --source nvml --gpus $gpus --force --marks-fifo $W/$name-base.fifo --duration 50s --out $W/$name-base.flinch.csv" \
        --run new="$NEW record --quiet --source nvml --gpus $gpus --force --marks-fifo $W/$name-new.fifo --duration 50s --out $W/$name-new.flinch.csv" \
        --run seed="python3 benches/pollers/seed_poller.py --gpus $gpus --duration 50 --out $W/$name-seed.csv" \
        >>"$LOG" 2>&1
    wait "$load"
    $REPORT --json "$W/$name-report.json" side "$W/$name.json" "$n" \
        "$W/$name-base.flinch.csv" "$W/$name-new.flinch.csv" >"$W/$name-report.txt" 2>&1
    cat "$W/$name-report.txt" >>"$LOG"
    rm -f "$W/$name-seed.csv"
}

want side1 && side side1 0 1
if want side2 && [ "$NGPU" -ge 2 ]; then
    side side2 0,1 2
fi

if want busy; then
    say "busy: busy/idle workload recorded by this flinch, the previous one and this one with --precise-sleep"
    rm -f "$W/wl.pid"
    timeout 300 "$NEW" record --quiet --source nvml --source cpu --gpus 0 --force \
        --marks-fifo "$W/busy-new.fifo" --meta workload=busy_idle --out "$W/busy-new.flinch.csv" \
        -- sh -c "echo \$\$ > $W/wl.pid; exec python3 examples/workloads/busy_idle.py" >>"$LOG" 2>&1 &
    NEWREC=$!
    for _ in $(seq 100); do [ -s "$W/wl.pid" ] && break; sleep 0.1; done
    WL=$(cat "$W/wl.pid" 2>/dev/null)
    timeout 300 "$BASE" record --quiet --source nvml --source cpu --gpus 0 --pid "$WL" --force \
        --marks-fifo "$W/busy-base.fifo" --out "$W/busy-base.flinch.csv" >>"$LOG" 2>&1 &
    BASEREC=$!
    timeout 300 "$NEW" record --quiet --source nvml --gpus 0 --precise-sleep --force \
        --marks-fifo "$W/busy-precise.fifo" --out "$W/busy-precise.flinch.csv" >>"$LOG" 2>&1 &
    PRECREC=$!
    wait "$NEWREC"
    say "busy: workload done (exit $?)"
    kill -INT "$BASEREC" "$PRECREC" 2>/dev/null
    wait "$BASEREC" "$PRECREC"
    $REPORT merge-marks "$W/busy-new.flinch.csv" "$W/busy-base.flinch.csv" "$W/busy-base-marks.flinch.csv" >>"$LOG" 2>&1
    for t in new base-marks; do
        "$NEW" analyze "$W/busy-$t.flinch.csv" --from phase_start --to phase_end \
            --idle-window calib_start..calib_end --json >"$W/busy-$t.analysis.json" 2>>"$LOG"
    done
    { $REPORT --json "$W/busy-compare.json" compare "$W/busy-base-marks.analysis.json" "$W/busy-new.analysis.json";
      $REPORT --json "$W/busy-traces.json" traces "$W/busy-base.flinch.csv" "$W/busy-new.flinch.csv" "$W/busy-precise.flinch.csv"; } \
        >"$W/busy-report.txt" 2>&1
    cat "$W/busy-report.txt" >>"$LOG"
    "$NEW" analyze "$W/busy-new.flinch.csv" --from phase_start --to phase_end \
        --idle-window calib_start..calib_end >"$W/busy-new.analysis.txt" 2>>"$LOG"
fi
rm -f "$W"/*.fifo "$W/wl.pid" "$W"/*.ready
say "done"
tar -czf "$OUT/gpu-sampling.tar.gz" -C "$OUT" gpu-sampling gpu-sampling.log && rm -rf "$W"
ls -la "$OUT" >>"$LOG"
