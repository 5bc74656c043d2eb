"""RT objects in study folders as references (reference: auto): discovery, drawing, ROI -> prompt rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxtell.cohort.samples import validate_samples
from voxtell.io.convert import convert_study
from voxtell.io.dicom_export import export_study
from voxtell.io.dicom_write import write_dicom_series, write_rtstruct, write_text_sr
from voxtell.io.rt_objects import draw_rt_references, find_rt_objects, scatter_onto_grid
from voxtell.prompts import prompt_id
from voxtell.stats.errors import ReferenceMapError
from voxtell.stats.reference import RoiRule, auto_reference_map, parse_roi_map, prepare_auto_reference

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
AFFINE = np.diag([-1.0, -1.0, 2.0, 1.0])


def _box(k: int, i0: float, i1: float, j0: float, j1: float) -> np.ndarray:
    corners = np.array([[i0, j0, k, 1], [i1, j0, k, 1], [i1, j1, k, 1], [i0, j1, k, 1]], float)
    return (_LPS @ AFFINE @ corners.T).T[:, :3]


def _prompts(*entries: tuple[str, list[str] | None, str]) -> list[dict]:
    out = []
    for text, concepts, assertion in entries:
        finding = None if concepts is None else {"concepts": concepts, "assertion": assertion}
        out.append({"prompt_id": prompt_id(text), "prompt": text, "finding": finding})
    return out


def test_roi_rules_exact_glob_regex_and_concepts(tmp_path: Path) -> None:
    prompts = _prompts(
        ("liver", None, ""),
        ("3 cm mass in the right lower lobe", ["mass", "lung"], "present"),
        ("no tumour in the left lung", ["tumor", "lung"], "negated"),
        ("enlarged node", ["lymph node"], "present"),
    )
    rules = parse_roi_map([
        {"roi": "GTV*", "concepts": ["gross tumor volume", "tumor", "mass"]},
        {"roi": "re:^ln[_ ]?\\d", "prompt_regex": "node"},
        {"roi": "Leber", "prompt": "liver"},
    ])
    masks = [("GTVp", tmp_path / "a"), ("LN_1", tmp_path / "b"), ("leber", tmp_path / "c"), ("Liver", tmp_path / "d"),
             ("Spinal cord", tmp_path / "e")]
    ref_map, warnings = auto_reference_map(masks, prompts, rules)
    got = {pid: spec.name for pid, spec in ref_map.entries.items()}
    assert got == {
        prompt_id("3 cm mass in the right lower lobe"): "GTVp",  # the affirmed finding only, not the negated one
        prompt_id("enlarged node"): "LN_1",
        prompt_id("liver"): "leber",
    }
    assert any("'Liver'" in w and "already has reference ROI 'leber'" in w for w in warnings)


@pytest.mark.parametrize(
    "rules, match",
    [
        ([{"prompt": "liver"}], "needs 'roi'"),
        ([{"roi": "GTV"}], "exactly one of"),
        ([{"roi": "GTV", "prompt": "a", "concepts": ["b"]}], "exactly one of"),
        ([{"roi": "re:(", "prompt": "a"}], "not a valid regular expression"),
        ([{"roi": "GTV", "prompt_regex": "[", }], "not a valid regular expression"),
        ([{"roi": "GTV", "prompt": "a", "colour": "red"}], "unknown key"),
        (["GTV"], "needs 'roi'"),
    ],
)
def test_bad_roi_rules_are_refused(rules, match: str) -> None:
    with pytest.raises(ReferenceMapError, match=match):
        parse_roi_map(rules)


def test_rule_matching_forms() -> None:
    assert RoiRule("GTV*", prompt="x").matches("gtv_primary") and not RoiRule("GTV*", prompt="x").matches("CTV")
    assert RoiRule("re:node", prompt="x").matches("LEFT NODE 2") and RoiRule("Liver", prompt="x").matches(" LIVER ")
    assert not RoiRule("Liver", prompt="x").matches("Liver_PRV")


def test_samples_reference_auto_is_default_for_dicom(tmp_path: Path) -> None:
    rows = [
        {"study_id": "a", "dicom": "dcm/a"},
        {"study_id": "b", "dicom": "dcm/b", "reference": "none"},
        {"study_id": "c", "dicom": "dcm/c", "reference": "AUTO"},
        {"study_id": "d", "image": "img/d.nii.gz"},
        {"study_id": "e", "dicom": "dcm/e", "reference": "refs/e"},
    ]
    got = {s.study_id: s.reference for s in validate_samples(rows, base_dir=tmp_path)}
    assert got["a"] == "auto" and got["b"] is None and got["c"] == "auto" and got["d"] is None
    assert got["e"] == str(tmp_path / "refs" / "e")


@pytest.fixture()
def study(tmp_path: Path) -> dict:
    """A CT study folder with an RTSTRUCT, a text SR and a junk file; converted."""
    volume = np.full((12, 10, 12), -1000.0)
    volume[2:10, 2:8, 1:7] = 50.0
    series = write_dicom_series(volume, AFFINE, tmp_path / "study" / "ct")
    write_rtstruct(tmp_path / "study" / "RS1.dcm", series, {
        "GTV_1": [_box(k, 1.5, 5.5, 1.5, 4.5) for k in (2, 3)],
        "Liver": [_box(4, 5.5, 8.5, 4.5, 7.5)],
    })
    write_text_sr(tmp_path / "study" / "sr.dcm", "dose report", study_uid=series.study_uid)
    (tmp_path / "study" / "notes.txt").write_text("not DICOM")
    conv = convert_study(tmp_path / "study", tmp_path / "conv")
    return {"series": series, "conv": conv, "root": tmp_path}


def test_rtstruct_and_seg_in_the_folder_are_drawn(study) -> None:
    root, conv = study["root"], study["conv"]
    objects, warnings = find_rt_objects(root / "study")
    assert [(o.path.name, o.kind) for o in objects] == [("RS1.dcm", "RTSTRUCT")] and warnings == []
    # add a DICOM SEG made by our exporter from a mask on the image grid
    image = nib.load(conv.image_path)
    mask = np.zeros(image.shape, np.uint8)
    mask[3:6, 2:5, 1:4] = 1
    seg_dir = root / "segment"
    seg_dir.mkdir()
    nib.save(nib.Nifti1Image(mask, image.affine), seg_dir / "kidney.nii.gz")
    (seg_dir / "manifest.json").write_text(json.dumps({
        "study_id": "s", "image": str(conv.image_path), "model": {"model_id": "m", "sha256": "0" * 64},
        "prompts": [{"prompt_id": "kidney", "prompt": "kidney", "file": "kidney.nii.gz"}],
    }))
    export_study(seg_dir, root / "study", root / "export")
    shutil.copy(root / "export" / "seg.dcm", root / "study" / "SEG.dcm")

    drawn = draw_rt_references(root / "study", conv.image_path, root / "refs")
    names = {m.name: m for m in drawn.masks}
    assert set(names) == {"GTV_1", "Liver", "kidney"}
    assert names["GTV_1"].voxel_count == 2 * 4 * 3 and names["Liver"].voxel_count == 9
    seg_back = np.asanyarray(nib.load(names["kidney"].file).dataobj)
    np.testing.assert_array_equal(seg_back, mask)  # the SEG lands on the image grid voxel for voxel
    assert drawn.warnings == []


def test_auto_reference_with_an_rtstruct_of_another_frame_is_warned_not_fatal(study) -> None:
    root, conv = study["root"], study["conv"]
    other = write_dicom_series(np.full((12, 10, 12), -1000.0), AFFINE, root / "elsewhere")  # another frame
    write_rtstruct(root / "study" / "RS_other.dcm", other, {"GTV_2": [_box(3, 1.5, 5.5, 1.5, 4.5)]})
    prompts = _prompts(("liver", None, ""), ("tumour", ["tumor"], "present"))
    rules = parse_roi_map([{"roi": "GTV*", "concepts": ["tumor"]}])
    ref_map, warnings = prepare_auto_reference(root / "study", conv.image_path, prompts, rules, root / "refs")
    assert ref_map is not None
    assert {pid: s.name for pid, s in ref_map.entries.items()} == {prompt_id("tumour"): "GTV_1", prompt_id("liver"): "Liver"}
    assert any("RS_other.dcm" in w and "FrameOfReferenceMismatchError" in w for w in warnings)


def test_a_damaged_rt_object_is_named_and_skipped(study) -> None:
    root, conv = study["root"], study["conv"]
    data = (root / "study" / "RS1.dcm").read_bytes()
    (root / "study" / "RS1.dcm").write_bytes(data[: len(data) // 2])  # truncated structure set
    drawn = draw_rt_references(root / "study", conv.image_path, root / "refs")
    assert drawn.masks == [] and any("RS1.dcm" in w for w in drawn.warnings)


def test_scatter_refuses_other_grids() -> None:
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 2, 3] = True
    out, outside = scatter_onto_grid(mask, np.diag([1.0, 1.0, 1.0, 1.0]), np.diag([-1.0, 1.0, 1.0, 1.0]) @ np.eye(4), (6, 6, 6))
    assert outside == 1 and not out.any()  # x flipped: index -1 is outside the grid
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    assert scatter_onto_grid(mask, shifted, np.eye(4), (4, 4, 4)) is None
    assert scatter_onto_grid(mask, np.diag([2.0, 1.0, 1.0, 1.0]), np.eye(4), (8, 4, 4)) is None
