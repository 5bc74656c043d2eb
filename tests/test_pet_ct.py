"""PET/CT: masks on the CT, SUV statistics from the PET of the same frame of reference.

A synthetic PET/CT study (the project's DICOM writer): a CT on a 2 mm grid and a PET on a
shifted 4 mm grid, same study and Frame of Reference. The PET activity is a linear ramp in
space, so trilinear resampling reproduces it exactly at every CT voxel inside the PET, and
the expected SUV figures are computed independently: voxel positions from the DICOM headers
of both series, the ramp evaluated by hand, the SUV factor from the written weight, dose,
half-life and times.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from voxtell.cohort.stage_convert import run_convert
from voxtell.io.dicom_write import PetDose, affine_from_spacing, write_dicom_series
from voxtell.io.errors import SuvError
from voxtell.io.suv import suv_factor
from voxtell.stats.suv_stats import PEAK_RADIUS_MM, SuvConfig, add_suv_columns, pet_beside, suv_statistics

DOSE = PetDose(injected_dose_bq=350e6, half_life_s=6586.2, injection_time="100000.00", patient_weight_kg=75.0)
RAMP = (5000.0, 200.0, 100.0, 50.0)  # Bq/ml at PET index (0,0,0) and per PET voxel along i, j, k


def _write_study(root: Path, pet: PetDose | None = DOSE, pet_frame: str | None = None) -> dict:
    ct = np.full((40, 40, 30), -1000.0)
    ct[5:35, 5:35, 3:27] = 40.0  # a body of soft tissue in air
    cts = write_dicom_series(ct, (2.0, 2.0, 2.0), root / "ct", modality="CT", series_number=2, file_prefix="CT")
    i, j, k = np.meshgrid(np.arange(20), np.arange(20), np.arange(15), indexing="ij")
    activity = RAMP[0] + RAMP[1] * i + RAMP[2] * j + RAMP[3] * k
    pet_affine = affine_from_spacing((4.0, 4.0, 4.0), origin_lps=(1.0, 1.0, 1.0))
    pts = write_dicom_series(
        activity, pet_affine, root / "pet", modality="PT", pet=pet, acquisition_time="120000.00",
        study_uid=cts.study_uid, frame_of_reference_uid=pet_frame or cts.frame_of_reference_uid, series_number=3,
        file_prefix="PT",
    )
    return {"ct": cts, "pet": pts}


def _expected_suv_at(ct_files: list[Path], pet_files: list[Path], voxels: np.ndarray) -> np.ndarray:
    """SUV at CT voxel indices (column, row, slice), from the raw DICOM headers only."""
    def geometry(files):
        hs = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in files), key=lambda h: float(h.ImagePositionPatient[2]))
        iop = np.array(hs[0].ImageOrientationPatient, float)
        dr, dc = (float(v) for v in hs[0].PixelSpacing)
        origin = np.array(hs[0].ImagePositionPatient, float)
        dz = float(hs[1].ImagePositionPatient[2]) - float(hs[0].ImagePositionPatient[2])
        return origin, iop[:3] * dc, iop[3:] * dr, np.array([0, 0, dz])
    o, ci, cj, ck = geometry(ct_files)
    lps = o + voxels[:, :1] * ci + voxels[:, 1:2] * cj + voxels[:, 2:3] * ck
    po, pi, pj, pk = geometry(pet_files)
    pet_index = np.linalg.solve(np.c_[pi, pj, pk], (lps - po).T).T
    activity = RAMP[0] + pet_index @ np.array(RAMP[1:])
    seconds = 7200.0  # injection 10:00:00, series 12:00:00, decay-corrected to the series start
    decayed = DOSE.injected_dose_bq * math.exp(-math.log(2) * seconds / DOSE.half_life_s)
    return activity * DOSE.patient_weight_kg * 1000.0 / decayed


def test_pet_ct_suv_equals_independent_computation(tmp_path: Path) -> None:
    written = _write_study(tmp_path / "study")
    record = run_convert("petct", tmp_path / "conv", dicom=str(tmp_path / "study"), pet_ct=True)
    assert record["status"] == "ok" and record["details"]["modality"] == "CT"
    image = Path(record["details"]["image"])
    pet = pet_beside(image)
    assert pet is not None and Path(record["details"]["pet_image"]) == pet
    pet_record = json.loads((pet.parent / "series.json").read_text())
    assert pet_record["units"] == "SUVbw" and pet_record["series_uid"] == written["pet"].series_uid

    ct_img = nib.load(image)
    mask = np.zeros(ct_img.shape, bool)
    mask[12:22, 14:26, 10:18] = True  # well inside the PET field of view (no edge clamping)
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), ct_img.affine), mask_path)
    # independent: mask voxels -> DICOM CT index (the NIfTI may be stored in another axis order)
    ct_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct_img.affine
    world = (ct_lps @ np.c_[np.argwhere(mask), np.ones(int(mask.sum()))].T).T[:, :3]
    dicom_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ written["ct"].affine_ras
    ct_index = np.linalg.solve(dicom_affine[:3, :3], (world - dicom_affine[:3, 3]).T).T
    suv = _expected_suv_at(list(written["ct"].files), list(written["pet"].files), ct_index)
    threshold = round(float(np.median(suv)), 3) + 1e-4  # cuts through the ramp

    rows = [{"mask_path": str(mask_path), "warnings": []}]
    add_suv_columns(rows, image, pet, SuvConfig(mtv_threshold_suv=threshold))
    row = rows[0]
    assert row["suv_max"] == pytest.approx(suv.max(), rel=1e-5)
    assert row["suv_mean"] == pytest.approx(suv.mean(), rel=1e-5)
    assert row["mtv_ml"] == pytest.approx(np.count_nonzero(suv >= threshold) * 8.0 / 1000.0)
    assert 0 < row["mtv_ml"] < mask.sum() * 8.0 / 1000.0  # the threshold cuts through the ramp
    # a linear ramp averaged over a symmetric sphere is its value at the centre
    assert row["suv_peak"] == pytest.approx(suv.max(), rel=1e-5)
    assert row["warnings"] == []


def test_suv_peak_brute_force() -> None:
    """SUVpeak on a grid equal to the PET's: mean over the 1 mL sphere, maximised over mask voxels, by loops."""
    rng = np.random.default_rng(7)
    pet = rng.uniform(0.5, 12.0, (16, 15, 14))
    affine = np.diag([-2.0, -2.5, 3.0, 1.0])
    mask = np.zeros(pet.shape, bool)
    mask[5:10, 4:9, 5:9] = True
    stats, warnings = suv_statistics(mask, affine, pet, affine, SuvConfig(mtv_threshold_suv=6.0))
    spacing = np.array([2.0, 2.5, 3.0])
    best = -np.inf
    for c in np.argwhere(mask):
        values = [
            pet[tuple(v)] for v in np.ndindex(pet.shape)
            if np.linalg.norm((np.array(v) - c) * spacing) <= PEAK_RADIUS_MM + 1e-9
        ]
        best = max(best, float(np.mean(values)))
    assert stats["suv_peak"] == pytest.approx(best, rel=1e-12)
    assert stats["suv_max"] == pytest.approx(pet[mask].max()) and stats["suv_mean"] == pytest.approx(pet[mask].mean())
    assert stats["mtv_ml"] == pytest.approx(np.count_nonzero(pet[mask] >= 6.0) * 15.0 / 1000.0)
    assert warnings == []


