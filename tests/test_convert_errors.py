"""Bad studies give a typed error and a status.json, never a traceback; the CLI exits 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voxtell.cli import main
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
    return write_dicom_series(np.zeros((8, 8, n)), (1.0, 1.0, 2.0), root, **kw)


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
    status = json.loads((out / "status.json").read_text())
    assert status["ok"] is False
    assert status["error"] == error.__name__
    assert status["message"] == str(info.value)
    assert not (out / "image.nii.gz").exists() and not (out / "series.json").exists()


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
    assert json.loads((out / "status.json").read_text())["error"] == "MissingSlicesError"


def test_cli_convert_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _series(tmp_path / "good")
    assert main(["convert", str(tmp_path / "good"), "-o", str(tmp_path / "out_good"), "--modality", "CT", "MR"]) == 0
    assert (tmp_path / "out_good" / "image.nii.gz").exists()
    (tmp_path / "bad").mkdir()
    assert main(["convert", str(tmp_path / "bad"), "-o", str(tmp_path / "out_bad")]) == 1
    status = json.loads((tmp_path / "out_bad" / "status.json").read_text())
    assert status["error"] == "NoImageSeriesError"
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
