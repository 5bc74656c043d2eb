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
