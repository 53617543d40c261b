#!/usr/bin/env bash
# Runs the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer), each for SECONDS,
# from its committed seeds (fuzz/seeds/TARGET) and its growing corpus
# (fuzz/corpus/TARGET, not committed), and prints libFuzzer's final figures.
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (default: every target)
#
# A crash stops the run with libFuzzer's report and the input saved under
# fuzz/artifacts/TARGET/. `scripts/test-all.sh` runs this briefly; the long
# runs reported in docs/reliability.md are `scripts/fuzz.sh 600`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  printf -- '-- %s (%ss)\n' "$target" "$seconds"
  # cargo-fuzz needs nightly-only flags; the stable toolchain accepts them
  # under RUSTC_BOOTSTRAP for this build only. -rss_limit_mb bounds memory.
  # The filter hides libFuzzer's progress lines; libFuzzer's status decides.
  # No sanitizer: the fuzzed parsers are safe Rust, whose faults are the
  # panics and assertions the targets check; AddressSanitizer would double
  # the build of both planes for nothing it could find there.
  set +e
  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$target" "corpus/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E '^(stat::|Done)|panicked|ERROR|SUMMARY|artifact'
  status=${PIPESTATUS[0]}
  set -e
  [ "$status" -eq 0 ] || { echo "fuzz target $target failed" >&2; exit 1; }
done
