#!/usr/bin/env bash
# Runs one cargo-fuzz target on stable Rust for a while (docs/reliability.md):
#
#     fuzz/run.sh mark_parser|line_splitter|trace_reader [SECONDS (default 600)] [libFuzzer flags...]
#
# Needs `cargo install cargo-fuzz`. `--sanitizer none` is what lets it build on stable (the
# default AddressSanitizer needs nightly's -Z flags; flinch-core has no unsafe code); for it
# anyway: FUZZ_SANITIZER=address RUSTC_BOOTSTRAP=1 fuzz/run.sh ... (a full rebuild). The
# corpus grows in fuzz/corpus/TARGET (not committed) from the seeds in fuzz/seeds/TARGET; a
# failing input is saved to fuzz/artifacts/TARGET/ and the run stops.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target=${1:?usage: fuzz/run.sh mark_parser|line_splitter|trace_reader [SECONDS] [libFuzzer flags...]}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
case $target in
    # Room for lines over the 4096-byte mark limit.
    mark_parser) flags=(-max_len=8192 -dict="$root/fuzz/dict/mark_parser.dict") ;;
    line_splitter) flags=(-max_len=16384) ;;
    # A real header alone is 2-6 KB.
    trace_reader) flags=(-max_len=32768 -dict="$root/fuzz/dict/trace_reader.dict") ;;
    *)
        echo "unknown target $target: expected mark_parser, line_splitter or trace_reader" >&2
        exit 2
        ;;
esac
mkdir -p "fuzz/corpus/$target"
exec cargo fuzz run --sanitizer "${FUZZ_SANITIZER:-none}" -j1 "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 "${flags[@]}" "$@"
