"""NIfTI helpers shared by every stage: open and read with typed errors, save atomically.

Each stage reports a bad file with its own error class (``MissingImageError`` in stats,
``UnreadableImageError`` in inference, ``NiftiError`` here), so the helpers take the class
to raise; the checks and messages stay in one place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from voxtell.errors import VoxTellError
from voxtell.io.atomic import atomic_path
from voxtell.io.errors import NiftiError

#: File-name suffixes of images, longest first (``.nii.gz`` before ``.gz``-less ones).
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".img", ".hdr")


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``/a/CT_001.nii.gz`` -> ``CT_001``."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def open_image(path: str | os.PathLike, what: str = "image", error: type[VoxTellError] = NiftiError):
    """Open any nibabel image lazily (header now, voxel data later).

    A missing or unreadable file raises ``error`` naming ``what`` and the path, so the
    cohort records a status row instead of a traceback.
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {p} does not exist; check the path (or rerun the stage that writes it)")
    try:
        return nib.load(str(p))
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors ...
        raise error(
            f"cannot read {what} {p} ({type(exc).__name__}: {exc}); the file is damaged or not NIfTI, regenerate it"
        ) from exc


def read_voxels(img, shape: Sequence[int], what: str = "image", error: type[VoxTellError] = NiftiError) -> Any:
    """The stored voxel values (scaled, own dtype) reshaped to ``shape``; truncation raises ``error``."""
    import numpy as np

    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip, short file
        raise error(
            f"{what} {img.get_filename() or ''} is truncated or corrupt ({type(exc).__name__}: {exc}); regenerate it"
        ) from exc
    shape = tuple(int(s) for s in shape)
    return arr.reshape(shape, order="A") if arr.shape != shape else arr


def load_nifti(path: str | os.PathLike):
    """Load a NIfTI image (header now, data lazily); ``NiftiError`` says what is wrong."""
    import nibabel as nib

    p = Path(path)
    img = open_image(p, "NIfTI file")
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{p} is a {type(img).__name__}, not NIfTI; convert it to .nii.gz first")
    if len(img.shape) < 3:
        raise NiftiError(f"NIfTI {p} has shape {img.shape}; a 3-D volume is required")
    return img


def save_nifti_atomic(img, path: str | os.PathLike) -> Path:
    """Write ``img`` to ``path`` under a temporary name, then rename; returns the path."""
    import nibabel as nib

    final = Path(path)
    with atomic_path(final) as tmp:
        nib.save(img, str(tmp))
    return final
