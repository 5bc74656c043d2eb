"""Image conventions of the released VoxTell weights, and their exact inverse.

The network sees the image in RAS closest-canonical orientation with its axes reversed
(array order z, y, x), cropped to the bounding box of nonzero voxels, z-scored with the
mean and std of the crop, and zero-padded to at least one patch (DESIGN.md section 3).
Getting the orientation wrong silently swaps left and right, so ``restore`` is the one
place that maps network-space masks back, by undoing the same steps in reverse order.

Memory: reorientation and the axis reversal are views; the only full-size copy is the
float32 crop (allocated already padded). Hole filling before the bounding box is skipped on
purpose: filling holes never changes a mask's bounding box, and on a 512x512x800 CT it
would cost a second full-size pass and a boolean volume.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence, Union

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from voxtell.inference.errors import EmptyImageError, ImageDimensionError, NonFiniteImageError, UnreadableImageError
from voxtell.io.nifti import open_image, read_voxels
from voxtell.io.volume import check_header, check_voxels

log = logging.getLogger(__name__)

ImageLike = Union[str, os.PathLike, nib.spatialimages.SpatialImage]

_RAS = axcodes2ornt(("R", "A", "S"))
_SLAB_VOXELS = 1 << 20  # voxels per chunk in full-volume passes (bounds temporaries to ~8 MB)


def _slab(shape: Sequence[int]) -> int:
    """Slices of axis 0 per chunk so that one chunk holds about ``_SLAB_VOXELS`` voxels."""
    return max(1, _SLAB_VOXELS // max(1, int(shape[1]) * int(shape[2])))


@dataclass(frozen=True)
class PreprocessState:
    """Everything ``restore`` needs to map a network-space array to the original grid."""

    original_shape: tuple[int, int, int]
    affine: np.ndarray
    to_ras: np.ndarray  # nibabel orientation transform original -> RAS
    bbox: tuple[tuple[int, int], ...]  # crop (start, stop) per network axis (z, y, x)
    pad_below: tuple[int, int, int]
    network_shape: tuple[int, int, int]  # shape after padding
    mean: float
    std: float

    @property
    def uncropped_shape(self) -> tuple[int, int, int]:
        """Shape of the reoriented, axis-reversed image before cropping."""
        ras = apply_orientation(np.empty(self.original_shape, dtype=np.uint8), self.to_ras).shape
        return (ras[2], ras[1], ras[0])

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        return tuple(stop - start for start, stop in self.bbox)  # type: ignore[return-value]


@dataclass
class Preprocessed:
    """The network-space image (float32, z-y-x, padded) and the state to invert it."""

    data: np.ndarray
    state: PreprocessState


def load_image(image: ImageLike) -> nib.spatialimages.SpatialImage:
    """Open a NIfTI (or any nibabel format) lazily; the voxel data is read later, once."""
    if isinstance(image, nib.spatialimages.SpatialImage):
        return image
    return open_image(image, "image", UnreadableImageError)


def check_geometry(img: nib.spatialimages.SpatialImage) -> tuple[int, int, int]:
    """Return the 3-D shape, or raise the shared volume check's typed error (``voxtell.io.volume``)."""
    return check_header(img.shape, img.affine, img.get_data_dtype(), "image").shape


def _raw_array(img: nib.spatialimages.SpatialImage, shape: tuple[int, int, int]) -> np.ndarray:
    """Stored voxel values (scaled, but in their own dtype: int16 stays int16)."""
    raw = read_voxels(img, shape, "image", UnreadableImageError)
    if raw.dtype.kind == "c" or raw.dtype.fields is not None:
        raise ImageDimensionError(f"image voxels have type {raw.dtype}; give a scalar (grey-value) image")
    check_voxels(raw, "image")  # the same rule convert applied to the image it wrote
    return raw


