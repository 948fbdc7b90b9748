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
tar -czf "$OUT/python-check.tar.gz" -C "$OUT" python-check.txt python-check.json python-check.log \
    idle.json py.flinch.csv 2>/dev/null
echo "exit status $status; results in $OUT"
exit "$status"