def test_mask_outside_the_pet_gives_no_figures() -> None:
    pet = np.ones((10, 10, 10)) * 3.0
    affine = np.eye(4)
    mask = np.zeros((30, 10, 10), bool)
    mask[20:25, 2:5, 2:5] = True  # beyond the PET's 10 voxels along i
    stats, warnings = suv_statistics(mask, affine, pet, affine)
    assert all(v is None for v in stats.values()) and "outside the PET field of view" in warnings[0]


@pytest.mark.parametrize("missing", ["PatientWeight", "RadionuclideTotalDose"])
def test_pet_without_weight_or_dose(tmp_path: Path, missing: str) -> None:
    """The PET lacks what SUV needs: suv_factor raises SuvError; in PET/CT the CT study goes on, warned."""
    written = _write_study(tmp_path / "study")
    for f in written["pet"].files:
        ds = pydicom.dcmread(f)
        if missing == "PatientWeight":
            del ds.PatientWeight
        else:
            del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
        ds.save_as(f)
    with pytest.raises(SuvError, match="PatientWeight" if missing == "PatientWeight" else "RadionuclideTotalDose"):
        suv_factor(list(written["pet"].files))
    record = run_convert("petct", tmp_path / "conv", dicom=str(tmp_path / "study"), pet_ct=True)
    assert record["status"] == "ok" and "pet_image" not in record["details"]
    assert any("SuvError" in w for w in record["warnings"])
    assert pet_beside(record["details"]["image"]) is None


def test_pet_of_another_frame_is_not_used(tmp_path: Path) -> None:
    _write_study(tmp_path / "study", pet_frame="1.2.826.0.1.3680043.8.498.1")
    record = run_convert("petct", tmp_path / "conv", dicom=str(tmp_path / "study"), pet_ct=True)
    assert record["status"] == "ok" and "pet_image" not in record["details"]
    assert any("none in the CT's frame of reference" in w for w in record["warnings"])


def test_pet_without_attenuation_correction_is_not_used(tmp_path: Path) -> None:
    """A non-attenuation-corrected PET (CorrectedImage without ATTN) would give SUVs that mean nothing."""
    written = _write_study(tmp_path / "study")
    for f in written["pet"].files:
        ds = pydicom.dcmread(f)
        ds.CorrectedImage = ["DECY"]
        ds.save_as(f)
    record = run_convert("petct", tmp_path / "conv", dicom=str(tmp_path / "study"), pet_ct=True)
    assert record["status"] == "ok" and "pet_image" not in record["details"]
    assert any("without attenuation correction" in w for w in record["warnings"])
