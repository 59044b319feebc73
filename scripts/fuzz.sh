#!/usr/bin/env bash
# Builds the libFuzzer targets of the readers (cpp/fuzz, clang with ASan + UBSan: pickle, zip,
# DCP .metadata, safetensors, and the torch.save layer over the preset's libtorch, which scripts/build.sh unpacked) and
# runs each for SECONDS (default 20; the test command uses the default, a longer campaign is
# e.g. `scripts/fuzz.sh 3600`). Seeds are the real Python-written files under cpp/tests/data and
# cpp/fuzz/seeds;
# what a run learns goes to $BUILD_DIR/fuzz/corpus. A crash, a sanitizer report or an input
# slower than 10 s fails the run and leaves the input in $BUILD_DIR/fuzz/artifacts.
set -euo pipefail
source "$(dirname "$0")/env.sh"
seconds="${1:-20}"
command -v clang++ >/dev/null || { echo "clang++ is missing (scripts/setup.sh --tests installs it)" >&2; exit 1; }

out="$BUILD_DIR/fuzz"
cmake -S "$ROOT/cpp/fuzz" -B "$out/build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
  -DTORCH_INCLUDE_DIR="$TORCH_INCLUDE_DIR" -DTORCH_LIB_DIR="$BUILD_DIR/preset-libs" >/dev/null
ninja -C "$out/build" >/dev/null

data="$ROOT/cpp/tests/data"
seeds="$ROOT/cpp/fuzz/seeds"  # large inputs of the once-quadratic cases (python-compat-tests/fixtures/make_fuzz_seeds.py)
run() {
  local target="$1"; shift
  mkdir -p "$out/corpus/$target" "$out/artifacts/$target"
  echo "== fuzz $target (${seconds}s)"
  local log="$out/$target.log" status=0
  "$out/build/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=1048576 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/$target/" "$out/corpus/$target" "$@" >"$log" 2>&1 \
    || status=$?
  grep -E '^(stat::number_of_executed_runs|stat::peak_rss_mb|INFO: seed corpus|Done )' "$log" || true
  if [ "$status" != 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz $target failed (exit $status); the input is in $out/artifacts/$target" >&2
    return "$status"
  fi
}
run fuzz_pickle "$data/pickle" "$data/state" "$seeds/pickle"
run fuzz_zip "$data/zip" "$data/torch" "$seeds/zip"
run fuzz_outline "$data/torch" "$data/zip"
run fuzz_dcp_metadata "$data/dcp" "$seeds/dcp"
run fuzz_safetensors "$seeds/safetensors"
# libtorch is not instrumented; LeakSanitizer would report its process-lifetime allocations.
ASAN_OPTIONS=detect_leaks=0 run fuzz_torch_load "$data/torch" "$data/state" "$data/zip" "$seeds/zip"
