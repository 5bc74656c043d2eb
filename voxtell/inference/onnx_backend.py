"""ONNX Runtime backend: the same sliding window, a different forward.

Provider order is configurable; by default TensorRT -> CUDA -> CPU, keeping those the
installed onnxruntime offers (``onnxruntime`` has CPU only, ``onnxruntime-gpu`` adds CUDA
and TensorRT). TensorRT builds an engine per input shape on first use; an engine cache
folder makes that a one-time cost per node.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from voxtell.model.onnx_export import OnnxModelError, default_onnx_path, read_onnx_metadata

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: Sequence[str] | None, device: str) -> list[str]:
    """Requested providers that this onnxruntime build has, in order; CPU always last."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = list(requested or DEFAULT_PROVIDERS)
    if not device.startswith("cuda"):
        wanted = [p for p in wanted if p == "CPUExecutionProvider"] or ["CPUExecutionProvider"]
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    skipped = [p for p in wanted if p not in available]
    if skipped:
        log.info("onnxruntime providers not available here: %s", ", ".join(skipped))
    return chosen


class OnnxBackend:
    """Runs an exported VoxTell graph; ``forward`` has the torch backend's contract."""

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        expected_sha256: str | None,
        device: str = "cpu",
        providers: Sequence[str] | None = None,
        trt_cache_dir: str | os.PathLike | None = None,
        trt_fp16: bool = False,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.meta = read_onnx_metadata(self.path)
        if expected_sha256 and self.meta["voxtell_model_sha256"] != expected_sha256:
            raise OnnxModelError(
                f"{self.path} was exported from weights {self.meta['voxtell_model_sha256'][:12]}… but the model "
                f"folder holds {expected_sha256[:12]}…; export it again with `voxtell export-onnx`"
            )
        self.device = device
        if self.meta.get("voxtell_precision") == "fp16" and not device.startswith("cuda"):
            # onnxruntime's CPU provider has no fp16 3-D convolution (it crashes the
            # process on such graphs): refuse before a session is created.
            raise OnnxModelError(f"{self.path.name} is an fp16 export, which runs only on CUDA/TensorRT; on CPU use the fp32 export")
        chosen = choose_providers(providers, device)
        options: list[dict] = []
        for p in chosen:
            if p == "TensorrtExecutionProvider":
                opts = {"trt_fp16_enable": bool(trt_fp16)}
                if trt_cache_dir:
                    Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
                    opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir))
                options.append(opts)
            elif p == "CUDAExecutionProvider":
                options.append({"device_id": int(device.split(":")[1]) if ":" in device else 0})
            else:
                options.append({})
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=chosen, provider_options=options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise OnnxModelError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        self.providers = self.session.get_providers()
        log.info("onnxruntime session on %s", ", ".join(self.providers))

    def forward(self, patches: torch.Tensor, embeddings: torch.Tensor) -> np.ndarray:
        image = np.ascontiguousarray(patches.detach().cpu().numpy(), dtype=np.float32)
        emb = embeddings.detach().cpu().numpy().astype(np.float32)
        text = np.ascontiguousarray(np.broadcast_to(emb[None], (image.shape[0], *emb.shape)))
        (logits,) = self.session.run(["logits"], {"image": image, "text_embeddings": text})
        return logits


def load_onnx_backend(
    model_dir: Path,
    device: str = "cpu",
    precision: str = "fp32",
    *,
    expected_sha256: str | None = None,
    onnx_path: str | os.PathLike | None = None,
    providers: Sequence[str] | None = None,
    trt_cache_dir: str | os.PathLike | None = None,
) -> OnnxBackend:
    """The backend for a model folder: its exported graph, checked against its weights.

    ``precision`` fp16 uses the fp16 export when there is one; otherwise the fp32 graph
    runs, and TensorRT may still build fp16 engines from it.
    """
    from voxtell.model.checkpoint import CHECKPOINT_RELPATH, weights_sha256

    if onnx_path is None:
        # onnxruntime's CPU provider lacks fp16 kernels for 3-D convolutions: CPU runs fp32.
        use_fp16 = precision == "fp16" and device.startswith("cuda")
        onnx_path = default_onnx_path(model_dir, "fp16" if use_fp16 else "fp32")
        if use_fp16 and not Path(onnx_path).is_file():
            onnx_path = default_onnx_path(model_dir, "fp32")
    if expected_sha256 is None:
        expected_sha256 = weights_sha256(Path(model_dir) / CHECKPOINT_RELPATH)
    if trt_cache_dir is None:
        trt_cache_dir = Path(model_dir) / "onnx" / "trt_cache"
    return OnnxBackend(
        onnx_path,
        expected_sha256,
        device=device,
        providers=providers,
        trt_cache_dir=trt_cache_dir,
        trt_fp16=precision in ("fp16", "bf16"),
    )
