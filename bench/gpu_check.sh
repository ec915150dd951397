#!/usr/bin/env bash
# GPU check for an H200 with no network and nothing to install (its image: torch 2.11, triton 3.6,
# python 3.12; no model weights): the native op, the CUDA parity tests, the step, update and
# end-to-end benchmarks and a small autotune. Everything lands in $OUT (at most 8 files):
#   $OUT/log.txt       everything printed (stages, tests, benches, nvidia-smi readings)
#   $OUT/step.csv      bench_step.py --device cuda (V=152064 d=3584 first, then the V x d grid)
#   $OUT/update.csv    bench_update.py --device cuda (native vs torch.optim.Adam, with clipping)
#   $OUT/autotune.csv  bench/autotune.py (the spill-free block configurations of aot.csv)
#   $OUT/seek_gpu.csv  bench_seek_gpu.py (random-weight Qwen2.5-1.5B shape, bf16)
#   $OUT/summary.md    plot.py's tables (PNGs are made later: copy the CSVs to bench/results/)
#   $OUT/tests.txt     pytest's report of the CUDA tests (also in log.txt)
# Each stage runs under `timeout`; without a build the limits add up to 405 s (a build adds 120 s),
# which leaves room for a second run in a 15-minute device budget. A failing stage is logged and the next one still runs; the exit status is 1 when any stage
# failed. The GPU is only read (nvidia-smi queries): never reset, never reconfigured.
#
# The native op: a prebuilt .so from `bash bench/cuda_ext.sh build PY` (build/prebuilt/, carried
# to the machine as an ignored path) is used when it matches this python, torch and csrc/;
# otherwise it is built here (pip, offline).
#
# Device call (from the repo root):  bash bench/gpu_check.sh
# Dry run of the flow on a CPU machine (tiny shapes, the extension as built, no CUDA tests):
#   OUT=/tmp/gpucheck DEVICE=cpu bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
# Stage limits in seconds (override from the environment).
# Sum without a build: 405 s.
T_INFO=${T_INFO:-20} T_BUILD=${T_BUILD:-120} T_CUDA_TESTS=${T_CUDA_TESTS:-40}
T_OP_TESTS=${T_OP_TESTS:-60} T_STEP=${T_STEP:-100} T_STEP_GRID=${T_STEP_GRID:-40} T_UPDATE=${T_UPDATE:-30}
T_TUNE=${T_TUNE:-60} T_SEEK=${T_SEEK:-45} T_SUMMARY=${T_SUMMARY:-10}
FAILED=()
START=$SECONDS

# stage NAME LIMIT_S OK_CODES CMD...: run CMD under timeout, log its status, never abort the script.
stage() {
  local name=$1 limit=$2 okcodes=$3
  shift 3
  echo
  echo "=== [$((SECONDS - START)) s] $name (limit ${limit} s): $*"
  local t0=$SECONDS rc=0
  timeout --kill-after=5 "$limit" "$@" || rc=$?
  echo "=== $name: rc=$rc after $((SECONDS - t0)) s"
  if [[ " $okcodes " != *" $rc "* ]]; then
    FAILED+=("$name(rc=$rc)")
  fi
  return 0
}

gpu_state() {  # read-only: clocks, power, temperature, memory
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu,memory.used,memory.total \
      --format=csv || true
  fi
}

# Make the package importable from the tree without installing it: the sources on PYTHONPATH and
# latentseek_fast.kernels linked to kernels/lpg/ (what setup.py's package_dir does on install).
use_tree() {
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if [[ ! -e latentseek_fast/kernels ]]; then
    ln -s ../kernels/lpg latentseek_fast/kernels
    trap 'rm -f latentseek_fast/kernels' EXIT
  fi
}

echo "gpu_check: $(date -u +%FT%TZ) DEVICE=$DEVICE OUT=$OUT commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
stage info "$T_INFO" "0" "$PY" -c "
import platform, torch, triton, transformers
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'triton', triton.__version__, 'transformers', transformers.__version__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, 'cc', f'{p.major}.{p.minor}', 'SMs', p.multi_processor_count, 'mem GiB', round(p.total_memory / 2**30, 1))
for mod in ('cut_cross_entropy', 'liger_kernel'):
    try:
        __import__(mod)
        print(mod, 'importable')
    except Exception as exc:
        print(mod, 'not importable:', type(exc).__name__)
"
gpu_state

