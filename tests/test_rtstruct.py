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
from voxtell.io.rtstruct import (
    FrameOfReferenceMismatchError,
    StructureSet,
    match_reference,
    rasterise_contours,
    rasterise_rtstruct,
    slugify,
)

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
    assert report["reference_check"] == "frame_match" and report["warnings"] == []
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
    a = write_dicom_series(np.full((8, 8, 12), -1000.0), (1, 1, 2), tmp_path / "a")  # all-zero images are refused
    b = write_dicom_series(np.full((8, 8, 12), -1000.0), (1, 1, 2), tmp_path / "b")
    rs = write_rtstruct(tmp_path / "RS.dcm", b, {"Liver": [_contour(np.diag([-1.0, -1.0, 2.0, 1.0]), 2, 1.5, 4.5, 1.5, 4.5)]})
    conv = convert_study(tmp_path / "a", tmp_path / "conv_a")
    assert conv.series_uid == a.series_uid
    with pytest.raises(FrameOfReferenceMismatchError, match="frame of reference"):
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
    series = write_dicom_series(np.full((8, 8, 6), -1000.0), (1, 1, 2), tmp_path / "s")
    rs = write_rtstruct(tmp_path / "RS.dcm", series, {"a_3": [], "A": [], "a": []})
    image = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.int16), np.diag([-1.0, -1.0, 2.0, 1.0])), image)
    masks = rasterise_rtstruct(rs, image, tmp_path / "rois")
    files = [m.file for m in masks]
    assert files == ["a_3.nii.gz", "a.nii.gz", "a_3_2.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "rois").glob("*.nii.gz")) == sorted(files)


# ----------------------------------------------------------------- frame of reference (issue 22, 19)
MIRP_CT = Path(__file__).parent / "data" / "mirp_sts_001" / "CT"


def _edit(path: Path, out: Path, **changes) -> Path:
    """Copy an RTSTRUCT with header changes: value None deletes the element (nested keys by name)."""
    import pydicom

    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if key == "frame":
            for fr in ds.ReferencedFrameOfReferenceSequence:
                fr.FrameOfReferenceUID = value
            for roi in ds.StructureSetROISequence:
                roi.ReferencedFrameOfReferenceUID = value
            if value is None:
                del ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
                for roi in ds.StructureSetROISequence:
                    del roi.ReferencedFrameOfReferenceUID
        elif key == "series" and value is None:
            del ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence
        elif key == "series":
            ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[
                0
            ].SeriesInstanceUID = value
    ds.save_as(out)
    return out


@pytest.mark.parametrize(
    "frames, series, image_frame, image_series, outcome, n_warnings",
    [
        (("F1",), ("S1",), "F1", "S1", "frame_match", 0),
        (("F1",), ("S0",), "F1", "S1", "frame_match", 1),  # re-exported series of the same frame
        ((), ("S1",), "F1", "S1", "series_match", 0),  # no frame: series decide
        ((), (), "", "", "unchecked", 1),  # NIfTI input: nothing to check against
    ],
)
def test_match_reference_outcomes(frames, series, image_frame, image_series, outcome, n_warnings) -> None:
    got, warnings = match_reference(StructureSet([], frames, series), image_series, image_frame)
    assert got == outcome and len(warnings) == n_warnings


@pytest.mark.parametrize(
    "frames, series, image_frame, image_series",
    [
        (("F2",), ("S1",), "F1", "S1"),  # another frame, even with the image's series
        (("F2",), (), "F1", "S1"),  # another frame that names no series (issue 19: was drawn 'unchecked')
        ((), ("S0",), "F1", "S1"),  # no frame, another series
        ((), (), "F1", "S1"),  # neither: nothing ties it to this scan
        (("F2",), (), "", "S1"),  # image without a recorded frame, RTSTRUCT without series
    ],
)
def test_match_reference_refusals(frames, series, image_frame, image_series) -> None:
    with pytest.raises(FrameOfReferenceMismatchError):
        match_reference(StructureSet([], frames, series), image_series, image_frame)
    outcome, warnings = match_reference(StructureSet([], frames, series), image_series, image_frame, enforce=False)
    assert outcome == "unchecked" and any("reference check is off" in w for w in warnings)


def test_same_frame_other_series_drawn_with_warning_other_frame_refused(tmp_path: Path) -> None:
    """Synthetic study: the RTSTRUCT is re-pointed at another series of the frame, then at another frame."""
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    series = write_dicom_series(np.full((10, 10, 12), -1000.0), affine, tmp_path / "study")
    rs = write_rtstruct(tmp_path / "RS.dcm", series, {"GTV": [_contour(affine, k, 1.5, 5.5, 2.5, 6.5) for k in (4, 5)]})
    conv = convert_study(tmp_path / "study", tmp_path / "conv")
    other_series = _edit(rs, tmp_path / "RS_other_series.dcm", series="1.2.3.4.5.6")
    masks = rasterise_rtstruct(other_series, conv.image_path, tmp_path / "rois")
    assert masks[0].voxel_count == 2 * 4 * 4
    assert any("same frame of reference" in w for w in masks[0].warnings)
    report = json.loads((tmp_path / "rois" / "rois.json").read_text())
    assert report["reference_check"] == "frame_match" and len(report["warnings"]) == 1

    for variant in (
        _edit(rs, tmp_path / "RS_other_frame.dcm", frame="1.2.3.4.9"),
        _edit(_edit(rs, tmp_path / "tmp.dcm", frame="1.2.3.4.9"), tmp_path / "RS_other_frame_no_series.dcm", series=None),
        _edit(rs, tmp_path / "RS_no_frame_no_series.dcm", frame=None, series=None),
    ):
        with pytest.raises(FrameOfReferenceMismatchError):
            rasterise_rtstruct(variant, conv.image_path, tmp_path / "rois_bad")
    # no frame in the RTSTRUCT: the series check decides
    no_frame = _edit(rs, tmp_path / "RS_no_frame.dcm", frame=None)
    assert rasterise_rtstruct(no_frame, conv.image_path, tmp_path / "rois_nf")[0].voxel_count == 32
    with pytest.raises(FrameOfReferenceMismatchError, match="refers to series"):
        rasterise_rtstruct(_edit(no_frame, tmp_path / "RS_nf_os.dcm", series="1.2.3.4.5.6"), conv.image_path, tmp_path / "x")


def test_contour_partly_outside_is_reported_per_roi(tmp_path: Path) -> None:
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    series = write_dicom_series(np.full((10, 10, 12), -1000.0), affine, tmp_path / "study")
    rs = write_rtstruct(
        tmp_path / "RS.dcm",
        series,
        {"inside": [_contour(affine, 3, 1.5, 4.5, 1.5, 4.5)], "edge": [_contour(affine, 3, 6.5, 14.5, 1.5, 4.5)]},
    )
    conv = convert_study(tmp_path / "study", tmp_path / "conv")
    inside, edge = rasterise_rtstruct(rs, conv.image_path, tmp_path / "rois")
    assert inside.warnings == () and inside.voxel_count == 9
    assert any("extends outside the image" in w for w in edge.warnings) and edge.voxel_count == 3 * 3


def test_real_planning_ct_rtstruct_of_reexported_series(tmp_path: Path) -> None:
    """MIRP STS_001 CT: the clinical RTSTRUCT names another series of the same frame; drawn, warned, exact."""
    conv = convert_study(MIRP_CT / "dicom" / "image", tmp_path / "conv")
    record = json.loads(conv.series_json_path.read_text())
    assert record["frame_of_reference_uid"] == "1.3.6.1.4.1.14519.5.2.1.5168.1900.316167340799089327122304118088"
    (roi,) = rasterise_rtstruct(MIRP_CT / "dicom" / "mask" / "RS.dcm", conv.image_path, tmp_path / "rois")
    assert roi.name == "GTV_Mass_CT" and any("same frame of reference" in w for w in roi.warnings)
    ours = nib.load(tmp_path / "rois" / roi.file)
    curated = nib.load(MIRP_CT / "nifti" / "mask" / "mask.nii.gz")
    # the curated mask may be stored in another axis order: compare in world space via the index map
    from voxtell.io.dicom_ref import reorient_to_grid

    truth = reorient_to_grid(np.asanyarray(curated.dataobj) > 0, curated.affine, ours.affine, ours.shape)
    got = np.asanyarray(ours.dataobj) > 0
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    assert dice >= 0.99, dice
    assert roi.voxel_count == pytest.approx(int(truth.sum()), rel=0.01)  # curated: 117145 voxels, 365.3 mL


@pytest.mark.parametrize(
    "mutate",
    [
        lambda ds: setattr(ds.ROIContourSequence[0].ContourSequence[0]["ContourData"], "_value", ["abc", "1", "2"]),
        lambda ds: setattr(ds.StructureSetROISequence[0]["ROINumber"], "_value", "x"),
        lambda ds: delattr(ds.ROIContourSequence[0], "ReferencedROINumber"),
        lambda ds: setattr(ds.ROIContourSequence[0].ContourSequence[0], "ContourData", ["1", "2"]),
        lambda ds: setattr(ds, "StructureSetROISequence", []) or setattr(ds, "ROIContourSequence", []),
        lambda ds: setattr(ds, "Modality", "SEG"),
    ],
    ids=["text-coordinates", "text-roi-number", "no-roi-reference", "not-triples", "no-rois", "wrong-modality"],
)
def test_hostile_rtstruct_values_give_typed_errors(tmp_path: Path, mutate) -> None:
    import pydicom

    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    series = write_dicom_series(np.full((8, 8, 12), -1000.0), affine, tmp_path / "s")
    rs = write_rtstruct(tmp_path / "RS.dcm", series, {"GTV": [_contour(affine, 3, 1.5, 4.5, 1.5, 4.5)]})
    ds = pydicom.dcmread(rs)
    with pydicom.config.disable_value_validation():  # write the hostile value as a broken exporter would
        mutate(ds)
        ds.save_as(rs)
    with pytest.raises(RTStructError):
        rasterise_rtstruct(rs, convert_study(tmp_path / "s", tmp_path / "conv").image_path, tmp_path / "rois")


def test_non_finite_contour_is_skipped_with_a_warning() -> None:
    affine = np.eye(4)
    bad = np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 0.0], [1.0, 1.0, 0.0]])
    mask, warnings = rasterise_contours([bad], affine, (4, 4, 2))
    assert not mask.any() and "non-finite" in warnings[0]