def _nonzero_bbox(net: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Bounding box of nonzero voxels, computed slab by slab (no full boolean volume)."""
    z_any = np.zeros(net.shape[0], dtype=bool)
    yx_any = np.zeros(net.shape[1:], dtype=bool)
    step = _slab(net.shape)
    for z0 in range(0, net.shape[0], step):
        nz = net[z0 : z0 + step] != 0
        z_any[z0 : z0 + step] = nz.any(axis=(1, 2))
        yx_any |= nz.any(axis=0)
    if not z_any.any():
        return None
    bbox = []
    for proj in (z_any, yx_any.any(axis=1), yx_any.any(axis=0)):
        idx = np.flatnonzero(proj)
        bbox.append((int(idx[0]), int(idx[-1]) + 1))
    return tuple(bbox)


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std in float64, slab by slab; non-finite voxels raise."""
    n = x.size
    total = 0.0
    step = _slab(x.shape)
    for z0 in range(0, x.shape[0], step):
        total += float(x[z0 : z0 + step].sum(dtype=np.float64))
    if not np.isfinite(total):
        raise NonFiniteImageError("image contains NaN or infinite voxels; fix or mask them before segmentation")
    mean = total / n
    ss = 0.0
    for z0 in range(0, x.shape[0], step):
        d = x[z0 : z0 + step].astype(np.float64)
        d -= mean
        flat = d.ravel()
        ss += float(np.dot(flat, flat))
    return mean, float(np.sqrt(ss / n))


def preprocess(image: ImageLike, patch_size: Sequence[int]) -> tuple[nib.spatialimages.SpatialImage, Preprocessed]:
    """Load ``image`` and bring it into network space; see the module docstring."""
    img = load_image(image)
    shape = check_geometry(img)
    to_ras = ornt_transform(io_orientation(img.affine), _RAS)
    raw = _raw_array(img, shape)
    net = apply_orientation(raw, to_ras).transpose(2, 1, 0)  # views only
    bbox = _nonzero_bbox(net)
    if bbox is None:
        raise EmptyImageError("every voxel of the image is zero; check the conversion of this study")
    cropped = tuple(b - a for a, b in bbox)
    padded = tuple(max(c, int(p)) for c, p in zip(cropped, patch_size))
    pad_below = tuple((p - c) // 2 for c, p in zip(cropped, padded))
    out = np.zeros(padded, dtype=np.float32)
    inner = out[tuple(slice(b, b + c) for b, c in zip(pad_below, cropped))]
    inner[...] = net[tuple(slice(a, b) for a, b in bbox)]
    del raw, net
    mean, std = _mean_std(inner)
    inner -= np.float32(mean)
    inner /= np.float32(max(std, 1e-8))
    state = PreprocessState(
        original_shape=shape,
        affine=np.asarray(img.affine, dtype=np.float64).copy(),
        to_ras=to_ras,
        bbox=bbox,
        pad_below=pad_below,  # type: ignore[arg-type]
        network_shape=padded,  # type: ignore[arg-type]
        mean=mean,
        std=std,
    )
    log.debug("preprocessed %s -> crop %s, network shape %s", shape, bbox, padded)
    return img, Preprocessed(out, state)


def restore(array: np.ndarray, state: PreprocessState) -> np.ndarray:
    """Map a network-space volume (mask or probability) back onto the original grid.

    Undoes padding, crop, axis reversal and reorientation; voxels outside the crop are 0.
    The result may be a non-contiguous view of a fresh array of the original shape.
    """
    if tuple(array.shape) != tuple(state.network_shape):
        raise ValueError(f"array shape {array.shape} is not the network shape {state.network_shape}")
    inner = array[tuple(slice(b, b + c) for b, c in zip(state.pad_below, state.cropped_shape))]
    full = np.zeros(state.uncropped_shape, dtype=array.dtype)
    full[tuple(slice(a, b) for a, b in state.bbox)] = inner
    from_ras = ornt_transform(_RAS, io_orientation(state.affine))
    return apply_orientation(full.transpose(2, 1, 0), from_ras)
