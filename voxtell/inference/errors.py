"""Typed errors of the inference stage.

Each one is an ``InputError`` or ``ConfigError`` (both ``VoxTellError``), so the workflow
records a bad study as a status row and moves on; anything else (OOM, CUDA faults) is left
to fail the job so that the scheduler retries it.
"""

from __future__ import annotations

from voxtell.errors import ConfigError, InputError
from voxtell.io.errors import EmptyVolumeError, NonFiniteVolumeError, VolumeGeometryError, VolumeShapeError


class ImageError(InputError):
    """The input image cannot be segmented as it is."""


class UnreadableImageError(ImageError):
    """The image file is missing, truncated or not a format nibabel reads."""


# The usable-volume rule has one owner (voxtell.io.volume); its errors are these under the
# names this stage has always raised.
ImageDimensionError = VolumeShapeError  # not a single 3-D volume (2-D slice, 4-D series, vector image)
NonFiniteImageError = NonFiniteVolumeError  # NaN or infinite voxels
EmptyImageError = EmptyVolumeError  # every voxel is zero
AffineError = VolumeGeometryError  # affine not finite or not invertible, voxel size zero or absurd


class PromptError(InputError):
    """No prompts were given, or prompts and embeddings do not match."""


class InferenceConfigError(ConfigError):
    """A predictor option is invalid (device, precision, tile step, ...)."""
