"""NIfTI helpers shared by every stage: load with typed errors, save atomically."""

from __future__ import annotations

import os
from pathlib import Path

from voxtell.io.atomic import atomic_path
from voxtell.io.errors import NiftiError


def load_nifti(path: str | os.PathLike):
    """Load a NIfTI image (header now, data lazily); ``NiftiError`` says what is wrong."""
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise NiftiError(f"NIfTI file {p} does not exist; run the convert step first or fix the path")
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors ...
        raise NiftiError(f"cannot read NIfTI {p}: {exc}; the file is damaged or not NIfTI, regenerate it") from exc
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
