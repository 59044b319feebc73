# Shared paths and pins of the build scripts (sourced, not run). Every path here is fixed: none
# depends on what set-up creates (no globs), so sourcing it before set-up ran gives the same values.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything the project downloads or extracts lives here (plus Maven's ~/.m2 and pip's own cache):
# deleting this folder gives a fresh machine.
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/fabric-ckpt"
# The test command's Python environment (torch, lightning, pytest); the main job does not need it.
VENV="$CACHE_DIR/venv"
# libtorch's C++ headers: torch/include of the PyPI wheel torch==2.10.0 (the JavaCPP preset ships none).
TORCH_VERSION="2.10.0"
TORCH_WHEEL="torch-2.10.0-3-cp311-cp311-manylinux_2_28_x86_64.whl"
TORCH_WHEEL_SHA256="ac5bdcbb074384c66fa160c15b1ead77839e3fe7ed117d667249afce0acabfac"
TORCH_INCLUDE_DIR="$CACHE_DIR/torch-$TORCH_VERSION-headers/include"
PYTORCH_PRESET_VERSION="2.10.0-1.5.13"
BUILD_DIR="${FABRICCKPT_BUILD_DIR:-$ROOT/build}"
export ROOT CACHE_DIR VENV TORCH_VERSION TORCH_WHEEL TORCH_WHEEL_SHA256 TORCH_INCLUDE_DIR PYTORCH_PRESET_VERSION BUILD_DIR
