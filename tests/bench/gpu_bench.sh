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

# 3) ONNX Runtime on the GPU (needs onnxruntime-gpu: VOXTELL_GPU=1 scripts/bootstrap.sh):
#    PyTorch fp32 vs ORT CUDA fp32 vs ORT TensorRT fp16 (engine cache in a temp folder),
#    per-patch time, and the fp16 graph's agreement with PyTorch fp32 logits.
"$PY" - $PROMPTS <<'PYEOF'
import sys, tempfile, time
from pathlib import Path
import numpy as np, torch
import onnxruntime as ort
from voxtell.model import ModelMeta, VoxTellNetwork, get_preset, load_model_dir, save_model_dir
from voxtell.model.onnx_export import export_onnx
from voxtell.inference.backends import TorchBackend
from voxtell.inference.onnx_backend import OnnxBackend
print("# onnxruntime", ort.__version__, "providers", ort.get_available_providers(), flush=True)
if "CUDAExecutionProvider" not in ort.get_available_providers():
    sys.exit("# skipped: this onnxruntime has no CUDA provider (install onnxruntime-gpu: VOXTELL_GPU=1 scripts/bootstrap.sh)")
def timed(fn, reps=3):
    fn(); torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(reps): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / reps
for preset in ("small", "voxtell-v1"):
    cfg = get_preset(preset)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_model_dir(VoxTellNetwork(cfg), cfg, tmp, ModelMeta(model_id=preset, preset=preset, text_encoder="bench", embedding_dim=cfg.text_embedding_dim))
        loaded = load_model_dir(tmp)
        f32 = export_onnx(loaded, Path(tmp) / "f32.onnx").path
        f16 = export_onnx(loaded, Path(tmp) / "f16.onnx", precision="fp16").path
        tb = TorchBackend(loaded.network, "cuda", "fp32")
        runs = {"ort-cuda-fp32": OnnxBackend(f32, None, device="cuda", providers=["CUDAExecutionProvider"]),
                "ort-cuda-fp16": OnnxBackend(f16, None, device="cuda", providers=["CUDAExecutionProvider"])}
        try:
            runs["ort-trt-fp16"] = OnnxBackend(f32, None, device="cuda", providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                                               trt_cache_dir=Path(tmp) / "trt", trt_fp16=True)
        except Exception as exc:
            print(f"{preset}: TensorRT provider unavailable: {exc}", flush=True)
        for n in map(int, sys.argv[1:]):
            x = torch.randn(1, 1, *cfg.patch_size); e = torch.randn(n, cfg.text_embedding_dim)
            ref = tb.forward(x, e).cpu().numpy()
            t_ref = timed(lambda: tb.forward(x, e))
            print(f"{preset} prompts {n}: torch-cuda-fp32 {t_ref*1000:.1f} ms/patch", flush=True)
            for name, b in runs.items():
                out = b.forward(x, e)
                t = timed(lambda: b.forward(x, e))
                agree = float(((out > 0) == (ref > 0)).mean())
                print(f"{preset} prompts {n}: {name} {t*1000:.1f} ms/patch ({t_ref/t:.2f}x torch fp32), providers {b.providers[0]}, "
                      f"max|diff| {np.abs(out-ref).max():.3g}, mask agreement {agree:.5f}", flush=True)
PYEOF
