"""Image conventions (RAS closest canonical, axes reversed, crop, z-score, pad) and their inverse."""

from __future__ import annotations

import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from voxtell.inference.errors import (
    AffineError,
    EmptyImageError,
    ImageDimensionError,
    NonFiniteImageError,
    UnreadableImageError,
)
from voxtell.inference.preprocessing import preprocess, restore

PATCH = (16, 16, 16)


def ras_phantom() -> tuple[np.ndarray, np.ndarray]:
    """RAS-stored phantom: body (10) with an L-shaped object (100) on the patient's left.

    In RAS+ world coordinates the patient's left is -x, i.e. low voxel index i here.
    """
    data = np.zeros((37, 29, 23), dtype=np.int16)
    data[4:33, 3:26, 2:21] = 10
    data[6:12, 8:20, 5:15] = 100  # left side (low i)
    data[6:16, 8:11, 5:15] = 100  # foot of the L, toward the midline, posterior (low j)
    affine = np.array([[2.0, 0, 0, -37.0], [0, 2.5, 0, -30.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])
    return data, affine


def flipped(data: np.ndarray, affine: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Same voxels stored with ``axes`` reversed (e.g. RAS -> LPS for axes (0, 1))."""
    flip = np.eye(4)
    for ax in axes:
        flip[ax, ax] = -1
        flip[ax, 3] = data.shape[ax] - 1
    return np.flip(data, axes).copy(), affine @ flip


def permuted(data: np.ndarray, affine: np.ndarray, order: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    perm = np.eye(4)[:, list(order) + [3]]
    return data.transpose(order).copy(), affine @ perm


def oblique(data: np.ndarray, affine: np.ndarray, degrees: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a), 0, 0], [np.sin(a), np.cos(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return data.copy(), rot @ affine


STORAGES = {
    "RAS": lambda d, a: (d.copy(), a),
    "LPS": lambda d, a: flipped(d, a, (0, 1)),
    "LAS": lambda d, a: flipped(d, a, (0,)),
    "SPR": lambda d, a: permuted(*flipped(d, a, (0, 1)), (2, 1, 0)),
}


@pytest.mark.parametrize("storage", sorted(STORAGES))
def test_network_space_is_ras_with_axes_reversed(storage):
    data, affine = ras_phantom()
    ref_img, ref = preprocess(nib.Nifti1Image(data, affine), PATCH)
    img, pre = preprocess(nib.Nifti1Image(*STORAGES[storage](data, affine)), PATCH)
    np.testing.assert_array_equal(pre.data, ref.data)
    # Network axes are (z, y, x) of the RAS image: axis 2 runs toward the patient's right,
    # so the object on the patient's left lies at low axis-2 indices of the crop.
    bright = pre.data > pre.data.max() / 2
    cols = np.flatnonzero(bright.any(axis=(0, 1)))
    assert cols.max() < pre.data.shape[2] / 2
    assert pre.data.shape[0] == 19  # z extent of the body (S-I), first network axis


@pytest.mark.parametrize("storage", sorted(STORAGES) + ["oblique"])
def test_restore_inverts_preprocess(storage):
    data, affine = ras_phantom()
    stored, aff = oblique(data, affine) if storage == "oblique" else STORAGES[storage](data, affine)
    _, pre = preprocess(nib.Nifti1Image(stored, aff), PATCH)
    back = restore(pre.data > pre.data.max() / 2, pre.state)
    assert back.shape == stored.shape
    np.testing.assert_array_equal(back, stored == 100)


def test_crop_zscore_and_pad():
    data = np.zeros((40, 30, 8), dtype=np.float32)
    data[5:35, 4:20, 1:7] = np.random.default_rng(0).normal(50, 7, size=(30, 16, 6))
    data[10, 10, 3] = 0  # a hole inside the body does not change the box
    _, pre = preprocess(nib.Nifti1Image(data, np.eye(4)), PATCH)
    s = pre.state
    assert s.bbox == ((1, 7), (4, 20), (5, 35))  # (z, y, x) of the RAS image
    assert pre.data.shape == (16, 16, 30)  # z padded to the patch
    assert s.pad_below == (5, 0, 0)
    inner = pre.data[5:11]
    assert abs(float(inner.mean())) < 1e-5 and abs(float(inner.std()) - 1) < 1e-4
    assert not pre.data[:5].any() and not pre.data[11:].any()  # padding stays zero


def test_integer_image_is_not_copied_more_than_once():
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(160, 160, 64), dtype=np.int16)
    img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1]))
    tracemalloc.start()
    preprocess(img, PATCH)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 * data.size + 24 * 2**20  # one float32 network image plus ~8 MB slabs


def test_typed_errors(tmp_path):
    good = np.ones((20, 20, 20), dtype=np.float32)
    with pytest.raises(ImageDimensionError):
        preprocess(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), PATCH)
    with pytest.raises(ImageDimensionError):
        preprocess(nib.Nifti1Image(np.ones((20, 20, 20, 2), np.float32), np.eye(4)), PATCH)
    nan = good.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(NonFiniteImageError):
        preprocess(nib.Nifti1Image(nan, np.eye(4)), PATCH)
    inf = good.copy()
    inf[0, 0, 0] = -np.inf
    with pytest.raises(NonFiniteImageError):
        preprocess(nib.Nifti1Image(inf, np.eye(4)), PATCH)
    with pytest.raises(EmptyImageError):
        preprocess(nib.Nifti1Image(np.zeros((20, 20, 20), np.int16), np.eye(4)), PATCH)
    hdr = nib.Nifti1Header()  # nibabel refuses to build such an image, but files exist
    hdr.set_data_shape(good.shape)
    hdr.set_data_dtype(np.float32)
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    nib.save(nib.Nifti1Image(good, None, header=hdr), tmp_path / "singular.nii.gz")
    with pytest.raises(AffineError):
        preprocess(tmp_path / "singular.nii.gz", PATCH)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a nifti file")
    with pytest.raises(UnreadableImageError):
        preprocess(bad, PATCH)
    with pytest.raises(UnreadableImageError):
        preprocess(tmp_path / "missing.nii.gz", PATCH)
    # a trailing singleton 4th axis is one volume
    _, pre = preprocess(nib.Nifti1Image(good[..., None], np.eye(4)), PATCH)
    assert pre.state.original_shape == (20, 20, 20)


def test_truncated_gzip_is_unreadable(tmp_path, totalseg_dir):
    raw = (totalseg_dir / "example_ct_sm.nii.gz").read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UnreadableImageError):
        preprocess(bad, PATCH)


def test_preprocessing_applies_the_shared_volume_rule():
    """One owner (voxtell.io.volume): the predictor raises its errors for what convert refuses."""
    from voxtell.io import errors as io_errors
    from voxtell.io.volume import DEFAULT_LIMITS

    assert ImageDimensionError is io_errors.VolumeShapeError and AffineError is io_errors.VolumeGeometryError
    assert NonFiniteImageError is io_errors.NonFiniteVolumeError and EmptyImageError is io_errors.EmptyVolumeError
    one_slice = nib.Nifti1Image(np.ones((20, 20, 1), np.float32), np.eye(4))
    with pytest.raises(ImageDimensionError, match=f"at least {DEFAULT_LIMITS.min_size} voxels"):
        preprocess(one_slice, PATCH)
    huge_voxels = nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.diag([1.0, 1.0, 1e6, 1.0]))
    with pytest.raises(AffineError, match="voxel sizes"):
        preprocess(huge_voxels, PATCH)
