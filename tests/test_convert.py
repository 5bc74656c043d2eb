"""DICOM -> NIfTI conversion: geometry, values, real data, anonymity, PET SUV, variants."""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to
from scipy.spatial.transform import Rotation

from voxtell.io.convert import convert_study, find_dcm2niix
from voxtell.io.dicom_write import FAKE_PATIENT, PetDose, write_dicom_series

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdicom import header_image  # noqa: E402  (HU and affine from the headers alone)


def _canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    can = nib.as_closest_canonical(img)
    return can.affine, np.asanyarray(can.get_fdata())


def _affine(rotation_deg, spacing, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix() @ np.diag(spacing)
    a[:3, 3] = origin
    return a


SAGITTAL = np.array([[0, 0, -1.5, 40.0], [0.8, 0, 0, -60.0], [0, -0.9, 0, 70.0], [0, 0, 0, 1]])
CORONAL = np.array([[-0.7, 0, 0, 30.0], [0, 0, 3.0, -20.0], [0, -0.7, 0, 50.0], [0, 0, 0, 1]])
CASES = {
    "axial": dict(affine=np.diag([-0.7, -0.8, 2.5, 1.0])),
    "axial_reversed": dict(affine=np.array([[-0.7, 0, 0, 10], [0, -0.7, 0, 20], [0, 0, -3.0, 100], [0, 0, 0, 1]]), order="reversed"),
    "sagittal": dict(affine=SAGITTAL),
    "coronal": dict(affine=CORONAL),
    "oblique": dict(affine=_affine([20, -10, 35], [0.8, 0.9, 2.0], [12.0, -30.0, 44.0])),
    "shuffled": dict(affine=_affine([0, 0, 12], [1.0, 1.0, 1.5], [0, 0, 0]), order="shuffled"),
    "mr_rescaled": dict(affine=np.diag([-1.1, -1.1, 4.0, 1.0]), modality="MR", slope=2.0, intercept=10.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_synthetic_geometry_and_values(case: str, tmp_path: Path) -> None:
    spec = CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    shape = (14, 11, 12)
    slope = spec.get("slope", 1.0)
    intercept = spec.get("intercept", -1024.0)
    stored = rng.integers(0, 3000, shape)
    volume = stored * slope + intercept
    numbers = list(range(1, shape[2] + 1))
    if spec.get("order") == "reversed":
        numbers = numbers[::-1]
    elif spec.get("order") == "shuffled":
        numbers = list(rng.permutation(numbers) + 1)
    series = write_dicom_series(
        volume, spec["affine"], tmp_path / "study", modality=spec.get("modality", "CT"),
        rescale_slope=slope, rescale_intercept=intercept, instance_numbers=numbers,
    )
    if spec.get("order") == "shuffled":  # file names no longer follow the slice order either
        for f, new in zip(series.files, rng.permutation(len(series.files))):
            f.rename(f.with_name(f"X{new:03d}.dcm"))
    result = convert_study(tmp_path / "study", tmp_path / "out")
    converted = nib.load(result.image_path)
    assert converted.shape == shape

    files = sorted((tmp_path / "study").glob("*.dcm"))
    ref_affine, ref_data = _canonical(header_image(files))
    out_affine, out_data = _canonical(converted)
    np.testing.assert_allclose(out_affine, ref_affine, atol=1e-3)
    np.testing.assert_array_equal(out_data, ref_data)
    # and the same as the volume the writer was given
    truth_affine, truth_data = _canonical(nib.Nifti1Image(volume.astype(np.float64), spec["affine"]))
    np.testing.assert_allclose(out_affine, truth_affine, atol=1e-3)
    np.testing.assert_array_equal(out_data, truth_data)

    record = json.loads(result.series_json_path.read_text())
    assert record["series_uid"] == series.series_uid
    assert record["slice_count"] == shape[2]
    assert record["header_geometry_match"] is True
    assert record["dcm2niix_version"] == find_dcm2niix().version


def test_real_jpeg2000_series_hounsfield(tmp_path: Path, totalseg_dir: Path) -> None:
    result = convert_study(totalseg_dir / "example_ct_dicom", tmp_path)
    img = nib.load(result.image_path)
    record = json.loads(result.series_json_path.read_text())
    assert img.shape == (512, 512, 20)
    assert record["series_uid_inferred"] is True  # blank SeriesInstanceUID
    assert record["units"] == "HU"
    assert record["spacing_mm"][2] == pytest.approx(2.0)  # thickness 3 mm, overlapping slices
    seg = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")  # stored LAS; map by affines
    labels = np.asanyarray(resample_from_to(seg, (img.shape, img.affine), order=0).dataobj)
    data = img.get_fdata()
    assert data[labels == 5].mean() == pytest.approx(89.0, abs=2.0)  # liver
    assert data[labels == 52].mean() == pytest.approx(177.0, abs=3.0)  # aorta
    # the export carries an institution address; it must not survive into any output
    # The device serial (60064) may appear only inside the DICOM UIDs, which series.json keeps
    # because derived DICOM objects and RT references must name them exactly.
    assert record["frame_of_reference_uid"].startswith("1.3.12.2.1107.5.1.4.60064.")
    assert record["study_instance_uid"] is None  # blank in this export
    for path in tmp_path.rglob("*"):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        if path.name == "series.json":
            raw = raw.replace(record["frame_of_reference_uid"].encode(), b"")
        assert b"Petersgraben" not in raw, path.name
        assert b"60064" not in raw or path.name.endswith(".nii.gz"), path.name  # device serial number


def test_no_patient_identifiers_in_outputs(tmp_path: Path) -> None:
    write_dicom_series(np.full((8, 8, 12), -500.0), (1.0, 1.0, 2.0), tmp_path / "Fakename_Jane", modality="CT")
    convert_study(tmp_path / "Fakename_Jane", tmp_path / "out")
    outputs = list((tmp_path / "out").rglob("*"))
    assert {p.name for p in outputs} == {"image.nii.gz", "series.json"}
    needles = [v.encode() for v in FAKE_PATIENT.values()] + [b"Fakename", b"19410203", b"FAKEPID", b"FAKEACC"]
    for path in outputs:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        for needle in needles:
            assert needle not in raw, (path.name, needle)


def test_pet_body_weight_suv(tmp_path: Path) -> None:
    pet = PetDose(injected_dose_bq=300e6, half_life_s=6586.2, injection_time="100000.00", patient_weight_kg=80.0)
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 20000, (10, 9, 11)).astype(float)
    write_dicom_series(volume, (4.0, 4.0, 3.0), tmp_path / "pet", modality="PT", pet=pet, acquisition_time="120000.00")
    bq = convert_study(tmp_path / "pet", tmp_path / "bq", policy=_pt_only())
    suv = convert_study(tmp_path / "pet", tmp_path / "suv", policy=_pt_only(), pet_suv=True)
    expected = 80.0 * 1000.0 / (300e6 * math.exp(-math.log(2) * 7200.0 / 6586.2))
    assert suv.suv_factor == pytest.approx(expected, rel=1e-9)
    record = json.loads(suv.series_json_path.read_text())
    assert record["units"] == "SUVbw" and record["suv"]["factor"] == pytest.approx(expected, rel=1e-9)
    assert record["suv"]["decay_seconds"] == pytest.approx(7200.0)
    raw = nib.load(bq.image_path).get_fdata()
    scaled = nib.load(suv.image_path).get_fdata()
    np.testing.assert_allclose(scaled, raw * expected, rtol=1e-6)
    _, truth = _canonical(nib.Nifti1Image(volume, np.diag([-4.0, -4.0, 3.0, 1.0])))
    _, got = _canonical(nib.load(bq.image_path))
    np.testing.assert_allclose(got, truth, rtol=1e-6)


def _pt_only():
    from voxtell.io.selection import SelectionPolicy

    return SelectionPolicy(modalities=("PT",))


def test_gantry_tilt_chooses_tilt_corrected_output(tmp_path: Path) -> None:
    affine = np.diag([-0.9, -0.9, 2.0, 1.0])
    affine[1, 2] = 2.0 * math.tan(math.radians(15))  # slices shifted along y: 15 degree tilt
    write_dicom_series(np.full((16, 14, 12), -500.0), affine, tmp_path / "tilt", tags={"GantryDetectorTilt": "15"})
    result = convert_study(tmp_path / "tilt", tmp_path / "out")
    record = json.loads(result.series_json_path.read_text())
    assert len(record["dcm2niix_outputs"]) == 2
    assert record["dcm2niix_output_chosen"] == "tilt-corrected"
    assert any(w.startswith("gantry tilt") for w in record["warnings"])
    m = nib.load(result.image_path).affine[:3, :3]
    gram = m.T @ m  # the corrected grid is orthogonal (the acquired one is sheared)
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-4)


def test_variable_spacing_chooses_equalised_output(tmp_path: Path) -> None:
    first = write_dicom_series(np.full((8, 8, 6), -500.0), np.diag([-1.0, -1.0, 2.0, 1.0]), tmp_path / "s")
    second = np.diag([-1.0, -1.0, 2.5, 1.0])
    second[2, 3] = 12.5
    write_dicom_series(
        np.full((8, 8, 6), -500.0), second, tmp_path / "s", series_uid=first.series_uid, study_uid=first.study_uid,
        frame_of_reference_uid=first.frame_of_reference_uid, file_prefix="B", instance_numbers=range(7, 13),
    )
    result = convert_study(tmp_path / "s", tmp_path / "out")
    record = json.loads(result.series_json_path.read_text())
    assert record["dcm2niix_output_chosen"] == "equalised"
    assert any(w.startswith("non-uniform slice spacing") for w in record["warnings"])
    assert record["slice_count"] == 12


def test_pet_already_in_suv_units_is_labelled_so(tmp_path: Path) -> None:
    """A PET whose Units are GML holds SUV already: series.json must not call it Bq/ml."""
    pet = PetDose(units="GML")
    volume = np.random.default_rng(4).integers(0, 500, (10, 9, 11)).astype(float) / 100
    write_dicom_series(volume, (4.0, 4.0, 3.0), tmp_path / "pet", modality="PT", pet=pet, rescale_slope=0.01)
    result = convert_study(tmp_path / "pet", tmp_path / "out", policy=_pt_only())
    assert json.loads(result.series_json_path.read_text())["units"] == "SUVbw (g/ml)"


def test_real_mr_crop_converts_as_its_headers_say(tmp_path: Path) -> None:
    """MIRP STS_001 T1 MR (no rescale tags): stored values and geometry kept exactly."""
    from realdicom import MIRP_MR_CROP

    result = convert_study(MIRP_MR_CROP, tmp_path / "out")
    files = sorted(MIRP_MR_CROP.glob("*.dcm"))
    ref_affine, ref_data = _canonical(header_image(files))
    got_affine, got_data = _canonical(nib.load(result.image_path))
    assert result.modality == "MR" and result.shape == (48, 48, 12)
    np.testing.assert_allclose(got_affine, ref_affine, atol=1e-3)
    np.testing.assert_array_equal(got_data, ref_data)
    assert json.loads(result.series_json_path.read_text())["units"] == "scanner units"
