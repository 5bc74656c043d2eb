"""Bad studies give a typed error and a status.json, never a traceback; the CLI exits 1."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from voxtell.cli import main
from voxtell.cohort.stage_convert import run_convert
from voxtell.errors import InputError
from voxtell.io.convert import convert_study
from voxtell.io.dicom_write import write_dicom_series, write_text_sr
from voxtell.io.errors import (
    CorruptDicomError,
    InconsistentSeriesError,
    MissingSlicesError,
    NoImageSeriesError,
    NoUsableSeriesError,
)


def _series(root: Path, n: int = 12, **kw):
    """A small CT with air and soft tissue (a constant or all-zero image is itself refused)."""
    volume = np.full((8, 8, n), -1000.0)
    volume[2:6, 2:6] = 40.0
    return write_dicom_series(volume, (1.0, 1.0, 2.0), root, **kw)


def _empty(root: Path) -> None:
    root.mkdir(parents=True)


def _no_images(root: Path) -> None:
    write_text_sr(root / "sr.dcm", "dose report")
    (root / "a.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("text")


def _truncated_pixels(root: Path) -> None:
    files = _series(root).files
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) - 40])


def _truncated_header(root: Path) -> None:
    files = _series(root).files
    files[3].write_bytes(files[3].read_bytes()[:300])


def _single_slice(root: Path) -> None:
    _series(root, n=1)


def _missing_slices(root: Path) -> None:
    files = _series(root).files
    files[4].unlink()
    files[5].unlink()


def _mixed_orientations(root: Path) -> None:
    axial = _series(root / "ax")
    sag = np.array([[0, 0, -1.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    write_dicom_series(
        np.zeros((8, 8, 6)), sag, root / "sag", series_uid=axial.series_uid, study_uid=axial.study_uid,
        frame_of_reference_uid=axial.frame_of_reference_uid, instance_numbers=range(13, 19),
    )


CASES = {
    "empty folder": (_empty, NoImageSeriesError),
    "no image series": (_no_images, NoImageSeriesError),
    "truncated pixel data": (_truncated_pixels, CorruptDicomError),
    "truncated header": (_truncated_header, CorruptDicomError),
    "single slice": (_single_slice, NoUsableSeriesError),
    "missing slices": (_missing_slices, MissingSlicesError),
    "mixed orientations": (_mixed_orientations, InconsistentSeriesError),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_study_typed_error_and_status(case: str, tmp_path: Path) -> None:
    make, error = CASES[case]
    make(tmp_path / "study")
    out = tmp_path / "out"
    with pytest.raises(error) as info:
        convert_study(tmp_path / "study", out)
    assert isinstance(info.value, InputError)
    assert not (out / "image.nii.gz").exists() and not (out / "series.json").exists()
    # the status record is the convert stage's (one status format for every stage)
    record = run_convert("s", out, dicom=str(tmp_path / "study"))
    assert record["status"] == "failed" and record["error_class"] == error.__name__
    assert json.loads((out / "status.json").read_text())["message"] == record["message"] == str(info.value)


def test_missing_study_folder(tmp_path: Path) -> None:
    with pytest.raises(NoImageSeriesError, match="does not exist"):
        convert_study(tmp_path / "nope", tmp_path / "out")


def test_failed_rerun_removes_stale_outputs(tmp_path: Path) -> None:
    files = _series(tmp_path / "study").files
    out = tmp_path / "out"
    convert_study(tmp_path / "study", out)
    assert (out / "image.nii.gz").exists()
    files[6].unlink()
    with pytest.raises(MissingSlicesError):
        convert_study(tmp_path / "study", out)
    assert not (out / "image.nii.gz").exists()


def test_cli_convert_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _series(tmp_path / "good")
    assert main(["convert", str(tmp_path / "good"), "-o", str(tmp_path / "out_good"), "--modality", "CT", "MR"]) == 0
    assert (tmp_path / "out_good" / "image.nii.gz").exists()
    (tmp_path / "bad").mkdir()
    assert main(["convert", str(tmp_path / "bad"), "-o", str(tmp_path / "out_bad")]) == 1
    status = json.loads((tmp_path / "out_bad" / "status.json").read_text())
    assert status["status"] == "failed" and status["error_class"] == "NoImageSeriesError"
    assert "Traceback" not in capsys.readouterr().err


def test_nifti_helpers_typed_errors_and_atomic_save(tmp_path: Path) -> None:
    import nibabel as nib

    from voxtell.io.errors import NiftiError
    from voxtell.io.nifti import load_nifti, save_nifti_atomic

    with pytest.raises(NiftiError, match="does not exist"):
        load_nifti(tmp_path / "missing.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(NiftiError, match="cannot read"):
        load_nifti(tmp_path / "broken.nii.gz")
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([2.0, 2.0, 2.0, 1.0]))
    path = save_nifti_atomic(img, tmp_path / "sub" / "x.nii.gz")
    assert [p.name for p in path.parent.iterdir()] == ["x.nii.gz"]  # no temporary left behind
    np.testing.assert_array_equal(np.asanyarray(load_nifti(path).dataobj), np.asanyarray(img.dataobj))


# ----------------------------------------------------------------------------- header values (issue 19)
import sys  # noqa: E402

import nibabel as nib  # noqa: E402

from voxtell.io.errors import (  # noqa: E402
    HeaderValueError,
    ImplausibleValuesError,
    NiftiError,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdicom import crop_series, header_volume, set_element  # noqa: E402

#: (keyword, value, vr, explicit, which files) -> error; values a damaged export holds.
HEADER_CASES = {
    "slope zero": ("RescaleSlope", "0", None, False, "all", HeaderValueError, "must be positive"),
    "slope negative": ("RescaleSlope", "-1", None, False, "all", HeaderValueError, "must be positive"),
    "slope absurd": ("RescaleSlope", "1e6", None, False, "all", HeaderValueError, r"scaled 1e\+06-fold"),
    "slope not a number": ("RescaleSlope", "abc", None, False, "all", HeaderValueError, "not a number"),
    "slope NaN": ("RescaleSlope", "NaN", None, False, "all", HeaderValueError, "not finite"),
    "intercept missing": ("RescaleIntercept", None, None, False, "all", HeaderValueError, "RescaleIntercept missing"),
    "intercept shifts HU": ("RescaleIntercept", "5000", None, False, "all", ImplausibleValuesError, "median"),
    "slope differs in one slice": ("RescaleSlope", "2", None, False, "one", HeaderValueError, "slice to slice"),
    "pixel spacing zero": ("PixelSpacing", ["0", "0"], None, False, "all", HeaderValueError, "PixelSpacing is 0"),
    "pixel spacing negative": ("PixelSpacing", ["-0.9", "0.9"], None, False, "all", HeaderValueError, "PixelSpacing"),
    "pixel spacing absurd": ("PixelSpacing", ["1e6", "1e6"], None, False, "all", HeaderValueError, "PixelSpacing"),
    "pixel spacing one value": ("PixelSpacing", "0.97", "DS", False, "all", HeaderValueError, "2 expected"),
    "position missing": ("ImagePositionPatient", None, None, False, "one", HeaderValueError, "ImagePositionPatient is missing"),
    "position absurd": ("ImagePositionPatient", ["1e30", "0", "0"], None, False, "one", HeaderValueError, "from the origin"),
    "orientation zero": ("ImageOrientationPatient", ["0"] * 6, None, False, "all", HeaderValueError, "unit vectors"),
    "rows wrong VR": ("Rows", "\x00\x01\x02", "US", True, "all", HeaderValueError, "Rows"),
    "rows too large": ("Rows", 4096, "US", False, "all", HeaderValueError, "pixel data holds"),
    "bits allocated 12": ("BitsAllocated", 12, "US", False, "all", HeaderValueError, "BitsAllocated is 12"),
    "samples per pixel 3": ("SamplesPerPixel", 3, "US", False, "all", HeaderValueError, "colour"),
    "pixel representation flipped": ("PixelRepresentation", 0, "US", False, "all", ImplausibleValuesError, "PixelRepresentation"),
    "frames zero": ("NumberOfFrames", "0", "IS", False, "all", HeaderValueError, "NumberOfFrames"),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_real_ct_with_bad_header_value_is_refused_by_name(case: str, tmp_path: Path) -> None:
    keyword, value, vr, explicit, which, error, words = HEADER_CASES[case]
    files = crop_series(tmp_path / "study")
    for f in files if which == "all" else files[5:6]:
        set_element(f, keyword, value, vr, explicit)
    out = tmp_path / "out"
    with pytest.raises(error, match=words) as info:
        convert_study(tmp_path / "study", out)
    assert not (out / "image.nii.gz").exists()
    status = run_convert("s", out, dicom=str(tmp_path / "study"))  # the stage's status record
    assert status["error_class"] == error.__name__ and status["message"] == str(info.value)


def test_real_ct_converts_with_hu_and_uids_from_headers(tmp_path: Path) -> None:
    """The undamaged crop: HU and spacing equal an independent computation; C2 fields present."""
    import pydicom

    files = crop_series(tmp_path / "study")
    result = convert_study(tmp_path / "study", tmp_path / "out")
    truth, spacing = header_volume(files)
    got = nib.as_closest_canonical(nib.load(result.image_path))
    want = nib.as_closest_canonical(nib.Nifti1Image(truth, got.affine))  # header volume is LPS-indexed like the DICOM
    assert np.allclose(np.sort(got.get_fdata().ravel()), np.sort(want.get_fdata().ravel()))
    np.testing.assert_allclose(sorted(result.spacing), sorted(spacing), rtol=1e-4)
    record = json.loads(result.series_json_path.read_text())
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert record["study_instance_uid"] == ds.StudyInstanceUID
    assert record["frame_of_reference_uid"] == ds.FrameOfReferenceUID
    assert result.study_instance_uid == ds.StudyInstanceUID
    assert record["warnings"] == list(result.warnings) == []


def test_ct_without_air_converts_with_a_warning(tmp_path: Path) -> None:
    crop_series(tmp_path / "study", rows=(100, 148), cols=(100, 148))  # inside the thigh
    result = convert_study(tmp_path / "study", tmp_path / "out")
    assert any(w.startswith("CT has no air") for w in result.warnings)
    assert json.loads(result.series_json_path.read_text())["warnings"] == list(result.warnings)


def test_mr_without_rescale_tags_is_fine(tmp_path: Path) -> None:
    """Rescale tags are required for CT only; an MR without them keeps its stored values."""
    ct = _series(tmp_path / "study", modality="MR")
    for f in ct.files:
        set_element(f, "RescaleSlope", None)
        set_element(f, "RescaleIntercept", None)
    result = convert_study(tmp_path / "study", tmp_path / "out")
    assert result.modality == "MR" and not any("Rescale" in w for w in result.warnings)


# ----------------------------------------------------------------------------- NIfTI headers
def _tiny_nifti_claiming(path: Path, shape: tuple[int, ...], gz: bool) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((2, 2, 2))
    img = nib.Nifti1Image(np.ones((2, 2, 2), np.float32), np.eye(4), hdr)
    nib.save(img, str(path))
    raw = bytearray(gzip.decompress(path.read_bytes()) if gz else path.read_bytes())
    dims = np.array([len(shape), *shape, *([1] * (7 - len(shape)))], dtype="<i2")
    raw[40:56] = dims.tobytes()
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["nii", "nii.gz"])
def test_nifti_claiming_a_huge_shape_fails_fast_without_allocating(tmp_path: Path, gz: bool) -> None:
    import time
    import tracemalloc

    from voxtell.io.volume import check_image_file

    path = _tiny_nifti_claiming(tmp_path / ("big.nii.gz" if gz else "big.nii"), (1000, 1000, 500), gz)
    assert path.stat().st_size < 400
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(NiftiError, match="claims shape"):
        check_image_file(path)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # the claim is 2 GB
    assert elapsed < 5


NIFTI_CASES = {
    "NaN voxel": (lambda d: np.where(np.arange(d.size).reshape(d.shape) == 5, np.nan, d), np.eye(4), "NonFiniteVolumeError"),
    "all zero": (lambda d: np.zeros_like(d), np.eye(4), "EmptyVolumeError"),
    "zero spacing": (lambda d: d, np.diag([1.0, 0.0, 1.0, 1.0]), "VolumeGeometryError"),
    "absurd spacing": (lambda d: d, np.diag([1.0, 1.0, 1e6, 1.0]), "VolumeGeometryError"),
    "single slice": (lambda d: d[:, :, :1], np.eye(4), "VolumeShapeError"),
}


@pytest.mark.parametrize("case", sorted(NIFTI_CASES))
def test_nifti_input_fails_in_convert_as_segment_would_fail(case: str, tmp_path: Path) -> None:
    """The convert stage and the predictor's preprocessing apply one check and raise the same class."""
    from voxtell.cohort.stage_convert import run_convert
    from voxtell.inference.preprocessing import preprocess

    change, affine, error = NIFTI_CASES[case]
    data = change(np.random.default_rng(0).normal(0, 100, (12, 12, 8)).astype(np.float32))
    path = tmp_path / "img.nii.gz"
    img = nib.Nifti1Image(data, None)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(None, code=0)
    nib.save(img, str(path))
    record = run_convert("s1", tmp_path / "out", image=str(path))
    as_dict = record if isinstance(record, dict) else record.__dict__
    text = json.dumps(as_dict, default=str)
    assert error in text, text
    with pytest.raises(InputError) as info:
        preprocess(path, (8, 8, 8))
    assert type(info.value).__name__ == error
    if error in ("VolumeGeometryError", "VolumeShapeError"):  # stats checks headers (voxels are measured, not judged)
        from voxtell.stats.study import load_volume

        with pytest.raises(InputError) as info:
            load_volume(path)
        assert type(info.value).__name__ == error


