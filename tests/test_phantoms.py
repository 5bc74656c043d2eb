"""Phantom generator, vocabulary, nnU-Net layout I/O and demo cohort writer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxtell.data.cohorts import write_phantom_dataset
from voxtell.data.demo import write_demo_cohort
from voxtell.data.nnunet import DatasetLayoutError, read_nnunet_dataset
from voxtell.data.phantoms import LABELS, ORGAN_LABELS, PhantomConfig, generate_cohort, generate_phantom
from voxtell.data.reports import write_report
from voxtell.data.vocabulary import PHANTOM_VOCABULARY, Vocabulary, VocabularyError
from voxtell.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]


def _centroid_ras(labels: np.ndarray, affine: np.ndarray, value: int) -> np.ndarray:
    ijk = np.argwhere(labels == value).mean(axis=0)
    return (affine @ np.array([*ijk, 1.0]))[:3]


def test_generator_is_deterministic_and_independent_of_cohort_size():
    a = generate_phantom(7, 3)
    b = generate_phantom(7, 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.affine, b.affine) and a.lesions == b.lesions
    third = list(generate_cohort(4, seed=7))[3]
    assert np.array_equal(third.image, a.image)
    other = generate_phantom(8, 3)
    assert other.image.shape != a.image.shape or not np.array_equal(other.image, a.image)


def test_phantoms_vary_in_spacing_orientation_and_stay_small():
    cohort = list(generate_cohort(12, seed=0))
    orientations = {p.orientation for p in cohort}
    assert {"RAS", "LPS", "LAS"} <= orientations | {"RAS"} and len(orientations) >= 2
    spacings = np.array([p.spacing for p in cohort])
    assert spacings.min() >= 4.0 - 1e-6 and spacings.max() <= 6.0 + 1e-6
    assert np.ptp(spacings[:, 0]) > 0.5 and np.ptp(spacings[:, 2]) > 0.5
    for p in cohort:
        assert p.image.dtype == np.int16 and p.labels.dtype == np.uint8
        assert p.image.shape == p.labels.shape and max(p.image.shape) <= 100
        assert "".join(nib.aff2axcodes(p.affine)) == p.orientation


def test_every_phantom_has_all_organs_and_hu_is_ct_like():
    for p in generate_cohort(5, seed=3):
        values = p.label_values()
        for name in ORGAN_LABELS:
            assert LABELS[name] in values, (p.case_id, name)
        assert LABELS["adrenal_lesion"] not in values  # held out unless asked for
        img = p.image.astype(float)
        assert np.median(img[p.labels == 0]) < -900  # air
        assert np.median(img[np.isin(p.labels, (2, 3))]) < -700  # lungs
        assert np.median(img[p.labels == LABELS["spine"]]) > 250  # bone
        assert 30 < np.median(img[p.labels == LABELS["liver"]]) < 90


def test_adrenal_lesion_only_when_requested():
    cfg = PhantomConfig(adrenal_lesion_rate=1.0)
    p = generate_phantom(0, 1, cfg)
    assert LABELS["adrenal_lesion"] in p.label_values()
    assert any(les.kind == "adrenal_lesion" for les in p.lesions)


def test_adrenal_mass_is_separated_from_liver_and_spleen_by_fat():
    """A retroperitoneal mass pushes the liver aside; cut into it, it would be a liver lesion."""
    cfg = PhantomConfig(adrenal_lesion_rate=1.0)
    checked = 0
    for p in generate_cohort(8, seed=3, config=cfg):
        (les,) = [x for x in p.lesions if x.kind == "adrenal_lesion"]
        ijk = np.indices(p.labels.shape).reshape(3, -1)
        xyz = (p.affine[:3, :3] @ ijk + p.affine[:3, 3:]).T
        dist = np.linalg.norm(xyz - np.asarray(les.center_ras_mm), axis=1).reshape(p.labels.shape)
        near = dist <= les.diameter_mm / 2 + 1.0
        assert not np.isin(p.labels[near], (LABELS["liver"], LABELS["spleen"])).any(), les
        # the plane is fat, the mass is soft tissue
        plane = near & (p.labels == LABELS["body"])
        if plane.sum() > 5:
            assert np.median(p.image[plane]) < -40 < np.median(p.image[p.labels == LABELS["adrenal_lesion"]])
            checked += 1
    assert checked


@pytest.mark.parametrize("index", range(6))
def test_left_right_organs_are_on_the_correct_side_in_world_space(index):
    """RAS world x > 0 is the patient's right, whatever the stored orientation."""
    p = generate_phantom(11, index)
    x = {name: _centroid_ras(p.labels, p.affine, LABELS[name])[0] for name in ORGAN_LABELS}
    spine_x = x["spine"]
    for name in ("liver", "kidney_right", "lung_right"):
        assert x[name] > spine_x + 20, (p.orientation, name, x)
    for name in ("spleen", "kidney_left", "lung_left"):
        assert x[name] < spine_x - 20, (p.orientation, name, x)
    assert x["aorta"] < spine_x  # slightly left of the midline
    # The right kidney sits lower than the left (z is superior in RAS).
    zr = _centroid_ras(p.labels, p.affine, LABELS["kidney_right"])[2]
    zl = _centroid_ras(p.labels, p.affine, LABELS["kidney_left"])[2]
    assert zr < zl


