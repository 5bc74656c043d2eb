"""Indexing a study folder and choosing its series by policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxtell.io.convert import convert_study
from voxtell.io.dicom_index import index_study
from voxtell.io.dicom_write import write_dicom_series, write_rtstruct, write_text_sr
from voxtell.io.errors import NoImageSeriesError, NoUsableSeriesError
from voxtell.io.selection import SelectionPolicy, select_series


def _mixed_study(root: Path):
    ct = write_dicom_series(
        np.full((10, 10, 15), 40.0), (1.0, 1.0, 2.0), root / "ct", series_number=2, series_description="Planning CT"
    )
    localizer = np.array([[0, 0, -1.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    write_dicom_series(
        np.zeros((20, 20, 1)), localizer, root / "loc", series_number=1, study_uid=ct.study_uid,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), series_description="Topogram",
    )
    write_text_sr(root / "dose" / "sr.dcm", "CTDIvol 12 mGy", study_uid=ct.study_uid)
    write_rtstruct(root / "rs" / "RS.dcm", ct, {"GTV": [np.array([[2, 2, 4], [6, 2, 4], [6, 6, 4]], float)]})
    (root / "notes.txt").write_text("exported from PACS\n")
    return ct


def test_mixed_folder_selects_ct(tmp_path: Path) -> None:
    ct = _mixed_study(tmp_path / "study")
    index = index_study(tmp_path / "study")
    assert len(index.series) == 2
    assert index.non_image == {"SR": 1, "RTSTRUCT": 1}
    assert index.non_dicom == 1
    selection = select_series(index)
    assert selection.chosen.series_uid == ct.series_uid
    reasons = {c.description: c.reason for c in selection.candidates}
    assert "localizer" in reasons["Topogram"]
    result = convert_study(tmp_path / "study", tmp_path / "out")
    assert result.series_uid == ct.series_uid and result.shape == (10, 10, 15)


def test_policy_prefers_modality_original_and_more_slices(tmp_path: Path) -> None:
    root = tmp_path / "study"
    mr = write_dicom_series(np.zeros((6, 6, 30)), (1, 1, 1), root / "mr", modality="MR", series_number=1)
    ct = write_dicom_series(np.zeros((6, 6, 12)), (1, 1, 3), root / "ct", series_number=2)
    derived = write_dicom_series(
        np.zeros((6, 6, 40)), (1, 1, 1), root / "mpr", series_number=3, image_type=("DERIVED", "SECONDARY", "MPR")
    )
    thin = write_dicom_series(np.zeros((6, 6, 12)), (1, 1, 1), root / "thin", series_number=4)
    index = index_study(root)
    chosen = select_series(index).chosen
    assert chosen.series_uid == thin.series_uid  # CT, ORIGINAL, 12 slices ties on count, 1 mm beats 3 mm
    assert select_series(index, SelectionPolicy(modalities=("MR", "CT"))).chosen.series_uid == mr.series_uid
    no_pref = SelectionPolicy(prefer_original=False)
    assert select_series(index, no_pref).chosen.series_uid == derived.series_uid
    by_uid = {c.series_uid: c for c in select_series(index).candidates}
    assert "ORIGINAL before DERIVED" in by_uid[derived.series_uid].reason
    assert "thinner slices" in by_uid[ct.series_uid].reason
    with pytest.raises(NoUsableSeriesError):
        select_series(index, SelectionPolicy(modalities=("PT",)))


def test_blank_uids_are_grouped_by_shared_attributes(tmp_path: Path) -> None:
    root = tmp_path / "study"
    write_dicom_series(np.zeros((6, 6, 12)), (1, 1, 2), root / "a", series_uid="", series_number=3)
    sag = np.array([[0, 0, -1.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    write_dicom_series(np.zeros((6, 6, 11)), sag, root / "b", series_uid="", series_number=3)
    write_dicom_series(np.zeros((6, 6, 10)), (1, 1, 2), root / "c", series_uid="", series_number=5)
    index = index_study(root)
    assert sorted(s.n_files for s in index.series) == [10, 11, 12]
    assert all(s.uid_inferred for s in index.series)
    assert select_series(index).chosen.n_slices == 12


def test_only_non_image_objects(tmp_path: Path) -> None:
    write_text_sr(tmp_path / "sr.dcm", "no images here")
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(NoImageSeriesError, match="1 SR"):
        select_series(index_study(tmp_path))


# ----------------------------------------------------------------------------- odd folders (issue 19)
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from contextlib import contextmanager  # noqa: E402

from voxtell.io.dicom_index import check_study  # noqa: E402
from voxtell.io.errors import (  # noqa: E402
    CorruptDicomError,
    HeaderValueError,
    MissingSlicesError,
    MixedStudyError,
    MultiFrameError,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdicom import crop_series  # noqa: E402


def _ct(root: Path, n: int = 12, **kw):
    volume = np.full((8, 8, n), -1000.0)
    volume[2:6, 2:6] = 40.0
    return write_dicom_series(volume, (1.0, 1.0, 2.0), root, **kw)


@contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging (opening a fifo blocks until a writer comes)."""

    def _raise(signum, frame):
        raise TimeoutError(f"indexing did not finish in {seconds} s: a fifo or link loop was followed")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_fifo_socket_and_link_loop_are_skipped_with_warnings(tmp_path: Path) -> None:
    study = tmp_path / "study"
    ct = _ct(study / "ct")
    os.mkfifo(study / "pipe.dcm")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(study / "sock"))
    (study / "ct" / "loop").symlink_to(study, target_is_directory=True)  # a link back to a parent
    (study / "again.dcm").symlink_to(ct.files[0])  # a second link to a slice: one file
    with _deadline(20):
        index = index_study(study)
        result = convert_study(study, tmp_path / "out")
    sock.close()
    assert [s.n_files for s in index.series] == [12]
    kinds = {p.name: why for p, why in index.skipped}
    assert kinds["pipe.dcm"] == "fifo" and kinds["sock"] == "socket"
    assert "link loop" in kinds["loop"]
    assert (kinds.get(ct.files[0].name) or kinds.get("again.dcm", "")).startswith("second link")
    record = json.loads(result.series_json_path.read_text())
    assert record["slice_count"] == 12
    text = " | ".join(record["warnings"])
    assert "fifo" in text and "socket" in text and "link loop" in text and "never opened" in text
    assert list(result.warnings) == record["warnings"]


