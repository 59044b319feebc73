#!/usr/bin/env bash
# Installs what the build needs, once; re-running it is cheap (each step checks whether it is done).
#   scripts/setup.sh          the main job and `mvn install`: Debian build tools (compilers, CMake,
#                             Ninja, Gloo headers, JDK 17, Maven) when missing, and libtorch's C++
#                             headers: torch/include of the torch==2.10.0 wheel, downloaded without
#                             its dependencies, checked against a pinned sha256, extracted, the wheel
#                             deleted (about 40 MB stay under the cache).
#   scripts/setup.sh --tests  also GoogleTest and the Python environment of the tests
#                             (python-compat-tests/requirements.txt: torch, lightning, pytest).
# The preset's libraries to link against come from Maven (the build unpacks them, see java/pom.xml).
set -euo pipefail
source "$(dirname "$0")/env.sh"

tests=0
case "${1:-}" in
  --tests) tests=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--tests]" >&2; exit 2 ;;
esac
log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages --------------------------------------------------------------------
need_pkgs=()
command -v g++ >/dev/null || need_pkgs+=(g++)
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v ninja >/dev/null || need_pkgs+=(ninja-build)
# Gloo's headers: libtorch's ProcessGroupGloo.hpp includes them and the torch wheel does not ship them.
[ -f /usr/include/gloo/config.h ] || need_pkgs+=(libgloo-dev)
command -v javac >/dev/null || need_pkgs+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need_pkgs+=(maven)
command -v unzip >/dev/null || need_pkgs+=(unzip)
command -v python3 >/dev/null || need_pkgs+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_pkgs+=(python3-pip)
if [ "$tests" = 1 ]; then
  [ -f /usr/include/gtest/gtest.h ] || need_pkgs+=(libgtest-dev)
  python3 -c 'import ensurepip, venv' 2>/dev/null || need_pkgs+=(python3-venv)
  command -v clang++ >/dev/null || need_pkgs+=(clang)  # libFuzzer targets (scripts/fuzz.sh)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_pkgs[@]}" >&2
fi

# --- libtorch's C++ headers ---------------------------------------------------------------
headers="$(dirname "$TORCH_INCLUDE_DIR")"
if [ "$(cat "$headers/.wheel.sha256" 2>/dev/null)" != "$TORCH_WHEEL_SHA256" ] \
   || [ ! -f "$TORCH_INCLUDE_DIR/torch/headeronly/version.h" ]; then
  log "downloading $TORCH_WHEEL (no dependencies) for its C++ headers"
  dl="$CACHE_DIR/downloads"
  rm -rf "$dl" "$headers.tmp" && mkdir -p "$dl" "$headers.tmp"
  printf 'torch==%s --hash=sha256:%s\n' "$TORCH_VERSION" "$TORCH_WHEEL_SHA256" > "$dl/requirements.txt"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    --python-version 3.11 --implementation cp --require-hashes -r "$dl/requirements.txt" -d "$dl" >&2
  echo "$TORCH_WHEEL_SHA256  $dl/$TORCH_WHEEL" | sha256sum -c --quiet - >&2
  log "extracting torch/include"
  unzip -q "$dl/$TORCH_WHEEL" 'torch/include/*' -d "$headers.tmp"
  mv "$headers.tmp/torch/include" "$headers.tmp/include" && rmdir "$headers.tmp/torch"
  echo "$TORCH_WHEEL_SHA256" > "$headers.tmp/.wheel.sha256"
  rm -rf "$headers" && mv "$headers.tmp" "$headers"
  rm -rf "$dl"
fi

# --- the tests' Python environment ----------------------------------------------------------
if [ "$tests" = 1 ]; then
  req="$ROOT/python-compat-tests/requirements.txt"
  stamp="$VENV/.requirements.sha256"
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "creating Python environment in $VENV (torch, lightning, pytest)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q -r "$req" >&2
    echo "$want" > "$stamp"
  fi
fi
log "ready"
