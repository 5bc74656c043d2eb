"""The one check that an image is a usable volume, shared by convert, segment and stats.

Convert runs it on the image it writes (or on the NIfTI a samples table names), the
predictor's preprocessing on the image it segments and stats on every volume it reads, so
an image that passes convert cannot fail segment for a reason convert could have seen.

Two parts, so that callers check what they can afford: ``check_header`` looks only at the
shape, data type and affine (cheap, before any voxel is read); ``check_voxels`` passes over
the voxels slab by slab (no full-size temporary) for non-finite values and an all-zero
image. ``check_image`` does both for a nibabel image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from voxtell.errors import VoxTellError
from voxtell.io.errors import EmptyVolumeError, NiftiError, NonFiniteVolumeError, VolumeGeometryError, VolumeShapeError


@dataclass(frozen=True)
class VolumeLimits:
    """What a usable volume is. Defaults cover clinical CT, MR and PET.

    ``min_size``: voxels along every axis (one slice is an image, not a volume);
    ``max_voxels``: beyond it a header is more likely wrong than the scan (2**31 voxels
    is 8 GiB as float32); voxel sizes outside [``min_spacing_mm``, ``max_spacing_mm``]
    are header errors (0 mm, 1e6 mm), not scans.
    """

    min_size: int = 2
    max_voxels: int = 2**31
    min_spacing_mm: float = 1e-3
    max_spacing_mm: float = 100.0


DEFAULT_LIMITS = VolumeLimits()
_SLAB_VOXELS = 1 << 20  # voxels per chunk of the voxel pass (bounds temporaries to ~8 MB)


@dataclass(frozen=True)
class VolumeFacts:
    """Shape (3-D), voxel sizes from the affine (mm) and, once voxels were read, their range."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    value_range: tuple[float, float] | None = None


def volume_shape(shape: Sequence[int], what: str = "image", limits: VolumeLimits = DEFAULT_LIMITS) -> tuple[int, int, int]:
    """The 3-D shape of ``shape`` (trailing singleton axes dropped) or ``VolumeShapeError``."""
    dims = tuple(int(s) for s in shape)
    while len(dims) > 3 and dims[-1] == 1:  # (x, y, z, 1) is one volume
        dims = dims[:-1]
    if len(dims) != 3:
        raise VolumeShapeError(
            f"{what} has shape {tuple(shape)}; one 3-D volume is needed. "
            "Split 4-D series into volumes and stack 2-D slices into a volume first"
        )
    if min(dims) < limits.min_size:
        raise VolumeShapeError(
            f"{what} has shape {dims}; every axis needs at least {limits.min_size} voxels "
            "(a single slice is not a volume): export the whole series"
        )
    n = int(np.prod(np.asarray(dims, dtype=np.float64)))
    if n > limits.max_voxels:
        raise VolumeShapeError(
            f"{what} claims shape {dims} ({n:.3g} voxels, more than {limits.max_voxels:.3g}); "
            "the header is probably wrong: check the file"
        )
    return dims  # type: ignore[return-value]


