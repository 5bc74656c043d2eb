"""Inference: preprocessing, sliding window, backends (torch, onnxruntime) and the predictor.

Public API (imported lazily so that ``voxtell --help`` does not import torch):
``Predictor``, ``PredictorConfig``, ``PredictionResult``, ``ModelInfo`` (predictor); ``Backend``, ``TorchBackend`` (backends); ``preprocess``,
``restore`` (preprocessing); ``sliding_window`` (sliding_window); typed errors (errors).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Predictor": "predictor", "PredictorConfig": "predictor", "PredictionResult": "predictor",
    "ModelInfo": "predictor",
    "Backend": "backends", "TorchBackend": "backends",
    "preprocess": "preprocessing", "restore": "preprocessing", "PreprocessState": "preprocessing",
    "sliding_window": "sliding_window", "OutputMode": "sliding_window",
    "ImageError": "errors", "UnreadableImageError": "errors", "ImageDimensionError": "errors",
    "NonFiniteImageError": "errors", "EmptyImageError": "errors", "AffineError": "errors",
    "PromptError": "errors", "InferenceConfigError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"voxtell.inference.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'voxtell.inference' has no attribute {name!r}")
