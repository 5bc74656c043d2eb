"""One bad study never costs another study or the cohort table (issue 19's workflow test).

A tiny cohort of good NIfTI studies plus one study of each failing kind, run through the
real workflow (random tiny model, two fixed prompts):

- a DICOM study inside a folder whose name has undecodable bytes (a Latin-1 name on a
  UTF-8 system; it used to crash the convert job's status writer, taking the whole shard
  with it),
- an image that does not exist,
- a reference mask on another grid than the image,
- a deleted mask after the run (redone by the next run, and only that study).

The good studies' rows equal those of a run without the bad ones; each bad study has a
status row (or row warnings) naming its cause; the run exits 1 with the summary; a study id
that collides with the workflow's own names is refused before anything runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from badcohort import _nifti, _phantom, _series  # noqa: E402
from voxtell.cohort import shard_of  # noqa: E402
from test_workflow_support import ENCODER, make_random_model, planned_jobs, snakemake  # noqa: E402

pytestmark = pytest.mark.slow

FIXED = ["liver", "spleen"]
GOOD = ["g01", "g02", "g03"]
AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
VALUES = ["voxel_count", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "n_components",
          "intensity_mean", "intensity_max"]


def _work(root: Path, model: Path, with_bad: bool) -> Path:
    data = root / "inputs"
    rows = ["study_id\timage\tdicom\treference"]
    for i, s in enumerate(GOOD):
        _nifti(data / f"{s}.nii.gz", _phantom(10 + i).astype(np.int16), AFFINE)
        rows.append(f"{s}\t{s}.nii.gz\t\t")
    if with_bad:
        crash = os.path.join(os.fsencode(data / "crash01"), b"\xdcbersicht")  # not UTF-8
        _series(Path(os.fsdecode(crash)), seed=3)
        rows.append("crash01\t\tcrash01\t")
        rows.append("missing01\tnowhere.nii.gz\t\t")
        _nifti(data / "badref01.nii.gz", _phantom(20).astype(np.int16), AFFINE)
        ref = data / "badref01-ref"
        _nifti(ref / "liver.nii.gz", np.ones((20, 20, 5), np.uint8), np.diag([2.0, 2.0, 5.0, 1.0]))
        (ref / "map.json").write_text(json.dumps({"liver": {"file": "liver.nii.gz"}}))
        rows.append("badref01\tbadref01.nii.gz\t\tbadref01-ref/map.json")
    (data / "samples.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    work = root / "work"
    (work / "config").mkdir(parents=True)
    cfg = {
        "samples": str(data / "samples.tsv"),
        "model": {"dir": str(model)},
        "text_encoder": {"id": ENCODER},
        "embeddings": {"bank": str(root.parent / "bank.npz")},
        "prompts": {"fixed": FIXED, "findings": False},
        "segment": {"n_shards": 2, "device": "cpu"},
        "stats": {"qc": False},
        "convert": {"min_slices": 5},
    }
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return work


def _tables(work: Path):
    res = work / "results" / "cohort"
    return pd.read_parquet(res / "stats.parquet"), pd.read_parquet(res / "status.parquet")


def _values(stats: pd.DataFrame) -> pd.DataFrame:
    good = stats[stats.study_id.isin(GOOD)].sort_values(["study_id", "prompt_id"]).reset_index(drop=True)
    return good[["study_id", "prompt_id", *VALUES]]


def test_bad_studies_cost_no_good_study_and_are_named(tmp_path):
    model = tmp_path / "model"
    make_random_model(model, "tiny")
    mixed = _work(tmp_path / "mixed", model, with_bad=True)
    run = snakemake(mixed, "--cores", "2", "--keep-going", check=False)
    text = run.stdout + run.stderr
    assert run.returncode == 1 and "studies per stage" in text and "Error in rule" not in text, text[-5000:]
    stats, status = _tables(mixed)

    clean = _work(tmp_path / "clean", model, with_bad=False)
    snakemake(clean, "--cores", "2")
    clean_stats, _ = _tables(clean)
    pd.testing.assert_frame_equal(_values(stats), _values(clean_stats), check_exact=False, rtol=1e-9)
    assert set(stats.study_id) >= set(GOOD)

    def failed(study: str) -> pd.DataFrame:
        return status[(status.study_id == study) & (status.status == "failed")]

    # the undecodable folder name: no crash; a row either way, the shard's other studies finished
    crash = status[status.study_id == "crash01"]
    assert set(crash.stage) == {"convert", "segment", "stats"}
    if len(failed("crash01")):
        assert "\\xdcbersicht" in failed("crash01").iloc[0].message or "crash01" in failed("crash01").iloc[0].message
    # the missing image: convert failed, naming the path; later stages skipped with the root cause
    miss = status[status.study_id == "missing01"].set_index("stage")
    assert miss.loc["convert", "status"] == "failed" and "nowhere.nii.gz" in miss.loc["convert", "message"]
    assert (miss.loc[["segment", "stats"], "status"] == "skipped").all()
    assert "nowhere.nii.gz" in miss.loc["segment", "message"]
    # the reference on another grid costs its prompt's Dice, not the study's rows: named on the row
    ref_rows = stats[stats.study_id == "badref01"]
    assert len(ref_rows) == len(FIXED) and not len(failed("badref01"))
    liver = ref_rows[ref_rows.prompt == "liver"].iloc[0]
    assert pd.isna(liver.dice) and any("reference not used" in w and "grid" in w.lower() for w in liver.warnings)
    assert "missing01, convert:" in text  # named in the run summary

    # a mask deleted after the run is redone by the next run, and only that study
    mask = next((mixed / "results" / "segment" / "g02").glob("*.nii.gz"))
    mask.unlink()
    jobs = planned_jobs(mixed)
    assert jobs.get("segment_shard") == 1 and "convert_shard" not in jobs
    again = snakemake(mixed, "--cores", "2", "--keep-going", check=False)
    assert again.returncode == 1 and mask.is_file(), (again.stdout + again.stderr)[-3000:]
    shard = f"{shard_of('g02', 2):03d}"
    studies = json.loads((mixed / "results" / "segment" / "shards" / f"{shard}.json").read_text())["studies"]
    # g02 segmented again; its shard's other studies reused (skipped ones are re-recorded, never segmented)
    assert {s for s, r in studies.items() if not r["reused"] and r["status"] != "skipped"} == {"g02"}
    pd.testing.assert_frame_equal(_values(_tables(mixed)[0]), _values(clean_stats), check_exact=False, rtol=1e-9)

    # an id that collides with the workflow's own names is refused before anything runs
    samples = Path(yaml.safe_load((mixed / "config" / "config.yaml").read_text())["samples"])
    samples.write_text(samples.read_text() + "Shards\tg01.nii.gz\t\t\n", encoding="utf-8")
    refused = snakemake(mixed, "-n", check=False)
    assert refused.returncode != 0 and "'Shards' is a name the workflow uses" in refused.stdout + refused.stderr
