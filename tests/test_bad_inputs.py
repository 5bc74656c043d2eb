"""The bad-input battery (issue 10): one cohort mixing good studies with ~20 kinds of bad
ones, run through the real workflow (real dcm2niix, scispaCy, MiniLM and a tiny VoxTell
network). Every good study gets its rows, every bad one a status row naming the problem,
the run ends with a summary and nothing crashes. Schema- and model-level cases (samples
table, checkpoint, embedding bank) are fast and run by default.

Case list and what the user sees: tests/badcohort.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from badcohort import FIXED_PROMPTS, run_battery  # noqa: E402
from test_workflow_support import ENCODER, make_random_model, snakemake  # noqa: E402


@pytest.fixture(scope="session")
def battery_run(tmp_path_factory):
    return run_battery(tmp_path_factory.getbasetemp() / "battery")


def _tables(run):
    import pandas as pd

    res = run.work / "results" / "cohort"
    return pd.read_parquet(res / "stats.parquet"), pd.read_parquet(res / "status.parquet")


@pytest.mark.slow
def test_battery_run_finishes_with_summary(battery_run):
    # every job finishes; the run exits 1 because studies failed, after printing the summary
    assert battery_run.returncode == 1 and "studies per stage" in battery_run.output, battery_run.output[-6000:]
    assert "Error in rule" not in battery_run.output, battery_run.output[-6000:]
    assert len(battery_run.cases) >= 20
    assert len({c.kind for c in battery_run.cases if c.status or not c.rows or c.extra}) >= 18
    versions = json.loads((battery_run.work / "results/cohort/versions.json").read_text())
    n_failed = sum(1 for c in battery_run.cases if c.status)
    assert versions["n_failed_stages"] == n_failed, versions
    assert versions["n_studies_with_rows"] == sum(c.rows for c in battery_run.cases)
    # No traceback of an unhandled exception in any log.
    for log in (battery_run.work / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(errors="replace"), log


@pytest.mark.slow
def test_every_case_gets_rows_or_a_status_row_naming_the_problem(battery_run):
    stats, status = _tables(battery_run)
    failed = status[status["status"] == "failed"]
    problems = []
    for case in battery_run.cases:
        rows = stats[stats["study_id"] == case.study_id]
        if case.rows:
            missing = set(FIXED_PROMPTS) - set(rows["prompt"])
            if missing:
                problems.append(f"{case.study_id} ({case.kind}): no rows for {sorted(missing)}")
        elif len(rows):
            problems.append(f"{case.study_id} ({case.kind}): has {len(rows)} stats rows but should have none")
        mine = failed[failed["study_id"] == case.study_id]
        if case.status is None:
            if len(mine):
                problems.append(f"{case.study_id} ({case.kind}): unexpected failure {mine.to_dict('records')}")
            continue
        stage, words = case.status
        hit = mine[mine["stage"] == stage]
        if len(hit) != 1:
            problems.append(f"{case.study_id} ({case.kind}): expected one failed {stage} row, got {mine.to_dict('records')}")
            continue
        text = f"{hit.iloc[0]['error_class']}: {hit.iloc[0]['message']}".lower()
        if not any(w in text for w in words):
            problems.append(f"{case.study_id} ({case.kind}): '{text}' names none of {words}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_warnings_and_odd_prompts_are_visible_and_harmless(battery_run):
    work = battery_run.work
    logs = "\n".join(p.read_text(errors="replace") for p in (work / "logs" / "findings").glob("*.log"))
    for case in battery_run.cases:
        if "log" in case.extra:
            assert case.extra["log"] in logs, f"{case.study_id}: the log does not say '{case.extra['log']}'"
    series = json.loads((work / "results/convert/dicom-blank-uids/series.json").read_text())
    assert series["series_uid_inferred"] is True

    stats, _ = _tables(battery_run)
    long_rows = stats[stats["study_id"] == "prompt-2000-chars"]
    assert long_rows["prompt"].str.len().max() > 1500
    hostile = stats[stats["study_id"] == "prompt-hostile"]
    finding = hostile[hostile["source"] == "finding"]
    assert len(finding) == 1, hostile[["prompt", "source"]]
    prompt = finding.iloc[0]["prompt"]
    assert "../../" in prompt and "$(touch" in prompt and "\x00" not in prompt  # kept as data, NUL dropped
    manifest = json.loads((work / "results/segment/prompt-hostile/manifest.json").read_text())
    files = [p["file"] for p in manifest["prompts"]]
    assert all("/" not in f and len(f) <= 64 for f in files), files


# ----------------------------------------------------------------------------- schema level
@pytest.fixture(scope="module")
def dry_work(tmp_path_factory):
    """A scratch workflow folder with a real (random, tiny) model for dry runs."""
    work = tmp_path_factory.mktemp("schema")
    make_random_model(work / "model", "tiny")
    return work


def _dry_run_with_samples(work: Path, table: str):
    (work / "samples.tsv").write_text(table, encoding="utf-8")
    cfg = {"samples": "samples.tsv", "demo": {"enabled": False, "train": {"enabled": False}},
           "model": {"dir": str(work / "model")}, "text_encoder": {"id": ENCODER}}
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = snakemake(work, "-n", "--cores", "1", check=False, timeout=300)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.parametrize(
    "table, words",
    [
        ("study_id\tdicom\na1\t/x/a\nb2\t/x/b\na1\t/x/c\n", ["'a1'", "repeats line 2", "unique"]),
        ("dicom\treport\n/x/a\t/r/a.txt\n", ["study_id"]),
        ("study_id\treport\na1\t/r/a.txt\n", ["exactly one of 'dicom'", "'image'"]),
        ("study_id\tdicom\n../../etc\t/x/a\n", ["study_id", "../../etc"]),
        ("study_id\tdicom\tpatient_name\na1\t/x/a\tDoe\n", ["patient_name"]),
    ],
    ids=["duplicate-ids", "no-study_id-column", "no-image-column", "path-in-study-id", "unknown-column"],
)
def test_bad_samples_table_stops_before_any_job(dry_work, table, words):
    rc, text = _dry_run_with_samples(dry_work, table)
    assert rc != 0, text[-3000:]
    assert "Traceback" not in text or "WorkflowError" in text or "ValidationError" in text
    missing = [w for w in words if w not in text]
    assert not missing, f"message lacks {missing}:\n{text[-3000:]}"
    assert not (dry_work / "results").exists()


def test_good_samples_table_dry_run_passes(dry_work):
    rc, text = _dry_run_with_samples(dry_work, "study_id\tdicom\na1\t/x/a\nb2\t/x/b\n")
    assert rc == 0, text[-3000:]


# ----------------------------------------------------------------------------- model level
def test_bank_of_wrong_dimension_is_refused(dry_work, tmp_path):
    import numpy as np

    from voxtell.inference.predictor import Predictor, PredictorConfig
    from voxtell.text.bank import EmbeddingBank, EmbeddingBankError

    bank = EmbeddingBank(dim=16, encoder_id=ENCODER)
    bank.add(["liver"], np.ones((1, 16), np.float32))
    path = tmp_path / "bank16.npz"
    bank.save(path)
    pred = Predictor.from_model_dir(dry_work / "model", PredictorConfig(device="cpu"), bank=str(path))
    with pytest.raises(EmbeddingBankError, match="dimension 16 but the model expects 384"):
        pred.bank.check_compatible(pred.encoder_id, pred.model.embedding_dim)


# ----------------------------------------------------------------------------- convert stage level
@pytest.fixture(scope="module")
def bad_cohort(tmp_path_factory):
    from badcohort import build_bad_cohort

    root = tmp_path_factory.mktemp("battery-inputs")
    samples, cases = build_bad_cohort(root)
    rows = [line.split("\t") for line in samples.read_text(encoding="utf-8").splitlines()[1:]]
    return root, cases, {r[0]: r for r in rows}


def test_convert_stage_names_every_bad_image_and_keeps_warnings(bad_cohort):
    """The battery's images through the convert stage function the workflow runs: every case
    whose problem convert can see is a failed row naming it, every good one is ok, and an
    image convert accepts is one the predictor's preprocessing accepts too (one volume rule)."""
    from voxtell.cohort.stage_convert import run_convert
    from voxtell.inference.preprocessing import preprocess

    root, cases, rows = bad_cohort
    problems = []
    records = {}
    for case in cases:
        _, dicom, image, _ = rows[case.study_id]
        if not (dicom or image):
            continue
        record = run_convert(case.study_id, root / "out" / case.study_id, dicom=dicom or None, image=image or None)
        records[case.study_id] = record
        text = f"{record['error_class']}: {record['message']}".lower()
        if case.status and case.status[0] == "convert":
            if record["status"] != "failed" or not any(w in text for w in case.status[1]):
                problems.append(f"{case.study_id}: expected a failed row naming {case.status[1]}, got {text}")
            if "unexpected" in text:
                problems.append(f"{case.study_id}: untyped error {text}")
        elif record["status"] != "ok":
            problems.append(f"{case.study_id}: expected ok, got {text}")
        else:
            preprocess(record["details"]["image"] if "details" in record else record["image"], (16, 16, 16))
    assert not problems, "\n".join(problems)
    odd = records["dicom-fifo-and-link-loop"]["warnings"]
    assert any("fifo" in w for w in odd) and any("link loop" in w for w in odd), odd
    tie = records["dicom-series-tie"]["warnings"]
    assert any("series tie" in w and "'Soft tissue'" in w and "'Lung kernel'" in w for w in tie), tie
    message = records["dicom-two-patients"]["message"]
    assert "Otherperson" not in message and "OTHER-77" not in message
