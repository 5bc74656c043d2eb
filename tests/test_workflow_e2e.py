"""End to end: the real workflow on a 3-study demo cohort in a scratch folder.

Real components throughout: phantom DICOM written with pydicom, dcm2niix, scispaCy
findings, MiniLM embeddings, the VoxTell network code (tiny preset, random weights: the
masks are arbitrary, so values are checked against the masks themselves, not anatomy),
statistics, Parquet and the QC report. Then the incremental behaviours, by dry runs and one
real rerun that adds a good and a broken study.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import voxtell
from voxtell.cohort import shard_of
from voxtell.cohort.stage_aggregate import FINDINGS_ROW
from voxtell.prompts import prompt_id
from voxtell.reports.findings import gets_mask

from test_workflow_support import demo_config, make_random_model, planned_jobs, snakemake, write_config

N_SHARDS = 2


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Run the whole workflow once; return the working folder and the model's sha256."""
    work = tmp_path_factory.mktemp("workflow")
    sha = make_random_model(work / "model")
    write_config(work, demo_config(n_studies=3, n_shards=N_SHARDS))
    snakemake(work, "--cores", "2")
    return work, sha


def _prompts_of(work: Path, study: str) -> set[str]:
    prompts = {prompt_id("liver"), prompt_id("left kidney")}
    for line in (work / "results" / "findings" / study / "findings.jsonl").read_text().splitlines():
        f = json.loads(line)
        if gets_mask(f)[0]:
            prompts.add(prompt_id(f["prompt"]))
    return prompts


def test_cohort_table_values(cohort):
    work, sha = cohort
    stats = pd.read_parquet(work / "results" / "cohort" / "stats.parquet")
    assert sorted(stats.study_id.unique()) == ["demo001", "demo002", "demo003"]
    for study, rows in stats.groupby("study_id"):
        assert set(rows.prompt_id) == _prompts_of(work, study)  # fixed prompts + affirmed findings
    assert (stats.model_sha256 == sha).all() and (stats.pipeline_version == voxtell.__version__).all()
    assert set(stats.source) == {"config", "finding"}
    # a finding's fields come through the manifest (contract C3), equal to findings.jsonl's
    manifest = json.loads((work / "results" / "segment" / "demo001" / "manifest.json").read_text())
    entries = {p["finding_id"]: p for p in manifest["prompts"] if p["source"] == "finding"}
    records = {json.loads(x)["finding_id"]: json.loads(x)
               for x in (work / "results" / "findings" / "demo001" / "findings.jsonl").read_text().splitlines()}
    assert entries and all(p["finding"]["sentence"] == records[fid]["sentence"] for fid, p in entries.items())
    assert all(e["finding"] is None for e in manifest["prompts"] if e["source"] == "config")
    rows = stats[(stats.study_id == "demo001") & (stats.source == "finding")]
    assert set(rows.finding_id) == set(entries)
    assert all(r.sentence == records[r.finding_id]["sentence"] for r in rows.itertuples())

    # volumes recomputed from the published masks and the image grid
    for row in stats.sample(4, random_state=0).itertuples():
        mask = nib.load(str(work / "results" / "segment" / row.study_id / f"{row.prompt_id}.nii.gz"))
        voxels = int(np.count_nonzero(np.asarray(mask.dataobj)))
        assert row.voxel_count == voxels
        assert row.volume_ml == pytest.approx(voxels * abs(np.linalg.det(mask.affine[:3, :3])) / 1000, rel=1e-4)

    # Dice against the demo's ground truth for the fixed prompts, recomputed independently
    fixed = stats[stats.source == "config"]
    assert fixed.dice.notna().all() and fixed.dice.between(0, 1).all()
    row = fixed[(fixed.study_id == "demo002") & (fixed.prompt == "liver")].iloc[0]
    ref_map = json.loads((work / "demo" / "cohort" / "reference" / "demo002" / "reference_map.json").read_text())
    ref = np.asarray(nib.load(str(work / "demo" / "cohort" / "reference" / "demo002" / ref_map["liver"]["file"])).dataobj) > 0
    seg = np.asarray(nib.load(str(work / "results" / "segment" / "demo002" / f"{row.prompt_id}.nii.gz")).dataobj) > 0
    assert row.dice == pytest.approx(2 * (ref & seg).sum() / (ref.sum() + seg.sum()), abs=1e-6)
    # every affirmed finding is scored against the one lesion its sentence describes
    findings = stats[stats.source == "finding"]
    assert len(findings) and findings.dice.notna().all() and findings.reference_volume_ml.lt(50).all()


def test_provenance_recorded(cohort):
    work, sha = cohort
    versions = json.loads((work / "results" / "cohort" / "versions.json").read_text())
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(work / "results" / "cohort" / "stats.parquet").metadata.items()}
    assert versions["model_sha256"] == sha and versions["pipeline_version"] == voxtell.__version__
    assert meta["config_hash"] == versions["config_hash"] and len(versions["config_hash"]) == 16
    assert versions["tools"]["dcm2niix"] and versions["tools"]["torch"]
    assert set(versions["dice"]) == {"liver", "left kidney", FINDINGS_ROW}
    manifest = json.loads((work / "results" / "segment" / "demo001" / "manifest.json").read_text())
    assert manifest["model"]["sha256"] == sha
    html = (work / "results" / "cohort" / "qc.html").read_text()
    assert "data:image/png;base64," in html
    status = pd.read_parquet(work / "results" / "cohort" / "status.parquet")
    assert (status.status == "ok").all() and set(status.stage) == {"convert", "findings", "segment", "stats"}
    assert "warnings" in status.columns and all(isinstance(list(w), list) for w in status.warnings)


