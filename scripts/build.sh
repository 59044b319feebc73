#!/usr/bin/env bash
# Builds everything once: the C++ core and its tests (CMake + Ninja), then the Java
# library with its JavaCPP-generated JNI (Maven), and records the runtime classpath
# for bin/fabric-ckpt. Incremental: re-running rebuilds only what changed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
bash "$ROOT/scripts/setup.sh"

jobs="${FABRICCKPT_JOBS:-$(nproc)}"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTORCH_INCLUDE_DIR="$TORCH_INCLUDE_DIR" -DTORCH_LIB_DIR="$PRESET_LIB_DIR" >/dev/null
ninja -C "$BUILD_DIR" -j "$jobs"

mvn_args=(-q -B -Dstyle.color=never -Dfabricckpt.build.dir="$BUILD_DIR" -Dfabricckpt.python="$VENV/bin/python")
(cd "$ROOT" && mvn "${mvn_args[@]}" -DskipTests package dependency:build-classpath \
   -Dmdep.outputFile="$BUILD_DIR/classpath.txt" -Dmdep.includeScope=runtime)
