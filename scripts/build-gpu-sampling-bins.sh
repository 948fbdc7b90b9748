#!/usr/bin/env bash
# Builds what scripts/gpu-sampling.sh carries to the GPU machine, into .device-carry/ (git-
# ignored): this branch's flinch and nvml_costs, and the previous flinch — main at the
# commit this work started from — as baseline/flinch, so that both are measured in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_COMMIT=${BASE_COMMIT:-6c951031fb8c67510406f83a84d8033855c117a1}
mkdir -p .device-carry/baseline
if [ "$(cat .device-carry/baseline/COMMIT 2>/dev/null)" != "$BASE_COMMIT" ]; then
    src=target/baseline-src
    rm -rf "$src" && mkdir -p "$src"
    git archive "$BASE_COMMIT" | tar -x -C "$src"
    cargo build --release --manifest-path "$src/Cargo.toml" --target-dir target/baseline \
        -p flinch-cli --bin flinch
    cp target/baseline/release/flinch .device-carry/baseline/flinch
    echo "$BASE_COMMIT" > .device-carry/baseline/COMMIT
fi
cargo build --release -p flinch-cli -p flinch-benches --bin flinch --bin nvml_costs
cp target/release/flinch target/release/nvml_costs .device-carry/
strip .device-carry/flinch .device-carry/nvml_costs .device-carry/baseline/flinch 2>/dev/null || true
ls -la .device-carry .device-carry/baseline
