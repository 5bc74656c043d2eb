"""Per-patch time: PyTorch vs ONNX Runtime on the CPU, for tiny, small and voxtell-v1.

Random weights (the architecture, not the values, sets the cost). Each preset is exported
once into a temporary model folder; both backends then run the same patches with 1 and 4
prompts. Usage: ``.venv/bin/python tests/bench/bench_onnx.py [--presets tiny small voxtell-v1]
[--repeats 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from voxtell.inference.backends import TorchBackend
from voxtell.inference.onnx_backend import OnnxBackend
from voxtell.model import ModelMeta, get_preset, load_model_dir, save_model_dir
from voxtell.model.network import VoxTellNetwork
from voxtell.model.onnx_export import export_onnx


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (graph optimisation, allocator)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(preset: str, repeats: int) -> None:
    cfg = get_preset(preset, deep_supervision=False)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_model_dir(VoxTellNetwork(cfg), cfg, tmp, ModelMeta(model_id=preset, preset=preset, text_encoder="bench", embedding_dim=cfg.text_embedding_dim))
        loaded = load_model_dir(tmp)
        t0 = time.perf_counter()
        exported = export_onnx(loaded, Path(tmp) / "m.onnx")
        export_s = time.perf_counter() - t0
        torch_backend = TorchBackend(loaded.network, "cpu", "fp32")
        onnx_backend = OnnxBackend(exported.path, loaded.meta.sha256, threads=torch.get_num_threads())
        image = torch.randn(1, 1, *cfg.patch_size)
        for prompts in (1, 4):
            text = torch.randn(prompts, cfg.text_embedding_dim)
            t_torch = timed(lambda: torch_backend.forward(image, text), repeats)
            t_onnx = timed(lambda: onnx_backend.forward(image, text), repeats)
            diff = float(np.abs(onnx_backend.forward(image, text) - torch_backend.forward(image, text).numpy()).max())
            print(f"{preset:11s} patch {cfg.patch_size[0]:3d}^3 prompts {prompts}: torch {t_torch:8.3f} s  "
                  f"onnxruntime {t_onnx:8.3f} s  ratio {t_torch / t_onnx:5.2f}x  max|diff| {diff:.2e}  (export {export_s:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "voxtell-v1"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for preset in args.presets:
        bench(preset, args.repeats if preset != "voxtell-v1" else 1)


if __name__ == "__main__":
    main()