def test_lesion_descriptions_match_their_voxels():
    cfg = PhantomConfig(adrenal_lesion_rate=1.0, lesion_rate=1.0)
    for p in generate_cohort(4, seed=5, config=cfg):
        for les in p.lesions:
            assert LABELS[les.kind] in p.label_values()
            if les.side in ("left", "right"):
                sign = 1 if les.side == "right" else -1
                assert sign * les.center_ras_mm[0] > 0, les


def test_vocabulary_covers_every_label_and_config_file_is_current():
    resolved = PHANTOM_VOCABULARY.resolve(LABELS)
    covered = {v for vals in resolved.values() for v in vals}
    assert covered == set(LABELS.values()) - {0}
    on_disk = json.loads((ROOT / "config" / "phantom_vocabulary.json").read_text())
    assert on_disk == PHANTOM_VOCABULARY.to_dict(), "regenerate config/phantom_vocabulary.json from PHANTOM_VOCABULARY"
    assert Vocabulary.load(ROOT / "config" / "phantom_vocabulary.json") == PHANTOM_VOCABULARY
    for c in PHANTOM_VOCABULARY.concepts:
        assert len(c.all_train_prompts) >= 4 and len(c.eval_prompts) >= 2
    left = PHANTOM_VOCABULARY.concept("left kidney")
    assert all("left" in p or "sinistral" in p for p in left.all_train_prompts + left.eval_prompts)


def test_vocabulary_rejects_ambiguous_or_leaking_prompts(tmp_path):
    base = {"concepts": [{"name": "liver", "labels": [1], "prompts": ["hepar"], "eval_prompts": ["liver organ"]}]}
    Vocabulary.from_dict(base)
    leak = {"concepts": [{"name": "liver", "labels": [1], "prompts": ["hepar"], "eval_prompts": ["Hepar"]}]}
    with pytest.raises(VocabularyError, match="held-out"):
        Vocabulary.from_dict(leak)
    clash = {"concepts": [{"name": "liver", "labels": [1], "prompts": ["organ"]},
                          {"name": "spleen", "labels": [2], "prompts": ["organ"]}]}
    with pytest.raises(VocabularyError, match="both"):
        Vocabulary.from_dict(clash)
    with pytest.raises(VocabularyError, match="does not define"):
        Vocabulary.from_dict({"concepts": [{"name": "x", "labels": ["nope"]}]}).resolve({"background": 0, "a": 1})
    bad = tmp_path / "v.json"
    bad.write_text("{not json")
    with pytest.raises(InputError):
        Vocabulary.load(bad)


