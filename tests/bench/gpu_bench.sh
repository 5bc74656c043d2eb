#!/usr/bin/env bash
# GPU benchmark: the project's predictor vs the released-style reference loop on CUDA, for
# fp32 and bf16/fp16 autocast, plus raw backend throughput in patches/s (voxtell-v1 with
# random weights, 192^3 patches). Needs a CUDA machine; run from the repository root:
#   bash tests/bench/gpu_bench.sh [PROMPTS...]      (default prompts: 1 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PROMPTS=${*:-1 4}
"$PY" - <<'PYEOF'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_bench.sh: torch sees no CUDA device")
print("#", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
PYEOF

# 1) patches/s of the backend alone (all prompts of a patch in one pass)
"$PY" - $PROMPTS <<'PYEOF'
import sys, time, torch
from voxtell.model import VoxTellNetwork, get_preset
from voxtell.inference.backends import TorchBackend
torch.manual_seed(0)
cfg = get_preset("voxtell-v1")
net = VoxTellNetwork(cfg)
for precision in ("fp32", "bf16", "fp16"):
    backend = TorchBackend(net, "cuda", precision)
    for n_prompts in map(int, sys.argv[1:]):
        for batch in (1, 2):
            x = torch.randn(batch, 1, *cfg.patch_size)
            e = torch.randn(n_prompts, cfg.text_embedding_dim)
            try:
                backend.forward(x, e); torch.cuda.synchronize()
                reps = 3
                t0 = time.perf_counter()
                for _ in range(reps):
                    backend.forward(x, e)
                torch.cuda.synchronize()
                dt = (time.perf_counter() - t0) / reps
                print(f"{precision} prompts {n_prompts} sw_batch {batch}: {batch / dt:.2f} patches/s "
                      f"({batch * n_prompts / dt:.2f} patch-prompts/s), peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
                      flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"{precision} prompts {n_prompts} sw_batch {batch}: out of memory", flush=True)
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
PYEOF

# 2) whole-study comparison with the reference loop (same process, same volume)
for precision in fp32 bf16 fp16; do
    "$PY" tests/bench/bench_predict.py --preset voxtell-v1 --device cuda --precision "$precision" \
        --sw-batch-size 2 --prompts $PROMPTS --v1-depth 300
done
