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
        if p.exists():  # a fifo, socket or device: opening it could block forever
            raise error(f"{what} {p} is not a regular file (a fifo, socket, device or folder); give the image file")
        raise error(f"{what} {p} does not exist; check the path (or rerun the stage that writes it)")
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib errors ...
        raise error(
            f"cannot read {what} {p} ({type(exc).__name__}: {exc}); the file is damaged or not NIfTI, regenerate it"
        ) from exc
    check_claimed_size(img, what, error)
    return img


#: Deflate cannot compress better than about 1032:1, so a gzip file of n bytes holds at most
#: this many times n bytes (plus the gzip header); a header claiming more is false.
MAX_GZIP_RATIO = 1032


def check_claimed_size(img, what: str = "image", error: type[VoxTellError] = NiftiError) -> None:
    """Refuse a header whose shape and data type claim more bytes than its file can hold.

    Runs before any voxel is read, so a 104-byte file claiming a 1000^3 volume fails at
    once instead of allocating what it claims. Uncompressed files must hold offset plus
    data; gzip files cannot exceed deflate's best ratio. In-memory images are not checked.
    """
    import numpy as np

    holder = getattr(img, "file_map", {}).get("image")
    fname = getattr(holder, "filename", None)
    if not fname or not os.path.isfile(fname):
        return  # in memory, or a format that keeps its data elsewhere
    try:
        shape = tuple(int(s) for s in img.shape)
        itemsize = np.dtype(img.get_data_dtype()).itemsize
        offset = int(getattr(img.dataobj, "offset", 0) or 0)
    except Exception as exc:  # a header nibabel loaded but cannot describe
        raise error(f"{what} header is malformed ({type(exc).__name__}: {exc}); regenerate the file") from exc
    if any(s < 0 for s in shape):
        raise error(f"{what} {fname} claims a negative size {shape}; the header is damaged, regenerate the file")
    claimed = offset + itemsize * int(np.prod(np.asarray(shape, dtype=np.float64)))
    size = os.path.getsize(fname)
    gz = str(fname).endswith(".gz")
    limit = size * MAX_GZIP_RATIO + 1024 if gz else size
    if claimed > limit:
        held = f"at most {limit:.3g} bytes uncompressed" if gz else f"{size} bytes"
        raise error(
            f"{what} {fname} claims shape {shape} of {np.dtype(img.get_data_dtype())} ({claimed:.3g} bytes) "
            f"but the file holds {held}; the header is wrong or the file is truncated: regenerate it"
        )


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
    return _reshaped(arr, shape, img, what, error)


def read_stored_voxels(
    img, shape: Sequence[int], what: str = "image", error: type[VoxTellError] = NiftiError
) -> tuple[Any, float, float]:
    """The stored (unscaled) voxel values with the header's slope and intercept.

    Checks need only the range, which scales linearly: reading the stored values keeps an
    int16 CT at two bytes a voxel instead of float64's eight.
    """
    import numpy as np

    proxy = img.dataobj
    try:
        if hasattr(proxy, "get_unscaled"):
            arr = proxy.get_unscaled()
            slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
        else:
            arr, slope, inter = np.asanyarray(proxy), 1.0, 0.0
    except Exception as exc:  # truncated gzip, short file
        raise error(
            f"{what} {img.get_filename() or ''} is truncated or corrupt ({type(exc).__name__}: {exc}); regenerate it"
        ) from exc
    return _reshaped(arr, tuple(int(s) for s in shape), img, what, error), slope, inter


def _reshaped(arr, shape: tuple[int, ...], img, what: str, error: type[VoxTellError]):
    if arr.shape == shape:
        return arr
    try:
        return arr.reshape(shape, order="A")
    except ValueError as exc:
        raise error(f"{what} {img.get_filename() or ''} holds shape {arr.shape}, not {shape}; regenerate it") from exc


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