def test_dangling_link_or_unparseable_slice_is_refused_by_name_not_missing(tmp_path: Path) -> None:
    study = tmp_path / "study"
    ct = _ct(study)
    data = bytearray(ct.files[5].read_bytes())
    data[200:600] = os.urandom(400)  # DICM magic kept, header destroyed
    ct.files[5].write_bytes(bytes(data))
    (study / "gone.dcm").symlink_to(tmp_path / "nowhere.dcm")
    with pytest.raises(CorruptDicomError) as info:
        convert_study(study, tmp_path / "out")
    message = str(info.value)
    assert "gone.dcm (dangling link)" in message and ct.files[5].name in message
    assert not isinstance(info.value, MissingSlicesError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_slice_is_not_counted_as_non_dicom(tmp_path: Path) -> None:
    ct = _ct(tmp_path / "study")
    ct.files[0].chmod(0)
    try:
        index = index_study(tmp_path / "study")
        assert index.non_dicom == 0 and ct.files[0] in index.unreadable
        with pytest.raises(CorruptDicomError, match="Permission denied"):
            check_study(index)
    finally:
        ct.files[0].chmod(0o644)


def test_non_dicom_files_are_named_in_the_warnings(tmp_path: Path) -> None:
    _ct(tmp_path / "study")
    (tmp_path / "study" / "notes.txt").write_text("exported by PACS")
    result = convert_study(tmp_path / "study", tmp_path / "out")
    assert any("non-DICOM" in w and "notes.txt" in w for w in result.warnings)


def test_two_patients_in_one_folder_are_refused_without_naming_them(tmp_path: Path) -> None:
    a = _ct(tmp_path / "study" / "a", series_description="Planning CT")
    _ct(tmp_path / "study" / "b", study_uid=a.study_uid, series_number=2, series_description="Other CT",
        patient={"PatientName": "Otherperson^Ann", "PatientID": "OTHER-77"})
    with pytest.raises(MixedStudyError, match="2 different patients") as info:
        convert_study(tmp_path / "study", tmp_path / "out")
    message = str(info.value)
    assert "Planning CT" in message and "Other CT" in message
    for needle in ("Otherperson", "OTHER-77", "FAKEPID", "Fakename"):
        assert needle not in message
    from voxtell.cohort.stage_convert import run_convert

    run_convert("s", tmp_path / "out", dicom=str(tmp_path / "study"))  # the stage's status record
    status = (tmp_path / "out" / "status.json").read_text()
    assert "Otherperson" not in status and "MixedStudyError" in status


def test_two_studies_in_one_folder_are_refused(tmp_path: Path) -> None:
    _ct(tmp_path / "study" / "a", series_description="CT 2023")
    _ct(tmp_path / "study" / "b", series_number=2, series_description="CT 2024")
    with pytest.raises(MixedStudyError, match="2 studies"):
        convert_study(tmp_path / "study", tmp_path / "out")


def test_series_tie_is_decided_by_series_number_not_uid_and_warned(tmp_path: Path) -> None:
    """Two reconstructions with equal slices and spacing: the same one wins whatever their UIDs."""
    chosen = []
    for uids in (("1.2.826.0.1.9", "1.2.826.0.1.1"), ("1.2.826.0.1.1", "1.2.826.0.1.9")):
        root = tmp_path / f"study{len(chosen)}"
        first = _ct(root / "soft", series_uid=uids[0], series_number=3, series_description="Soft tissue")
        _ct(root / "lung", series_uid=uids[1], series_number=4, series_description="Lung kernel", study_uid=first.study_uid)
        result = convert_study(root, tmp_path / f"out{len(chosen)}")
        record = json.loads(result.series_json_path.read_text())
        chosen.append(record["series_description"])
        tie = [w for w in record["warnings"] if w.startswith("series tie")]
        assert len(tie) == 1 and "'Soft tissue'" in tie[0] and "'Lung kernel'" in tie[0] and "lower series number" in tie[0]
    assert chosen == ["Soft tissue", "Soft tissue"]


def test_non_uniform_spacing_is_not_reported_as_missing_slices(tmp_path: Path) -> None:
    """1 mm slices then 2 mm slices, numbered consecutively: resampled with a warning."""
    study = tmp_path / "study"
    first = write_dicom_series(np.full((8, 8, 8), -500.0), np.diag([-1.0, -1.0, 1.0, 1.0]), study, file_prefix="A")
    second = np.diag([-1.0, -1.0, 2.0, 1.0])
    second[2, 3] = 9.0
    write_dicom_series(
        np.full((8, 8, 6), -500.0), second, study, series_uid=first.series_uid, study_uid=first.study_uid,
        frame_of_reference_uid=first.frame_of_reference_uid, file_prefix="B", instance_numbers=range(9, 15),
    )
    result = convert_study(study, tmp_path / "out")
    assert any(w.startswith("non-uniform slice spacing") for w in result.warnings)
    # the same gap with skipped instance numbers is a missing slice
    (study / "A0007.dcm").unlink()
    with pytest.raises(MissingSlicesError, match="instance numbers skip"):
        convert_study(study, tmp_path / "out2")


def test_enhanced_multi_frame_ct_is_named_as_such(tmp_path: Path) -> None:
    import pydicom

    ct = _ct(tmp_path / "src")
    ds = pydicom.dcmread(ct.files[0])
    frames = [pydicom.dcmread(f).PixelData for f in ct.files]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.NumberOfFrames = len(frames)
    ds.PixelData = b"".join(frames)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        del ds[keyword]  # in the functional groups of a real enhanced object
    (tmp_path / "study").mkdir()
    ds.save_as(tmp_path / "study" / "enhanced.dcm", enforce_file_format=True)
    with pytest.raises(MultiFrameError, match="enhanced multi-frame") as info:
        convert_study(tmp_path / "study", tmp_path / "out")
    assert "min_slices" not in str(info.value)


def test_real_ct_geometry_header_values_are_checked(tmp_path: Path) -> None:
    """Real CT slices: a zero PixelSpacing or a non-unit orientation is a typed header error."""
    from realdicom import set_element

    files = crop_series(tmp_path / "a")
    set_element(files[4], "PixelSpacing", ["0", "0"])
    with pytest.raises(HeaderValueError, match=r"PixelSpacing is 0\\0 mm"):
        select_series(index_study(tmp_path / "a"))
    files = crop_series(tmp_path / "b")
    set_element(files[2], "ImageOrientationPatient", ["0.5", "0", "0", "0", "1", "0"])
    with pytest.raises(HeaderValueError, match="orthogonal unit vectors"):
        select_series(index_study(tmp_path / "b"))


def test_permission_error_while_indexing_is_unreadable_not_non_dicom(tmp_path: Path, monkeypatch) -> None:
    """The same as a chmod 000 slice, for runs as root: the OS refuses to open one file."""
    import voxtell.io.dicom_index as di

    ct = _ct(tmp_path / "study")
    real = di._has_dicm_magic

    def refuse(path: Path) -> bool:
        if path == ct.files[3]:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(di, "_has_dicm_magic", refuse)
    index = index_study(tmp_path / "study")
    assert index.non_dicom == 0 and index.unreadable == [ct.files[3]]
    with pytest.raises(CorruptDicomError, match=rf"{ct.files[3].name} \(Permission denied\)"):
        check_study(index)


def test_a_broken_series_passed_over_is_named_in_the_warnings(tmp_path: Path) -> None:
    """The better series (more slices) has a bad slope: the other is converted, and the warning says why."""
    good = _ct(tmp_path / "study" / "good", series_number=2, series_description="Good CT")
    _ct(tmp_path / "study" / "bad", n=20, study_uid=good.study_uid, series_number=3, series_description="Broken CT",
        tags={"RescaleSlope": "0"})
    result = convert_study(tmp_path / "study", tmp_path / "out")
    assert result.series_uid == good.series_uid
    assert any("'Broken CT'" in w and "HeaderValueError" in w and "RescaleSlope is 0" in w for w in result.warnings)
