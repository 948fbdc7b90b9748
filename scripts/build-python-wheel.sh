#!/usr/bin/env bash
# Builds the flinch-energy wheel (release, abi3: CPython >= 3.9, Linux x86_64) into
# .device-carry/ for scripts/gpu-python-check.sh, with maturin from the virtual environment
# .ci/run uses (target/ci-venv, made here if missing). The GPU machine needs no Rust to
# install it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/ci-venv
if [[ ! -x $venv/bin/maturin ]]; then
    [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.9.4,<2"
fi
mkdir -p .device-carry
rm -f .device-carry/flinch_energy-*.whl
"$venv/bin/maturin" build --release --locked --strip -o .device-carry
ls -la .device-carry/flinch_energy-*.whl