if [[ $DEVICE == cuda ]]; then
  prebuilt=$(bash bench/cuda_ext.sh find "$PY" || true)
  if [[ -n $prebuilt ]]; then
    echo "native op: prebuilt $prebuilt ($(head -n 1 "$(dirname "$prebuilt")/STAMP"))"
    cp "$prebuilt" latentseek_fast/
    use_tree
  else
    echo "native op: no prebuilt .so for this python/torch/csrc; building it (offline)"
    # --no-index --no-build-isolation --no-deps: only what is installed (setuptools, wheel,
    # ninja, torch). The editable install maps latentseek_fast.kernels to kernels/lpg/ (setup.py).
    export USE_CUDA=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
    stage build "$T_BUILD" "0" "$PY" -m pip install -q --no-index --no-build-isolation --no-deps -e .
    if ! "$PY" -c "import latentseek_fast.kernels" 2>/dev/null; then
      echo "editable install unusable: building in place instead"
      stage build-inplace "$T_BUILD" "0" "$PY" setup.py -q build_ext --inplace
      use_tree
    fi
  fi
  # The dispatcher lists the op's kernels once the library is loaded (importing _C loads it).
  "$PY" -c "
import torch, latentseek_fast._C as C
op = 'latentseek::latent_adam_'
keys = {k: torch._C._dispatch_has_kernel_for_dispatch_key(op, k) for k in ('CPU', 'CUDA')}
print('native op:', C.__file__, op, keys)
assert all(keys.values()), keys
" || FAILED+=("ext-check")

  # CUDA parity tests: the cuda-marked ones (exit 5 = none collected), then the op files (they run
  # their triton/native cases on the GPU here; the embedded model is absent: not slow).
  op_tests=$(ls tests/ops/test_latent_policy_grad.py tests/ops/test_latent_adam*.py tests/ops/test_gumbel.py 2>/dev/null || true)
  stage cuda-tests "$T_CUDA_TESTS" "0 5" "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/ -rfEs
  # shellcheck disable=SC2086
  stage op-tests "$T_OP_TESTS" "0 5" bash -c "set -o pipefail; '$PY' -m pytest -q -p no:cacheprovider \
    -m 'not slow' -rfEs $op_tests | tee '$OUT/tests.txt'"
  gpu_state

  # The issue's shape first (Qwen2.5-7B head, bf16; N <= 64 and N = 300; every provider: eager
  # reference, torch.compile, ours, Cut Cross-Entropy and Liger where importable), then the grid.
  stage step "$T_STEP" "0" "$PY" bench/bench_step.py --device cuda --models 152064x3584 --n 16 64 300 \
    --time-budget $((T_STEP - 30)) --out "$OUT/step.csv"
  stage step-grid "$T_STEP_GRID" "0" "$PY" bench/bench_step.py --device cuda --n 64 300 \
    --models 152064x896 128256x4096 49152x3584 --providers reference compile triton \
    --no-peaks --time-budget $((T_STEP_GRID - 20)) --out "$OUT/step.csv"
  stage update "$T_UPDATE" "0" "$PY" bench/bench_update.py --device cuda --out "$OUT/update.csv"
  stage autotune "$T_TUNE" "0" "$PY" bench/autotune.py --budget $((T_TUNE - 20)) --out "$OUT/autotune.csv"
  stage seek "$T_SEEK" "0" "$PY" bench/bench_seek_gpu.py --device cuda --max-new-tokens 160 --steps 3 \
    --out "$OUT/seek_gpu.csv"
  gpu_state
else
  # Dry run: the same stages at toy sizes on the CPU (the extension as already built here; the
  # triton kernels under the interpreter).
  stage step "$T_STEP" "0" "$PY" bench/bench_step.py --device cpu --n 4 --models 4096x64 --repeats 2 \
    --providers reference torch triton cce --out "$OUT/step.csv"
  stage update "$T_UPDATE" "0" "$PY" bench/bench_update.py --device cpu --n 4 --d 64 --repeats 5 \
    --out "$OUT/update.csv"
  stage autotune "$T_TUNE" "0" env TRITON_INTERPRET=1 "$PY" bench/autotune.py --device cpu --v 256 --d 32 \
    --n 16 --budget 30 --out "$OUT/autotune.csv"
  stage seek "$T_SEEK" "0" "$PY" bench/bench_seek_gpu.py --device cpu --tiny --max-new-tokens 8 --steps 1 \
    --out "$OUT/seek_gpu.csv"
fi

stage summary "$T_SUMMARY" "0" "$PY" bench/plot.py --results "$OUT" --no-png --digest

echo
echo "gpu_check: done in $((SECONDS - START)) s; failed stages: ${FAILED[*]:-none}"
[[ ${#FAILED[@]} -eq 0 ]]
