#!/usr/bin/env bash
# Everything a lent GPU machine should measure, in one run of about 8 minutes, each part
# under its own time limit so one slow part cannot starve the rest. Logs go to LOGDIR.
#   bash tests/bench/gpu_check.sh [LOGDIR]
# Parts: the GPU and software; training steps (fp32 / bf16 autocast); the inference
# benchmark (gpu_bench.sh: backend throughput, whole studies against the reference loop,
# ONNX Runtime CUDA / TensorRT when onnxruntime-gpu is installed); retraining a new concept
# on the GPU (bench_retrain.py).
set -uo pipefail
cd "$(dirname "$0")/../.."
LOG=${1:-/tmp/voxtell-gpu-check}
mkdir -p "$LOG"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONUNBUFFERED=1
part() {  # part NAME SECONDS CMD...
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s)"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$LOG/$name.log"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0))s"
}
part env 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c 'import torch, onnxruntime as o; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version()); print(\"onnxruntime\", o.__version__, o.get_available_providers())'"
part train_steps 100 bash -c "
  $PY tests/bench/bench_train.py --device cuda --steps 20 &&
  $PY tests/bench/bench_train.py --device cuda --steps 20 --amp &&
  $PY tests/bench/bench_train.py --device cuda --steps 20 --amp --batch-size 8 &&
  $PY tests/bench/bench_train.py --device cuda --steps 5 --amp --preset voxtell-v1 --batch-size 2 --prompts 2"
part inference 180 bash tests/bench/gpu_bench.sh 1 4
part retrain 240 "$PY" tests/bench/bench_retrain.py --device cuda --minutes 2.5 --out /tmp/voxtell-bench-retrain