def test_nifti_path_that_is_a_fifo_is_refused_without_opening(tmp_path: Path) -> None:
    import os

    from voxtell.io.volume import check_image_file

    os.mkfifo(tmp_path / "image.nii.gz")
    with pytest.raises(NiftiError, match="not a regular file"):
        check_image_file(tmp_path / "image.nii.gz")  # would block forever if opened


def _pad_corners(files: list[Path], values: tuple[int, ...]) -> None:
    """Fill the corners outside the reconstruction circle with stored padding values, as scanners do."""
    import pydicom

    for f in files:
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array.copy()
        for k, value in enumerate(values):
            arr[k * 4 : k * 4 + 4, :6] = value
        ds.PixelData = arr.tobytes()
        ds.save_as(f, enforce_file_format=True)


def test_padding_far_below_any_hu_is_reported_not_refused(tmp_path: Path) -> None:
    files = crop_series(tmp_path / "study")
    _pad_corners(files, (-32768,))
    result = convert_study(tmp_path / "study", tmp_path / "out")
    assert any(w.startswith("padding:") and "-32768 HU" in w for w in result.warnings), result.warnings
    truth, _ = header_volume(files)
    got = nib.load(result.image_path).get_fdata()
    assert np.array_equal(np.sort(got.ravel()), np.sort(truth.ravel()))  # values kept as the headers say


def test_values_below_any_scale_that_are_not_one_padding_value_are_refused(tmp_path: Path) -> None:
    files = crop_series(tmp_path / "study")
    _pad_corners(files, (-32768, -20000))
    with pytest.raises(ImplausibleValuesError, match="-32768"):
        convert_study(tmp_path / "study", tmp_path / "out")
