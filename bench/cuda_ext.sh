#!/usr/bin/env bash
# The native op (latentseek_fast._C) with its CUDA kernel, built ahead on a machine without a GPU.
#
#   bash bench/cuda_ext.sh build PY   build with PY (a python whose torch has CUDA) for sm_80 and
#                                     sm_90 into build/prebuilt/<tag>/, then load it and check the
#                                     dispatcher lists a CUDA kernel for latent_adam_
#   bash bench/cuda_ext.sh find PY    print the prebuilt .so that matches PY (torch version,
#                                     python version and the current csrc/ sources), or nothing
#
# <tag> is torch-<torch.__version__>-cp<XY>. A STAMP file next to the .so holds the sha256 of
# csrc/ it was built from; `find` accepts the .so only when csrc/ still hashes the same.
# build uses the CUDA toolkit of CUDA_HOME, else the one the nvcc on PATH belongs to (setup.py
# asks nvcc); it must match torch's CUDA major version (13 for torch 2.11.0+cu130).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?usage: cuda_ext.sh build|find PY}
PY=${2:?usage: cuda_ext.sh build|find PY}

csrc_hash() { sha256sum csrc/*.h csrc/*.cpp csrc/*.cu | sha256sum | cut -d' ' -f1; }
tag() { "$PY" -c "import sys, torch; print(f'torch-{torch.__version__}-cp{sys.version_info[0]}{sys.version_info[1]}')"; }

case $cmd in
  find)
    dir=build/prebuilt/$(tag)
    so=$(ls "$dir"/_C.*.so 2>/dev/null | head -n 1 || true)
    if [[ -n $so && -f $dir/STAMP ]] && grep -qx "csrc $(csrc_hash)" "$dir/STAMP"; then
      echo "$so"
    fi
    ;;
  build)
    "$PY" -c "import torch; assert torch.version.cuda, f'torch {torch.__version__} has no CUDA build'"
    dir=build/prebuilt/$(tag)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # setup.py: USE_CUDA=1 adds csrc/latent_adam_cuda.cu; torch's builder turns the arch list
    # into -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90.
    USE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" MAX_JOBS=${MAX_JOBS:-2} \
      "$PY" setup.py -q build_ext --build-lib "$tmp/lib" --build-temp "$tmp/obj"
    mkdir -p "$dir"
    rm -f "$dir"/_C.*.so
    cp "$tmp"/lib/latentseek_fast/_C.*.so "$dir"/
    so=$(ls "$dir"/_C.*.so)
    {
      echo "csrc $(csrc_hash)"
      "$PY" -c "import platform, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', platform.python_version())"
      echo "nvcc $("${CUDA_HOME:+$CUDA_HOME/bin/}nvcc" --version | tail -n 2 | head -n 1)"
      echo "built $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo none)"
    } > "$dir/STAMP"
    # Load it (no GPU needed) and ask the dispatcher which kernels latent_adam_ has.
    "$PY" - "$so" <<'EOF'
import sys, torch
torch.ops.load_library(sys.argv[1])
op = "latentseek::latent_adam_"
keys = {k: torch._C._dispatch_has_kernel_for_dispatch_key(op, k) for k in ("CPU", "CUDA")}
print(f"loaded {sys.argv[1]}: {op} kernels {keys}")
assert all(keys.values()), keys
EOF
    cuobjdump=$("$PY" -c "from triton import knobs; print(knobs.nvidia.cuobjdump.path)" 2>/dev/null || command -v cuobjdump || true)
    if [[ -n $cuobjdump && -x $cuobjdump ]]; then
      "$cuobjdump" --list-elf "$so" | tee -a "$dir/STAMP"
    fi
    cat "$dir/STAMP"
    ;;
  *)
    echo "usage: cuda_ext.sh build|find PY" >&2
    exit 2
    ;;
esac
