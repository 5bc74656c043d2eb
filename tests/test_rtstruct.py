"""RTSTRUCT contours rasterise onto the converted grid: orientation, holes, names, reference check."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxtell.cli import main
from voxtell.io.convert import convert_study
from voxtell.io.dicom_write import write_dicom_series, write_rtstruct
from voxtell.io.errors import RTStructError
from voxtell.io.rtstruct import rasterise_contours, rasterise_rtstruct, slugify

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _contour(affine: np.ndarray, k: int, i0: float, i1: float, j0: float, j1: float) -> np.ndarray:
    """Rectangle at voxel coordinates (half-integers = voxel borders) of slice k, in LPS mm."""
    corners = np.array([[i0, j0, k, 1], [i1, j0, k, 1], [i1, j1, k, 1], [i0, j1, k, 1]], float)
    return (_LPS @ affine @ corners.T).T[:, :3]


OBLIQUE = np.array([[-0.8, 0.1, 0.0, 20.0], [0.1, 0.8, 0.0, -10.0], [0.0, 0.0, 2.0, 5.0], [0, 0, 0, 1]])
SAGITTAL = np.array([[0, 0, -1.5, 40.0], [0.8, 0, 0, -60.0], [0, -0.9, 0, 70.0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [np.diag([-1.0, -0.9, 2.0, 1.0]), OBLIQUE, SAGITTAL], ids=["axial", "oblique", "sagittal"])
def test_rtstruct_matches_bright_region_after_conversion(affine: np.ndarray, tmp_path: Path) -> None:
    """An asymmetric box with a hole, drawn in patient space, lands exactly on the voxels written bright."""
    shape = (20, 16, 12)
    volume = np.zeros(shape)
    truth = np.zeros(shape, bool)
    for k in (3, 4, 5):
        truth[2:9, 3:7, k] = True  # asymmetric in i and j: a left/right or A/P flip would miss
    truth[4:6, 4:6, 4] = False  # hole on the middle slice
    volume[truth] = 500.0
    series = write_dicom_series(volume, affine, tmp_path / "study")
    contours = [_contour(affine, k, 1.5, 8.5, 2.5, 6.5) for k in (3, 4, 5)]
    contours.append(_contour(affine, 4, 3.5, 5.5, 3.5, 5.5))
    rs = write_rtstruct(tmp_path / "RS.dcm", series, {"GTV 1+2": contours, "Empty": []})
    converted = convert_study(tmp_path / "study", tmp_path / "conv")
    masks = rasterise_rtstruct(rs, converted.image_path, tmp_path / "rois")
    assert [m.file for m in masks] == ["gtv_1_2.nii.gz", "empty.nii.gz"]
    mask_img = nib.load(tmp_path / "rois" / "gtv_1_2.nii.gz")
    image = nib.load(converted.image_path)
    assert mask_img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask_img.affine, image.affine, atol=1e-6)
    expected = image.get_fdata() == 500.0
    np.testing.assert_array_equal(np.asanyarray(mask_img.dataobj).astype(bool), expected)
    assert masks[0].voxel_count == int(truth.sum())
    report = json.loads((tmp_path / "rois" / "rois.json").read_text())
    assert report["reference_check"] == "match"
    assert report["rois"][0]["name"] == "GTV 1+2"
    assert report["rois"][1]["voxel_count"] == 0


def test_even_odd_nested_contours() -> None:
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    ring = [_contour(affine, 0, -0.5, 9.5, -0.5, 9.5), _contour(affine, 0, 1.5, 7.5, 1.5, 7.5), _contour(affine, 0, 3.5, 5.5, 3.5, 5.5)]
    mask, warnings = rasterise_contours(ring, affine, (10, 10, 1))
    expected = np.zeros((10, 10), bool)
    expected[:, :] = True
    expected[2:8, 2:8] = False
    expected[4:6, 4:6] = True  # island inside the hole
    assert warnings == []
    np.testing.assert_array_equal(mask[:, :, 0], expected)


def test_triangle_and_off_grid_contours() -> None:
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    tri = (_LPS @ affine @ np.array([[0, 0, 1, 1], [6, 0, 1, 1], [0, 6, 1, 1]], float).T).T[:, :3]
    outside = _contour(affine, 7, 0.5, 2.5, 0.5, 2.5)
    mask, warnings = rasterise_contours([tri, outside], affine, (8, 8, 4))
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    inside = (i > 0) & (j > 0) & (i + j < 6)  # strictly inside; border centres follow the half-open rule
    border = (i >= 0) & (j >= 0) & (i + j <= 6)
    got = mask[:, :, 1]
    assert np.all(got[inside]) and not np.any(got[~border])
    assert mask[:, :, [0, 2, 3]].sum() == 0
    assert any("outside the image" in w for w in warnings)


def test_reference_mismatch_and_cli(tmp_path: Path) -> None:
    a = write_dicom_series(np.zeros((8, 8, 12)), (1, 1, 2), tmp_path / "a")
    b = write_dicom_series(np.zeros((8, 8, 12)), (1, 1, 2), tmp_path / "b")
    rs = write_rtstruct(tmp_path / "RS.dcm", b, {"Liver": [_contour(np.diag([-1.0, -1.0, 2.0, 1.0]), 2, 1.5, 4.5, 1.5, 4.5)]})
    conv = convert_study(tmp_path / "a", tmp_path / "conv_a")
    assert conv.series_uid == a.series_uid
    with pytest.raises(RTStructError, match="refers to series"):
        rasterise_rtstruct(rs, conv.image_path, tmp_path / "rois")
    assert main(["rtstruct", str(rs), "--image", str(conv.image_path), "-o", str(tmp_path / "rois")]) == 1
    assert main(["rtstruct", str(rs), "--image", str(conv.image_path), "-o", str(tmp_path / "rois"), "--no-reference-check"]) == 0
    assert nib.load(tmp_path / "rois" / "liver.nii.gz").get_fdata().sum() == 9


def test_slugify() -> None:
    assert slugify("GTV 1+2") == "gtv_1_2"
    assert slugify("  Rectum (PRV) ") == "rectum_prv"
    assert slugify("###") == ""
    assert slugify("Lèvre sup.") == "levre_sup"  # accents are transliterated, as in prompt ids


def test_roi_names_that_slug_alike_get_distinct_files(tmp_path: Path) -> None:
    """'A' and 'a' collide; the fallback name 'a_3' is already taken by an ROI called 'a_3'."""
    series = write_dicom_series(np.zeros((8, 8, 6)), (1, 1, 2), tmp_path / "s")
    rs = write_rtstruct(tmp_path / "RS.dcm", series, {"a_3": [], "A": [], "a": []})
    image = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.int16), np.diag([-1.0, -1.0, 2.0, 1.0])), image)
    masks = rasterise_rtstruct(rs, image, tmp_path / "rois")
    files = [m.file for m in masks]
    assert files == ["a_3.nii.gz", "a.nii.gz", "a_3_2.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "rois").glob("*.nii.gz")) == sorted(files)