def test_nnunet_round_trip(tmp_path):
    ds = write_phantom_dataset(tmp_path / "ds", 3, seed=2)
    assert [c.case_id for c in ds.cases] == ["phantom_0000", "phantom_0001", "phantom_0002"]
    assert ds.labels == {k: v for k, v in LABELS.items() if k != "adrenal_lesion"}
    assert (tmp_path / "ds" / "vocabulary.json").is_file()
    for case in ds.cases:
        ph = generate_phantom(2, int(case.case_id[-4:]))
        img, seg = nib.load(case.images[0]), nib.load(case.label)
        assert np.array_equal(np.asarray(img.dataobj), ph.image)
        assert np.array_equal(np.asarray(seg.dataobj), ph.labels)
        assert np.allclose(img.affine, ph.affine, atol=1e-4) and np.allclose(seg.affine, ph.affine, atol=1e-4)
    again = read_nnunet_dataset(tmp_path / "ds")
    assert again.cases == ds.cases


def test_nnunet_layout_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="dataset.json"):
        read_nnunet_dataset(tmp_path)
    ds = write_phantom_dataset(tmp_path / "ds", 2, seed=2)
    ds.cases[1].label.unlink()
    with pytest.raises(DatasetLayoutError, match="no label file"):
        read_nnunet_dataset(tmp_path / "ds")


def test_phantom_config_is_validated():
    with pytest.raises(ConfigError):
        PhantomConfig(orientations=("XYZ",))
    with pytest.raises(ConfigError):
        PhantomConfig(adrenal_lesion_rate=1.5)


def test_report_has_findings_negations_and_normals():
    cfg = PhantomConfig(lesion_rate=1.0, adrenal_lesion_rate=1.0)
    p = generate_phantom(1, 0, cfg)
    rep = write_report(p, "s1")
    assert len(rep.findings) == len(p.lesions) > 0
    for f in rep.findings:
        assert f.sentence in rep.text
    for les in p.lesions:
        if les.side:
            assert les.location in rep.text
    assert "unremarkable" in rep.text and "Impression:" in rep.text
    empty = write_report(generate_phantom(1, 0, PhantomConfig(lesion_rate=0.0)), "s2")
    assert not empty.findings and "No pulmonary nodules." in empty.text and "No enlarged lymph nodes." in empty.text


def test_demo_cohort_reference_matches_dcm2niix_grid(tmp_path):
    """The reference label map lies on the grid the converter produces from the DICOM series."""
    dcm2niix = shutil.which("dcm2niix") or str(Path(sys.executable).parent / "dcm2niix")
    studies = write_demo_cohort(tmp_path / "demo", 2, seed=4)
    assert (tmp_path / "demo" / "samples.tsv").read_text().splitlines()[0] == "study_id\tdicom\treport\treference"
    s = studies[0]
    ref = json.loads((s.reference / "reference.json").read_text())
    assert "left kidney" in ref["concepts"]
    text = s.report.read_text()
    assert all(f["sentence"] in text for f in ref["findings"])
    assert len(list(s.dicom_dir.glob("*.dcm"))) > 10
    if not os.path.exists(dcm2niix):
        pytest.skip("dcm2niix not installed")
    out = tmp_path / "nii"
    out.mkdir()
    subprocess.run([dcm2niix, "-z", "y", "-f", "img", "-o", str(out), str(s.dicom_dir)], check=True, capture_output=True)
    img = nib.load(next(out.glob("img*.nii.gz")))
    lab = nib.load(s.reference / "labels.nii.gz")
    assert img.shape == lab.shape
    assert np.allclose(img.affine, lab.affine, atol=1e-3)
    ph = generate_phantom(4, 0, case_id=s.study_id)
    hu = np.asarray(img.dataobj)
    labels = np.asarray(lab.dataobj)
    assert np.median(hu[labels == LABELS["spine"]]) > 250 and np.median(hu[labels == 0]) < -900
    assert np.array_equal(np.sort(np.unique(labels)), np.sort(np.unique(ph.labels)))