def test_rerun_with_nothing_new_does_nothing(cohort):
    work, _ = cohort
    assert planned_jobs(work) == {}


def test_prompt_set_or_model_change_resegments_every_shard(cohort, tmp_path):
    work, _ = cohort
    jobs = planned_jobs(work, "--config", "prompts={'fixed': ['liver', 'left kidney', 'spleen']}")
    assert jobs["segment_shard"] == N_SHARDS and jobs["stats_shard"] == N_SHARDS
    assert "convert_shard" not in jobs and "findings_shard" not in jobs
    other = work / "model-v2"
    make_random_model(other, seed=1)
    jobs = planned_jobs(work, "--config", f"model={{'dir': '{other}'}}")
    assert jobs["segment_settings"] == 1 and jobs["segment_shard"] == N_SHARDS
    assert "convert_shard" not in jobs and "embed_prompts" not in jobs
    shutil.rmtree(other)


def test_new_and_broken_studies_run_alone_and_do_not_stop_the_cohort(cohort):
    work, _ = cohort
    cohort_dir = work / "demo" / "cohort"
    (cohort_dir / "dicom" / "bad01").mkdir()
    (cohort_dir / "dicom" / "bad01" / "IM0001.dcm").write_bytes(b"DICM" * 100)  # not DICOM
    (cohort_dir / "reports" / "bad01.txt").write_text("")
    with open(cohort_dir / "samples.tsv", "a") as fh:
        fh.write("new01\tdicom/demo001\treports/demo002.txt\t\n")
        fh.write("bad01\tdicom/bad01\treports/bad01.txt\t\n")
    touched = {f"{shard_of(s, N_SHARDS):03d}" for s in ("new01", "bad01")}
    jobs = planned_jobs(work)
    assert jobs["convert_shard"] == jobs["segment_shard"] == len(touched)  # jobs per shard, not per study

    run = snakemake(work, "--cores", "2", check=False)
    text = run.stdout + run.stderr
    # the run finishes every job and the cohort table, then fails because a study failed
    assert run.returncode == 1 and "studies per stage" in text and "bad01, convert:" in text, text[-4000:]
    processed = set()
    for shard in range(N_SHARDS):
        summary = json.loads((work / "results" / "segment" / "shards" / f"{shard:03d}.json").read_text())
        processed |= {s for s, r in summary["studies"].items() if not r["reused"]}
    assert processed == {"new01", "bad01"}  # finished studies were not segmented again

    status = pd.read_parquet(work / "results" / "cohort" / "status.parquet")
    bad = status[status.study_id == "bad01"].set_index("stage")
    assert bad.loc["convert", "status"] == "failed" and "DICOM" in bad.loc["convert", "message"]
    assert bad.loc["findings", "error_class"] == "EmptyReportError"
    assert (status[status.study_id != "bad01"].status == "ok").all()
    stats = pd.read_parquet(work / "results" / "cohort" / "stats.parquet")
    assert sorted(stats.study_id.unique()) == ["demo001", "demo002", "demo003", "new01"]
    assert planned_jobs(work) == {}


def test_deleted_or_edited_mask_is_redone_next_run(cohort):
    """A done marker vouches for the files it names: a mask deleted (or changed) after a run
    makes the next run segment that study again, and only that study."""
    work, _ = cohort
    masks = sorted((work / "results" / "segment" / "demo002").glob("*.nii.gz"))
    masks[0].unlink()
    jobs = planned_jobs(work)
    assert jobs.get("segment_shard") == 1 and jobs.get("stats_shard") == 1 and "convert_shard" not in jobs
    run = snakemake(work, "--cores", "2", check=False)
    assert masks[0].is_file()
    shard = f"{shard_of('demo002', N_SHARDS):03d}"
    summary = json.loads((work / "results" / "segment" / "shards" / f"{shard}.json").read_text())
    assert {s for s, r in summary["studies"].items() if not r["reused"]} == {"demo002"}
    stats = pd.read_parquet(work / "results" / "cohort" / "stats.parquet")
    assert masks[0].name.removesuffix(".nii.gz") in set(stats[stats.study_id == "demo002"].prompt_id)
    assert run.returncode in (0, 1)  # 1 when an earlier test left a failed study in the table


def test_paths_named_in_the_docs_exist_after_a_run(cohort):
    """Every `results/...` path README.md and config/README.md name is what a real run writes,
    and every one comes from voxtell.cohort.layout."""
    import re

    from voxtell.cohort.layout import COHORT_FILES, RESULTS

    work, _ = cohort
    root = Path(__file__).resolve().parents[1]
    named = set()
    for doc in ("README.md", "config/README.md"):
        named |= set(re.findall(r"`(results/[^`\s]*)`", (root / doc).read_text(encoding="utf-8")))
    assert {"results/findings/{study}/findings.jsonl", "results/cohort/status.parquet"} <= named, named
    # written only by opt-in features that the demo leaves off (export_dicom.enabled)
    named -= {p for p in named if "export_dicom" in p or "dicom_ref" in p}
    fill = {"{study}": "demo001", "{stage}": "segment", "{shard}": "000"}
    for path in sorted(named):
        concrete = path
        for k, v in fill.items():
            concrete = concrete.replace(k, v)
        assert (work / concrete).exists(), f"{path} (named in the docs) is not written by the workflow"
    assert (work / RESULTS.findings("demo001")).is_file() and (work / RESULTS.marker("stats", "demo001")).is_file()
    for key in ("stats", "status", "qc", "versions", "dice", "schema"):
        assert (work / RESULTS.cohort(key)).exists(), COHORT_FILES[key]
