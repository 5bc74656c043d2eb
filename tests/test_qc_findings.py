"""A finding's fields in its statistics row (from the manifest entry, contract C3, or the
findings file) and the cohort's findings.parquet: every finding, with its mask or why not."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest

from voxtell.cli import main
from voxtell.prompts import prompt_id
from voxtell.stats.findings_table import FINDINGS_SCHEMA, write_findings_parquet
from voxtell.stats.parquet import aggregate, write_stats_parquet
from voxtell.stats.study import compute_study_stats


def _finding(fid, sentence, prompt, **kw):
    out = {"finding_id": fid, "sentence": sentence, "prompt": prompt, "section": "findings", "char_start": 0,
           "char_end": len(sentence), "negated": False, "uncertain": False, "assertion": "present",
           "concepts": ["lesion", "liver"], "laterality": "right", "measurements_mm": [150.0], "duplicate_of": None}
    out.update(kw)
    return out


FINDINGS = [
    _finding("s1-f000", "A large liver lesion of 15 cm.", "A large liver lesion of 15 cm"),
    _finding("s1-f001", "No splenic lesion.", "No splenic lesion", negated=True, assertion="negated",
             concepts=["lesion", "spleen"], laterality=None, measurements_mm=[]),
    _finding("s1-f002", "A large liver lesion of 15 cm.", "A large liver lesion of 15 cm", duplicate_of="s1-f000"),
    _finding("s1-f003", "Possible nodule in the left lung, 9 mm.", "Possible nodule in the left lung, 9 mm",
             uncertain=True, concepts=["nodule", "left lung"], laterality="left", measurements_mm=[9.0]),
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, totalseg_dir):
    root = tmp_path_factory.mktemp("findings")
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    lab = np.asanyarray(seg.dataobj)
    masks = root / "segment" / "s1"
    masks.mkdir(parents=True)
    entries = []
    for text, arr, finding in (("liver", lab == 5, None), (FINDINGS[0]["prompt"], lab == 5, FINDINGS[0]),
                               (FINDINGS[3]["prompt"], np.zeros(lab.shape, bool), FINDINGS[3])):
        pid = prompt_id(text)
        nib.save(nib.Nifti1Image(arr.astype(np.uint8), seg.affine), masks / f"{pid}.nii.gz")
        entry = {"prompt_id": pid, "prompt": text, "file": f"{pid}.nii.gz", "source": "finding" if finding else "config"}
        if finding is FINDINGS[0]:
            entry.update(finding_id=finding["finding_id"], finding=finding)  # contract C3
        elif finding is not None:
            entry.update(finding_id=finding["finding_id"])  # an older manifest: fields from the findings file
        entries.append(entry)
    (masks / "manifest.json").write_text(json.dumps({"study_id": "s1", "prompts": entries}))
    findings = root / "findings" / "s1" / "findings.jsonl"
    findings.parent.mkdir(parents=True)
    findings.write_text("".join(json.dumps(f) + "\n" for f in FINDINGS))
    other = root / "findings" / "s2" / "findings.jsonl"  # a study whose segmentation failed
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps(_finding("s2-f000", "A 2 cm liver lesion.", "A 2 cm liver lesion")) + "\n")
    study = compute_study_stats(totalseg_dir / "example_ct_sm.nii.gz", masks, findings=findings)
    write_stats_parquet(study, root / "stats" / "s1.parquet")
    res = aggregate([root / "stats" / "s1.parquet"], root / "cohort")
    return root, study, res, {"s1": findings, "s2": other}


def test_finding_fields_reach_the_row(cohort):
    _, study, _, _ = cohort
    rows = {r["prompt"]: r for r in study.rows}
    lesion, nodule, liver = rows[FINDINGS[0]["prompt"]], rows[FINDINGS[3]["prompt"]], rows["liver"]
    assert lesion["sentence"] == FINDINGS[0]["sentence"] and lesion["section"] == "findings"
    assert lesion["concepts"] == ["lesion", "liver"] and lesion["laterality"] == "right"
    assert lesion["assertion"] == "present" and lesion["uncertain"] is False
    assert json.loads(lesion["measurements"]) == [150.0] and lesion["report_diameter_mm"] == 150.0
    # the liver is segmented in the same study: the lesion is checked against it
    assert lesion["organ_prompt_id"] == prompt_id("liver") and lesion["organ_fraction"] == 1.0
    assert nodule["uncertain"] is True and nodule["laterality"] == "left" and nodule["finding_id"] == "s1-f003"
    assert nodule["qc_flags"] == ["empty_finding"] and nodule["needs_review"]
    assert liver["sentence"] is None and liver["concepts"] is None and liver["qc_flags"] == []
    assert all(r["warnings"] == [] and r["mask_path"].endswith(".nii.gz") for r in study.rows)


def test_findings_table_has_every_finding_and_why(cohort):
    root, _, res, files = cohort
    out = write_findings_parquet(files, res.stats_path, root / "cohort" / "findings.parquet")
    table = pq.read_table(out)
    assert table.schema.remove_metadata().equals(FINDINGS_SCHEMA.remove_metadata())
    rows = {r["finding_id"]: r for r in table.to_pylist()}
    assert list(rows) == ["s1-f000", "s1-f001", "s1-f002", "s1-f003", "s2-f000"]
    assert rows["s1-f000"]["gets_mask"] and rows["s1-f000"]["no_mask_reason"] is None
    assert rows["s1-f000"]["volume_ml"] > 1000 and rows["s1-f000"]["prompt_id"] == prompt_id(FINDINGS[0]["prompt"])
    assert "negated" in rows["s1-f001"]["no_mask_reason"] and not rows["s1-f001"]["gets_mask"]
    assert "s1-f000" in rows["s1-f002"]["no_mask_reason"]
    assert rows["s1-f003"]["needs_review"] and rows["s1-f003"]["qc_flags"] == ["empty_finding"]
    assert "stage failed" in rows["s2-f000"]["no_mask_reason"] and rows["s2-f000"]["volume_ml"] is None


def test_cli_aggregate_writes_findings_table(cohort, tmp_path):
    root, _, _, files = cohort
    (tmp_path / "checks.json").write_text(json.dumps({"size_ratio_max": 20}))
    assert main(["aggregate", str(root / "stats" / "s1.parquet"), "-o", str(tmp_path / "c"),
                 "--findings", *map(str, files.values()), "--qc-checks", str(tmp_path / "checks.json")]) == 0
    table = pq.read_table(tmp_path / "c" / "findings.parquet")
    assert sorted(set(table["study_id"].to_pylist())) == ["s1", "s2"]
    (tmp_path / "bad.json").write_text(json.dumps({"size_ratio": 20}))
    assert main(["aggregate", str(root / "stats" / "s1.parquet"), "-o", str(tmp_path / "d"),
                 "--qc-checks", str(tmp_path / "bad.json")]) == 1  # ConfigError: unknown key
    assert not (tmp_path / "d").exists()


def test_damaged_findings_file_is_a_clear_error(cohort, tmp_path):
    root, _, res, _ = cohort
    bad = tmp_path / "s1" / "findings.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"finding_id": "x", "prompt": "a"}\n{not json\n')
    from voxtell.errors import InputError

    with pytest.raises(InputError, match="line 2 is not JSON"):
        write_findings_parquet({"s1": bad}, res.stats_path, tmp_path / "f.parquet")
    assert not (tmp_path / "f.parquet").exists()
    assert Path(res.stats_path).is_file()