def check_header(
    shape: Sequence[int],
    affine: np.ndarray | None,
    dtype: np.dtype | None = None,
    what: str = "image",
    limits: VolumeLimits = DEFAULT_LIMITS,
) -> VolumeFacts:
    """Check shape, voxel type and affine without reading voxels; returns shape and spacing."""
    dims = volume_shape(shape, what, limits)
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt.kind not in "biuf" or dt.fields is not None:
            raise VolumeShapeError(f"{what} voxels have type {dt}; give a scalar (grey-value) image")
    a = np.asarray(affine if affine is not None else np.full((4, 4), np.nan), dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise VolumeGeometryError(f"{what} affine is missing or not finite; fix the NIfTI header (sform/qform)")
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    det = np.linalg.det(a[:3, :3])
    if not np.isfinite(det) or np.prod(spacing) == 0 or abs(det) <= 1e-6 * np.prod(spacing):
        raise VolumeGeometryError(
            f"{what} affine is not invertible (zero voxel size or collinear axes); fix the NIfTI header"
        )
    bad = [f"{s:.4g}" for s in spacing if not limits.min_spacing_mm <= s <= limits.max_spacing_mm]
    if bad:
        raise VolumeGeometryError(
            f"{what} has voxel sizes {', '.join(f'{s:.4g}' for s in spacing)} mm; sizes outside "
            f"[{limits.min_spacing_mm:g}, {limits.max_spacing_mm:g}] mm are header errors: fix the spacing in the header"
        )
    return VolumeFacts(dims, tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def check_voxels(array: np.ndarray, what: str = "image", slope: float = 1.0, inter: float = 0.0) -> tuple[float, float]:
    """Refuse non-finite or all-zero voxels; returns (min, max) of ``array * slope + inter``.

    ``array`` may be the stored (unscaled) values, so that an int16 CT is never widened to
    float64 just to be checked. One pass, slab by slab along the first axis.
    """
    if not (np.isfinite(slope) and np.isfinite(inter)):
        raise NonFiniteVolumeError(f"{what} has a non-finite scaling (slope {slope}, intercept {inter}); fix its header")
    if array.size == 0:
        raise VolumeShapeError(f"{what} holds no voxels")
    lo, hi = np.inf, -np.inf
    floating = array.dtype.kind == "f"
    for slab in iter_slabs(array):
        if floating and not np.isfinite(slab).all():
            raise NonFiniteVolumeError(f"{what} contains NaN or infinite voxels; fix or mask them before segmentation")
        lo, hi = min(lo, float(slab.min())), max(hi, float(slab.max()))
    scaled = sorted((lo * slope + inter, hi * slope + inter))
    if not all(np.isfinite(scaled)):
        raise NonFiniteVolumeError(f"{what} voxels overflow after scaling (slope {slope}, intercept {inter})")
    if scaled[0] == 0 and scaled[1] == 0:
        raise EmptyVolumeError(f"every voxel of {what} is zero; check the conversion of this study")
    return scaled[0], scaled[1]


def iter_slabs(array: np.ndarray):
    """Views of about ``_SLAB_VOXELS`` voxels along the slowest axis in memory (NIfTI data is
    Fortran-ordered), so that a pass over a volume never makes a full-size temporary."""
    axis = array.ndim - 1 if array.flags.f_contiguous and not array.flags.c_contiguous else 0
    step = max(1, _SLAB_VOXELS // max(1, array.size // max(1, array.shape[axis])))
    for start in range(0, array.shape[axis], step):
        index = [slice(None)] * array.ndim
        index[axis] = slice(start, start + step)
        yield array[tuple(index)]


def check_image(
    img,
    what: str = "image",
    read: bool = True,
    limits: VolumeLimits = DEFAULT_LIMITS,
    error: type[VoxTellError] = NiftiError,
) -> VolumeFacts:
    """``check_header`` then (``read``) ``check_voxels`` on a nibabel image, voxels read once, unscaled.

    ``error`` is the class raised when the voxel data cannot be read (truncated file).
    """
    if not read:
        return check_header(img.shape, img.affine, img.get_data_dtype(), what, limits)
    return read_checked(img, what, limits, error)[0]


def read_checked(
    img, what: str = "image", limits: VolumeLimits = DEFAULT_LIMITS, error: type[VoxTellError] = NiftiError
) -> tuple[VolumeFacts, np.ndarray, float, float]:
    """The whole check, returning the stored voxels with their slope and intercept for further checks."""
    from voxtell.io.nifti import read_stored_voxels

    facts = check_header(img.shape, img.affine, img.get_data_dtype(), what, limits)
    raw, slope, inter = read_stored_voxels(img, facts.shape, what, error)
    facts = VolumeFacts(facts.shape, facts.spacing_mm, check_voxels(raw, what, slope, inter))
    return facts, raw, slope, inter


def check_image_file(path: str | os.PathLike, what: str = "image", limits: VolumeLimits = DEFAULT_LIMITS) -> VolumeFacts:
    """Open a NIfTI with typed errors (``NiftiError``) and run the whole check on it."""
    from voxtell.io.nifti import load_nifti

    return check_image(load_nifti(path), f"{what} {path}", True, limits)
