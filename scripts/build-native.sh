#!/usr/bin/env bash
# Builds the C++ core (CMake + Ninja); Maven runs it (java/pom.xml, generate-resources), after it
# unpacked the preset's libraries to link against. Runs the set-up first (build tools, headers).
#   scripts/build-native.sh BUILD_DIR PRESET_LIB_DIR TESTS(ON|OFF) TORCH_VERSION
set -euo pipefail
source "$(dirname "$0")/env.sh"
[ $# = 4 ] || { echo "usage: scripts/build-native.sh BUILD_DIR PRESET_LIB_DIR ON|OFF TORCH_VERSION" >&2; exit 2; }
build_dir="$(realpath -m "$1")" preset_lib_dir="$(realpath -m "$2")" tests="$3" torch_version="$4"
if [ "$torch_version" != "$TORCH_VERSION" ]; then
  echo "the pom builds against torch $torch_version but scripts/env.sh fetches the headers of $TORCH_VERSION" >&2
  exit 1
fi
if [ "$tests" = ON ]; then bash "$ROOT/scripts/setup.sh" --tests; else bash "$ROOT/scripts/setup.sh"; fi

cmake -S "$ROOT" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTORCH_INCLUDE_DIR="$TORCH_INCLUDE_DIR" -DTORCH_LIB_DIR="$preset_lib_dir" \
  -DFABRICCKPT_TORCH_VERSION="$torch_version" -DFABRICCKPT_TESTS="$tests" >/dev/null
ninja -C "$build_dir" -j "${FABRICCKPT_JOBS:-$(nproc)}"
