#!/usr/bin/env bash
# Builds the release binaries scripts/gpu-check.sh needs into .device-carry/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p flinch-cli -p flinch-benches --bin flinch --bin recorder_overhead
mkdir -p .device-carry
cp target/release/flinch target/release/recorder_overhead .device-carry/
bin=$(cargo test --release -p flinch-nvml --test it --no-run --message-format=json 2>/dev/null \
      | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "it":
        print(m["executable"])')
cp "$bin" .device-carry/nvml-gpu-tests
strip .device-carry/flinch .device-carry/recorder_overhead .device-carry/nvml-gpu-tests 2>/dev/null || true
ls -la .device-carry
