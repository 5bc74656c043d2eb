"""Typed errors of the model package: missing folders, bad checkpoints, wrong inputs.

Each message names the file or tensor at fault and what to do about it; the workflow turns
them into status rows (see ``voxtell.errors``).
"""

from __future__ import annotations

from voxtell.errors import InputError, VoxTellError

__all__ = [
    "ModelError",
    "ModelNotFoundError",
    "CheckpointError",
    "StateDictMismatchError",
    "UnsafeCheckpointError",
    "ModelInputError",
    "EmbeddingDimensionError",
]


class ModelError(VoxTellError):
    """Base class of model-folder and network errors."""


class ModelNotFoundError(ModelError, InputError):
    """A model folder, ``plans.json`` or checkpoint file does not exist."""


class CheckpointError(ModelError):
    """A checkpoint file is truncated, corrupt or not a VoxTell/nnU-Net checkpoint."""


class StateDictMismatchError(CheckpointError):
    """The checkpoint's keys or shapes differ from the network built from the config."""

    def __init__(self, message: str, missing: list[str] | None = None, unexpected: list[str] | None = None,
                 mismatched: list[tuple[str, tuple, tuple]] | None = None) -> None:
        super().__init__(message)
        self.missing = list(missing or [])
        self.unexpected = list(unexpected or [])
        self.mismatched = list(mismatched or [])


class UnsafeCheckpointError(CheckpointError):
    """The checkpoint pickle needs code execution to load; it is refused, never run."""


class ModelInputError(ModelError, InputError):
    """An image or text-embedding tensor has the wrong shape for this network."""


class EmbeddingDimensionError(ModelInputError):
    """Text embeddings have a different dimension than the network's text projection."""
