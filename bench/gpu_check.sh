#!/usr/bin/env bash
# GPU check for a lent H200 (torch 2.11, triton 3.6, transformers 5.x; no network, no model
# weights): build the native op with CUDA, run the CUDA parity tests, then the step, update and
# end-to-end seek benchmarks. Everything lands in $OUT (at most 8 files come back, 2 folders deep):
#   $OUT/log.txt       everything printed (stages, tests, benches, nvidia-smi readings)
#   $OUT/step.csv      bench_step.py --device cuda
#   $OUT/update.csv    bench_update.py --device cuda
#   $OUT/seek_gpu.csv  bench_seek_gpu.py (random-weight Qwen2.5-1.5B shape, bf16)
#   $OUT/summary.md    plot.py's tables (PNGs are made later, here: copy the CSVs to bench/results/)
# Each stage runs under `timeout`; the stage limits add up to under 8 minutes. A failing stage is
# logged and the next one still runs; the exit status is 1 when any stage failed.
# The GPU is only read (nvidia-smi queries): never reset, never reconfigured.
#
# Device call (from the repo root):  bash bench/gpu_check.sh
# Dry run of the flow on a CPU machine (tiny shapes, no CUDA build, no tests):
#   OUT=/tmp/gpucheck DEVICE=cpu bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder whose files come back}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1

export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
# Stage limits in seconds (override from the environment). Sum: 470 s.
T_INFO=${T_INFO:-15} T_BUILD=${T_BUILD:-120} T_CUDA_TESTS=${T_CUDA_TESTS:-45}
T_OP_TESTS=${T_OP_TESTS:-60} T_STEP=${T_STEP:-110} T_UPDATE=${T_UPDATE:-30} T_SEEK=${T_SEEK:-80}
T_SUMMARY=${T_SUMMARY:-10}
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

echo "gpu_check: $(date -u +%FT%TZ) DEVICE=$DEVICE OUT=$OUT commit=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
stage info "$T_INFO" "0" "$PY" -c "
import platform, torch, triton, transformers
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'triton', triton.__version__, 'transformers', transformers.__version__)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(p.name, 'cc', f'{p.major}.{p.minor}', 'SMs', p.multi_processor_count, 'mem GiB', round(p.total_memory / 2**30, 1))
"
gpu_state

if [[ $DEVICE == cuda ]]; then
  # Build the native op with its CUDA kernel, offline: --no-index --no-build-isolation --no-deps
  # use only what is installed (setuptools, wheel, ninja, torch). An editable install puts the
  # extension next to the sources and maps latentseek_fast.kernels to kernels/ (setup.py).
  export USE_CUDA=1 MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  stage build "$T_BUILD" "0" "$PY" -m pip install -q --no-index --no-build-isolation --no-deps -e .
  if ! "$PY" -c "import latentseek_fast.kernels" 2>/dev/null; then
    # Fallback: build in place and make the kernels package importable through the tree itself.
    echo "editable install unusable: building in place instead"
    stage build-inplace "$T_BUILD" "0" "$PY" setup.py -q build_ext --inplace
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if [[ ! -e latentseek_fast/kernels ]]; then
      ln -s ../kernels latentseek_fast/kernels
      trap 'rm -f latentseek_fast/kernels' EXIT
    fi
  fi
  "$PY" -c "
from latentseek_fast import _ext
print('native ext:', _ext.ext_available(), '| cuda kernel:', _ext.ext_has_kernel('latent_adam_', 'cuda'),
      '|', _ext.ext_unavailable_reason() or 'ok')
" || FAILED+=("ext-check")

  # CUDA parity tests: the cuda-marked ones (exit 5 = none collected), then the two op files
  # (they run their triton/native cases on the GPU here; the embedded model is absent: not slow).
  stage cuda-tests "$T_CUDA_TESTS" "0 5" "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/
  op_tests=$(ls tests/test_latent_policy_grad.py tests/test_latent_adam*.py 2>/dev/null || true)
  if [[ -n $op_tests ]]; then
    # shellcheck disable=SC2086
    stage op-tests "$T_OP_TESTS" "0 5" "$PY" -m pytest -q -p no:cacheprovider -m "not slow" $op_tests
  fi
  gpu_state

  stage step "$T_STEP" "0" "$PY" bench/bench_step.py --device cuda --time-budget $((T_STEP - 25)) \
    --out "$OUT/step.csv"
  stage update "$T_UPDATE" "0" "$PY" bench/bench_update.py --device cuda --out "$OUT/update.csv"
  stage seek "$T_SEEK" "0" "$PY" bench/bench_seek_gpu.py --device cuda --max-new-tokens 160 --steps 3 \
    --out "$OUT/seek_gpu.csv"
  gpu_state
else
  # Dry run: the same stages at toy sizes on the CPU (the extension as already built here).
  stage step "$T_STEP" "0" "$PY" bench/bench_step.py --device cpu --n 4 --models 4096x64 --repeats 2 \
    --providers reference torch triton cce --out "$OUT/step.csv"
  stage update "$T_UPDATE" "0" "$PY" bench/bench_update.py --device cpu --n 4 --d 64 --repeats 5 \
    --out "$OUT/update.csv"
  stage seek "$T_SEEK" "0" "$PY" bench/bench_seek_gpu.py --device cpu --tiny --max-new-tokens 8 --steps 1 \
    --out "$OUT/seek_gpu.csv"
fi

stage summary "$T_SUMMARY" "0" "$PY" bench/plot.py --results "$OUT" --no-png --digest

echo
echo "gpu_check: done in $((SECONDS - START)) s; failed stages: ${FAILED[*]:-none}"
[[ ${#FAILED[@]} -eq 0 ]]
