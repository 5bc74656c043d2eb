"""Body-weight SUV header checks (issue 19): absurd values refused, unusual ones warned, GML is SUV."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from voxtell.io.convert import convert_study
from voxtell.io.dicom_write import PetDose, write_dicom_series
from voxtell.io.errors import SuvError
from voxtell.io.selection import SelectionPolicy
from voxtell.io.suv import SUV_MAX_USUAL, check_plausible, suv_factor, suv_range_warnings

PT_ONLY = SelectionPolicy(modalities=("PT",), min_slices=2)


def _pet(tmp_path: Path, pet: PetDose = PetDose(), volume: np.ndarray | None = None, **tags) -> list[Path]:
    vol = volume if volume is not None else np.random.default_rng(0).integers(100, 12000, (8, 8, 6)).astype(float)
    return list(write_dicom_series(vol, (4.0, 4.0, 4.0), tmp_path / "pet", modality="PT", pet=pet,
                                   acquisition_time="120000.00", tags=tags).files)


def _edit(files: list[Path], fn) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        fn(ds)
        ds.save_as(f)


def test_plausible_header_gives_the_textbook_factor(tmp_path: Path) -> None:
    factor = suv_factor(_pet(tmp_path))
    expected = 75.0 * 1000 / (350e6 * math.exp(-math.log(2) * 7200 / 6586.2))
    assert factor.factor == pytest.approx(expected, rel=1e-9) and factor.warnings == ()


@pytest.mark.parametrize(
    "weight, dose, match",
    [
        (75000.0, 350e6, "grams entered as kilograms"),  # issue 19: gave SUVmax 5,193
        (0.2, 350e6, "not a plausible body weight"),
        (75.0, 350.0, "MBq written where DICOM wants Bq"),
        (75.0, 9e10, "not a plausible injected dose"),
    ],
)
def test_absurd_weight_or_dose_is_refused(tmp_path: Path, weight: float, dose: float, match: str) -> None:
    files = _pet(tmp_path, PetDose(patient_weight_kg=weight, injected_dose_bq=dose))
    with pytest.raises(SuvError, match=match):
        suv_factor(files)
    with pytest.raises(SuvError):  # and the conversion with --suv is a typed failure, not a number
        convert_study(tmp_path / "pet", tmp_path / "out", PT_ONLY, pet_suv=True)
    assert not (tmp_path / "out" / "image.nii.gz").exists()


def test_unusual_values_are_warned(tmp_path: Path) -> None:
    files = _pet(tmp_path, PetDose(patient_weight_kg=14.0, injected_dose_bq=30e6))
    factor = suv_factor(files)
    assert len(factor.warnings) == 2 and "14 kg" in factor.warnings[0] and "30 MBq" in factor.warnings[1]
    result = convert_study(tmp_path / "pet", tmp_path / "out", PT_ONLY, pet_suv=True)
    record = json.loads(result.series_json_path.read_text())
    assert any("14 kg" in w for w in record["warnings"]) and record["suv"]["warnings"] == list(factor.warnings)
    assert check_plausible(75.0, 350e6, 6 * 3600.0)[0].startswith("scan 6.0 h after injection")


def test_units_gml_is_already_suv(tmp_path: Path) -> None:
    """A series in SUV (g/ml) is never scaled again and never labelled Bq/ml."""
    volume = np.random.default_rng(1).integers(0, 900, (8, 8, 6)).astype(float) / 100.0
    files = _pet(tmp_path, PetDose(units="GML"), volume=volume * 100.0, RescaleSlope="0.01")
    factor = suv_factor(files)
    assert factor.factor == 1.0 and "already SUV" in factor.reference
    plain = convert_study(tmp_path / "pet", tmp_path / "plain", PT_ONLY)
    suv = convert_study(tmp_path / "pet", tmp_path / "suv", PT_ONLY, pet_suv=True)
    assert json.loads(plain.series_json_path.read_text())["units"].startswith("SUVbw")
    assert json.loads(suv.series_json_path.read_text())["units"] == "SUVbw"
    np.testing.assert_allclose(nib.load(suv.image_path).get_fdata(), nib.load(plain.image_path).get_fdata(), rtol=1e-6)


def test_missing_decay_correction_is_assumed_start_with_warning(tmp_path: Path) -> None:
    files = _pet(tmp_path)
    _edit(files, lambda ds: delattr(ds, "DecayCorrection"))
    factor = suv_factor(files)
    assert factor.decay_correction == "START" and "DecayCorrection is missing" in factor.warnings[0]
    _edit(files, lambda ds: setattr(ds, "DecayCorrection", "NONE"))
    with pytest.raises(SuvError, match="START or ADMIN"):
        suv_factor(files)


@pytest.mark.parametrize(
    "fn, match",
    [
        (lambda ds: setattr(ds.RadiopharmaceuticalInformationSequence[0], "RadiopharmaceuticalStartTime", "99xx"),
         "not a DICOM TM"),
        (lambda ds: setattr(ds.RadiopharmaceuticalInformationSequence[0], "RadiopharmaceuticalStartTime", "250000"),
         "out of range"),
        (lambda ds: delattr(ds.RadiopharmaceuticalInformationSequence[0], "RadiopharmaceuticalStartTime"),
         "injection time"),
        (lambda ds: setattr(ds, "Units", "CNTS"), "needs BQML"),
        (lambda ds: setattr(ds.RadiopharmaceuticalInformationSequence[0], "RadiopharmaceuticalStartTime", "130000"),
         "after the scan"),
    ],
)
def test_malformed_or_missing_times_are_typed(tmp_path: Path, fn, match: str) -> None:
    files = _pet(tmp_path)
    _edit(files, fn)
    with pytest.raises(SuvError, match=match):
        suv_factor(files)


def test_implausible_suv_range_is_warned(tmp_path: Path) -> None:
    assert suv_range_warnings(SUV_MAX_USUAL + 1)[0].startswith("SUVmax")
    assert suv_range_warnings(25.0) == [] and suv_range_warnings(None) == []
    # a hot image: Bq/ml so high that SUV passes 100 with a plausible header
    hot = np.full((8, 8, 6), 30000.0)
    _pet(tmp_path, PetDose(patient_weight_kg=200.0, injected_dose_bq=40e6), volume=hot)
    result = convert_study(tmp_path / "pet", tmp_path / "out", PT_ONLY, pet_suv=True)
    assert any(w.startswith("SUVmax") for w in result.warnings)
