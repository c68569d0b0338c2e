#!/usr/bin/env bash
# The batched engine on a GPU, in one short session (a lent GPU is held for minutes, so
# everything it is for runs here, each stage under its own time limit, each log kept):
#
#   1. equivalence: tests/test_engine.py with both engines on the GPU (SKIPLAB_TEST_DEVICE=cuda,
#      TF32 off): every strategy and family, batch norm, auxiliary heads, a diverging seed,
#      the loss read back every 50 steps (the CUDA default) against every step;
#   2. the throughput table: benchmarks/engine_throughput.py --device cuda, the CPU table's
#      rows with 3, 8 and 32 seeds;
#   3. --compile and --precision bf16 at depth 50 with 8 seeds;
#   4. the transformer study's GPU preset (issue 27.5: skiplab study --model transformer --preset gpu),
#      sized by estimate for 10 minutes; its report is kept in LOG_DIR/gpu-study.
#
#   bash benchmarks/cuda_check.sh [LOG_DIR]     (default: $OUT, else ./cuda-check)
#
# Needs torch with CUDA and skiplab's dependencies importable (mnist1d: a wheel installed to
# a folder on PYTHONPATH will do); runs from the repository's root without installing it.
set -u
log=${1:-${OUT:-cuda-check}}
mkdir -p "$log"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
stage() {  # stage NAME SECONDS COMMAND...: run it under a time limit, its output shown and kept
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$log/$name.txt"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$log/gpu.txt"
stage equivalence 120 env SKIPLAB_TEST_DEVICE=cuda "$py" -m pytest -q -p no:cacheprovider -W default tests/test_engine.py
stage throughput 210 "$py" benchmarks/engine_throughput.py --device cuda --seeds 3,8,32
stage compile 150 "$py" benchmarks/engine_throughput.py --device cuda --depths 50 --seeds 8 --no-cnn --compile --repeats 1
stage bf16 60 "$py" benchmarks/engine_throughput.py --device cuda --depths 50 --seeds 8 --no-cnn --precision bf16
stage gpu-study 660 "$py" -m skiplab study --model transformer --preset gpu --device cuda --out "$log/gpu-study"
