"""Typed errors of the inference stage.

Each one is an ``InputError`` or ``ConfigError`` (both ``VoxTellError``), so the workflow
records a bad study as a status row and moves on; anything else (OOM, CUDA faults) is left
to fail the job so that the scheduler retries it.
"""

from __future__ import annotations

from voxtell.errors import ConfigError, InputError


class ImageError(InputError):
    """The input image cannot be segmented as it is."""


class UnreadableImageError(ImageError):
    """The image file is missing, truncated or not a format nibabel reads."""


class ImageDimensionError(ImageError):
    """The image is not a single 3-D volume (2-D slice, 4-D series, vector image)."""


class NonFiniteImageError(ImageError):
    """The image holds NaN or infinite voxels."""


class EmptyImageError(ImageError):
    """Every voxel is zero: there is nothing to crop to or normalise."""


class AffineError(ImageError):
    """The voxel-to-world affine is not invertible or not finite."""


class PromptError(InputError):
    """No prompts were given, or prompts and embeddings do not match."""


class InferenceConfigError(ConfigError):
    """A predictor option is invalid (device, precision, tile step, ...)."""
