#!/usr/bin/env bash
# The Python package on the GPU machine (Python 3.12 with torch; no Rust, no network):
#
#   scripts/build-python-wheel.sh && scripts/build-gpu-bins.sh   # here: wheel + flinch binary
#   scripts/gpu-python-check.sh [BIN_DIR] [OUT_DIR]              # there
#   scripts/gpu-python-check.sh --dry-run [BIN_DIR] [OUT_DIR]    # here: no GPU, checks the
#                                                                #   script (synthetic source)
#
# Runs scripts/gpu-python-check.py with the wheel and the flinch binary from BIN_DIR
# (default .device-carry), writes its files into OUT_DIR (default $OUT, else gpu-results)
# and packs them into OUT_DIR/python-check.tar.gz. About a minute.
set -u
DRY=()
if [[ ${1:-} == --dry-run ]]; then
    DRY=(--dry-run)
    shift
fi
BIN=${1:-.device-carry}
OUT=${2:-${OUT:-gpu-results}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
timeout 480 python3 "$(dirname "$0")/gpu-python-check.py" --wheel "$BIN/flinch_energy-*.whl" \
    --flinch "$BIN/flinch" --out "$OUT" "${DRY[@]}" 2>&1 | tee "$OUT/python-check.log"
status=${PIPESTATUS[0]}
# The window-cost bench (python/bench/window_overhead.py) on this machine, with the
# synthetic source (as on the development VM) and with NVML: the caller's cost next to an
# empty with-block and rec.mark() measured in the same run.
if [[ ${#DRY[@]} -eq 0 ]]; then
    whl=$(ls "$BIN"/flinch_energy-*.whl 2>/dev/null | head -1)
    site=$(mktemp -d)
    if [[ -n $whl ]] && python3 -m zipfile -e "$whl" "$site"; then
        for src in synthetic nvml; do
            PYTHONPATH="$site" timeout 120 python3 python/bench/window_overhead.py \
                --source "$src" --windows 20000 2>&1
        done | tee "$OUT/window-overhead.txt"
    fi
fi
tar -czf "$OUT/python-check.tar.gz" -C "$OUT" python-check.txt python-check.json python-check.log \
    idle.json py.flinch.csv window-overhead.txt 2>/dev/null
echo "exit status $status; results in $OUT"
exit "$status"
