#!/usr/bin/env bash
# Installs everything the build and the tests need, into the user's cache, once:
#   - Debian packages (compilers, CMake, Ninja, GoogleTest, Gloo headers, JDK 17, Maven) when missing
#   - a Python virtual environment with torch==2.10.0 (its wheel also provides the
#     libtorch C++ headers, which the JavaCPP preset does not ship), lightning, pytest
#   - the Maven artifacts (the JavaCPP PyTorch preset and its natives)
# Re-running it is cheap: each step checks whether it is already done.
set -euo pipefail
source "$(dirname "$0")/env.sh"

log() { printf '[setup] %s\n' "$*"; }

# --- Debian packages --------------------------------------------------------------------
need_pkgs=()
command -v g++ >/dev/null || need_pkgs+=(g++)
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v ninja >/dev/null || need_pkgs+=(ninja-build)
[ -f /usr/include/gtest/gtest.h ] || need_pkgs+=(libgtest-dev)
# Gloo's headers: libtorch's ProcessGroupGloo.hpp includes them and the torch wheel does not ship them.
[ -f /usr/include/gloo/config.h ] || need_pkgs+=(libgloo-dev)
command -v javac >/dev/null || need_pkgs+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need_pkgs+=(maven)
command -v unzip >/dev/null || need_pkgs+=(unzip)
command -v clang++ >/dev/null || need_pkgs+=(clang)  # libFuzzer targets (scripts/fuzz.sh)
command -v python3 >/dev/null || need_pkgs+=(python3 python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_pkgs[@]}"
fi

# --- Python environment -----------------------------------------------------------------
req="$ROOT/python-compat-tests/requirements.txt"
stamp="$VENV/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating Python environment in $VENV (torch, lightning, pytest)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$req"
  echo "$want" > "$stamp"
fi
[ -f "$TORCH_INCLUDE_DIR/ATen/ATen.h" ] || { echo "torch headers missing under $TORCH_INCLUDE_DIR" >&2; exit 1; }

# --- Maven artifacts and the preset's native libraries to link against ------------------
# The C++ tests and libfabricckpt link the preset's own libtorch (and the OpenBLAS it needs),
# the very files the JVM loads.
if [ ! -f "$PRESET_LIB_DIR/libopenblas.so.0" ]; then
  log "resolving Maven dependencies"
  (cd "$ROOT" && mvn -q -B -Dstyle.color=never dependency:resolve dependency:resolve-plugins >/dev/null 2>&1) \
    || (cd "$ROOT" && mvn -B -Dstyle.color=never dependency:resolve dependency:resolve-plugins)
  rm -rf "$PRESET_LIB_DIR.tmp" && mkdir -p "$PRESET_LIB_DIR.tmp"
  for artifact in "org.bytedeco:pytorch:$PYTORCH_PRESET_VERSION" "org.bytedeco:openblas:$OPENBLAS_PRESET_VERSION"; do
    (cd "$ROOT" && mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="$artifact:jar:linux-x86_64" \
        -DoutputDirectory="$CACHE_DIR/jars" >/dev/null)
  done
  log "extracting the preset's libtorch and OpenBLAS"
  (cd "$PRESET_LIB_DIR.tmp" \
   && unzip -q -j "$CACHE_DIR/jars/pytorch-$PYTORCH_PRESET_VERSION-linux-x86_64.jar" \
        'org/bytedeco/pytorch/linux-x86_64/libtorch_cpu.so' 'org/bytedeco/pytorch/linux-x86_64/libc10.so' \
        'org/bytedeco/pytorch/linux-x86_64/libgomp.so.1' \
   && unzip -q -j "$CACHE_DIR/jars/openblas-$OPENBLAS_PRESET_VERSION-linux-x86_64.jar" \
        'org/bytedeco/openblas/linux-x86_64/libopenblas.so.0' 'org/bytedeco/openblas/linux-x86_64/libgfortran.so.5' \
        'org/bytedeco/openblas/linux-x86_64/libquadmath.so.0')
  rm -rf "$PRESET_LIB_DIR" && mv "$PRESET_LIB_DIR.tmp" "$PRESET_LIB_DIR"
fi
log "ready"
