"""The VoxTell network, its configs (presets) and model-folder I/O.

Public API (imported lazily so that ``import voxtell.model`` stays cheap without torch):
``NetworkConfig``, ``PRESETS``, ``get_preset``, ``config_from_plans`` (config);
``VoxTellNetwork`` (network); ``load_model_dir``, ``save_model_dir``, ``read_model_meta``,
``weights_sha256``, ``ModelMeta``, ``LoadedModel`` (checkpoint); typed errors (errors).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NetworkConfig": "config", "PRESETS": "config", "get_preset": "config", "config_from_plans": "config",
    "VoxTellNetwork": "network",
    "load_model_dir": "checkpoint", "save_model_dir": "checkpoint", "read_model_meta": "checkpoint",
    "weights_sha256": "checkpoint", "ModelMeta": "checkpoint", "LoadedModel": "checkpoint",
    "ModelError": "errors", "ModelNotFoundError": "errors", "CheckpointError": "errors",
    "StateDictMismatchError": "errors", "UnsafeCheckpointError": "errors", "ModelInputError": "errors",
    "EmbeddingDimensionError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"voxtell.model.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'voxtell.model' has no attribute {name!r}")
