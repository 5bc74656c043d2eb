"""Workflow: a study folder holding a CT and its RTSTRUCT gets the RTSTRUCT's Dice, no manual step.

The real planning CT of MIRP STS_001 with its clinical RTSTRUCT (GTV_Mass_CT, drawn on
another series of the same frame of reference) sits in one study folder; the samples table
names only the folder (reference defaults to auto for DICOM studies), the config maps
``GTV*`` to the fixed prompt. The small demo model segments it (its mask is whatever it
is); the cohort table must carry Dice, HD95 and volume difference against the RTSTRUCT's
GTV, recomputed here from the drawn reference and the published mask. The same run
exports the masks as DICOM SEG + RTSTRUCT (target export_dicom).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from test_workflow_support import ENCODER, ROOT, snakemake, write_config
from voxtell.prompts import prompt_id

CT = Path(__file__).parent / "data" / "mirp_sts_001" / "CT"
PROMPT = "soft tissue mass"


@pytest.mark.slow
def test_rtstruct_in_study_folder_becomes_reference(tmp_path: Path) -> None:
    study = tmp_path / "data" / "sts001"
    shutil.copytree(CT / "dicom" / "image", study / "CT")
    shutil.copy(CT / "dicom" / "mask" / "RS.dcm", study / "RS.dcm")
    (tmp_path / "samples.tsv").write_text("study_id\tdicom\nsts001\tdata/sts001\n")
    write_config(tmp_path, {
        "samples": "samples.tsv",
        "demo": {"enabled": False},
        "model": {"dir": str(ROOT / "models" / "demo-small")},
        "text_encoder": {"id": ENCODER},
        "embeddings": {"bank": "resources/bank.npz"},
        "prompts": {"fixed": [PROMPT], "findings": False},
        "segment": {"n_shards": 1, "device": "cpu"},
        "stats": {"qc": False},
        "reference": {"roi_map": [{"roi": "GTV*", "prompt": PROMPT}]},
        "export_dicom": {"enabled": True},
        "threads": {"segment": 2, "embed": 1},
    })
    snakemake(tmp_path, "--cores", "2", "all", "export_dicom", timeout=1500)

    stats = pd.read_parquet(tmp_path / "results" / "cohort" / "stats.parquet")
    (row,) = stats[stats.prompt_id == prompt_id(PROMPT)].itertuples()
    ref_dir = tmp_path / "results" / "stats" / "sts001" / "reference"
    (ref_file,) = ref_dir.rglob("gtv_mass_ct.nii.gz")
    ref = np.asanyarray(nib.load(ref_file).dataobj) > 0
    mask = np.asanyarray(nib.load(tmp_path / "results" / "segment" / "sts001" / f"{prompt_id(PROMPT)}.nii.gz").dataobj) > 0
    expected = 1.0 if not (ref.any() or mask.any()) else 2 * (ref & mask).sum() / (ref.sum() + mask.sum())
    assert row.dice == pytest.approx(expected, abs=1e-6)
    voxel_ml = abs(np.linalg.det(nib.load(ref_file).affine[:3, :3])) / 1000
    assert row.reference_volume_ml == pytest.approx(ref.sum() * voxel_ml, rel=1e-6)
    assert row.reference_volume_ml == pytest.approx(365.3, abs=4.0)  # the clinical GTV (curated mask: 365.3 mL)
    assert row.volume_difference_ml == pytest.approx(row.volume_ml - row.reference_volume_ml, abs=1e-6)
    assert row.hd95_mm is None or np.isnan(row.hd95_mm) or row.hd95_mm >= 0
    assert any("same frame of reference" in w for w in row.warnings)  # the re-exported series, named

    status = json.loads((tmp_path / "results" / "export_dicom" / "sts001" / "status.json").read_text())
    assert status["status"] == "ok", status
    assert (tmp_path / "results" / "export_dicom" / "sts001" / "seg.dcm").is_file()
    ref_record = json.loads((tmp_path / "results" / "convert" / "sts001" / "dicom_ref.json").read_text())
    assert len(ref_record["sop_instance_uids"]) == 59
