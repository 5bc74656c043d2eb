"""Parquet tables: documented schema, read back by pandas and pyarrow, aggregation, status."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from voxtell.cli import main
from voxtell.prompts import prompt_id
from voxtell.stats.errors import DuplicateRowError, SchemaMismatchError
from voxtell.stats.parquet import aggregate, read_stats, write_stats_parquet
from voxtell.stats.schema import STATS_SCHEMA, STATUS_SCHEMA
from voxtell.stats.status import read_status, status_row, write_status
from voxtell.stats.study import compute_study_stats

SHA = "cd" * 32


def make_study(root: Path, totalseg_dir: Path, study_id: str, organs: dict[str, int]) -> Path:
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    labels = np.asanyarray(seg.dataobj)
    folder = root / "masks" / study_id
    folder.mkdir(parents=True)
    prompts = []
    for name, value in organs.items():
        pid = prompt_id(name)
        nib.save(nib.Nifti1Image((labels == value).astype(np.uint8), seg.affine), folder / f"{pid}.nii.gz")
        prompts.append({"prompt_id": pid, "prompt": name, "file": f"{pid}.nii.gz", "source": "config"})
    (folder / "manifest.json").write_text(json.dumps({
        "study_id": study_id, "model": {"model_id": "demo", "sha256": SHA, "preset": "small", "text_encoder": "minilm"},
        "backend": "torch", "pipeline_version": "0.1.0", "prompts": prompts}))
    return folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory, totalseg_dir):
    root = tmp_path_factory.mktemp("parquet")
    image = totalseg_dir / "example_ct_sm.nii.gz"
    out = []
    for sid, organs in (("s1", {"liver": 5, "spleen": 1}), ("s2", {"liver": 5, "brain": 200})):
        res = compute_study_stats(image, make_study(root, totalseg_dir, sid, organs))
        out.append(write_stats_parquet(res, root / "stats" / f"{sid}.parquet"))
    return root, out


def test_study_file_has_documented_schema(parts):
    _, files = parts
    schema = pq.read_schema(files[0])
    assert schema.remove_metadata().equals(STATS_SCHEMA.remove_metadata())
    for f in schema:
        meta = {k.decode(): v.decode() for k, v in f.metadata.items()}
        assert meta["description"] and "unit" in meta, f.name
    assert schema.field("volume_ml").metadata[b"unit"] == b"mL"
    assert b"LPS" in schema.field("centroid_x_mm").metadata[b"unit"]
    meta = schema.metadata
    assert meta[b"model_sha256"] == SHA.encode() and meta[b"text_encoder"] == b"minilm" and meta[b"study_id"] == b"s1"


def test_aggregate_read_back_with_pandas_and_pyarrow(parts, tmp_path):
    _, files = parts
    write_status(status_row("s1", "stats"), tmp_path / "st" / "s1.json")
    write_status([status_row("s3", "convert", ValueError("no image series in folder"))], tmp_path / "st" / "s3.parquet")
    res = aggregate(files, tmp_path / "cohort", status_parts=[tmp_path / "st"] + [tmp_path / "st" / "s1.json"],
                    config_hash="abc123")
    assert (res.n_rows, res.n_studies, res.n_failed) == (4, 2, 1)

    table = pq.read_table(res.stats_path)
    assert table.schema.remove_metadata().equals(STATS_SCHEMA.remove_metadata())
    assert table.schema.field("dice").metadata[b"unit"] == b"ratio"
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["model_sha256"] == SHA and meta["pipeline_version"] == "0.1.0" and meta["text_encoder"] == "minilm"
    assert meta["config_hash"] == "abc123"
    assert datetime.fromisoformat(meta["created"]).tzinfo is not None

    df = pd.read_parquet(res.stats_path)
    assert list(df.columns) == STATS_SCHEMA.names
    assert df[["study_id", "prompt"]].values.tolist() == [["s1", "liver"], ["s1", "spleen"], ["s2", "brain"], ["s2", "liver"]]
    assert df.loc[df.prompt == "liver", "volume_ml"].round(2).tolist() == [1043.12, 1043.12]
    assert df.loc[df.prompt == "brain", "empty"].tolist() == [True]
    assert df["voxel_count"].dtype == np.int64 and df["empty"].dtype == bool
    # the folder is a dataset too
    assert pq.ParquetDataset(res.stats_path).read().num_rows == 4

    status = pd.read_parquet(res.status_path)
    assert list(status.columns) == STATUS_SCHEMA.names
    failed = status[status.status == "failed"].iloc[0]
    assert (failed.study_id, failed.stage, failed.error_class) == ("s3", "convert", "ValueError")
    assert str(status.timestamp.dt.tz) == "UTC"
    assert (tmp_path / "cohort" / "SCHEMA.md").read_text().count("| volume_ml | double | mL |") == 1


def test_aggregate_conforms_old_parts_and_rejects_bad_ones(parts, tmp_path):
    _, files = parts
    old = pq.read_table(files[0]).drop_columns(["hd95_mm", "msd_mm"])
    pq.write_table(old, tmp_path / "old.parquet")
    res = aggregate([tmp_path / "old.parquet"], tmp_path / "c1")
    t = read_stats(res.stats_path)
    assert t["hd95_mm"].null_count == t.num_rows == 2

    pq.write_table(old.drop_columns(["volume_ml"]), tmp_path / "broken.parquet")
    with pytest.raises(SchemaMismatchError, match="volume_ml"):
        aggregate([tmp_path / "broken.parquet"], tmp_path / "c2")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaMismatchError):
        aggregate([tmp_path / "junk.parquet"], tmp_path / "c3")
    with pytest.raises(DuplicateRowError):
        aggregate([files[0], files[0]], tmp_path / "c4")


def test_failed_study_writes_empty_part_that_aggregates(parts, tmp_path):
    _, files = parts
    write_stats_parquet([], tmp_path / "failed.parquet", {"study_id": "s9"})
    assert pq.read_table(tmp_path / "failed.parquet").num_rows == 0
    res = aggregate([tmp_path / "failed.parquet", files[1]], tmp_path / "cohort")
    assert res.n_rows == 2 and res.n_studies == 1


def test_status_rows():
    row = status_row("s1", "segment", MemoryError("x"))
    assert row["status"] == "failed" and row["error_class"] == "MemoryError" and row["message"] == "x"
    assert row["timestamp"].tzinfo == timezone.utc
    ok = status_row("s1", "segment")
    assert ok["status"] == "ok" and ok["error_class"] is None
    with pytest.raises(ValueError):
        status_row("s1", "segment", status="maybe")
    with pytest.raises(SchemaMismatchError):
        read_status([Path("/nonexistent/status.json")])


def test_skipped_rows_and_details_in_json_status_files(tmp_path):
    from voxtell.stats.status import read_status_record

    skipped = status_row("s1", "segment", status="skipped", error_class="CorruptDicomError",
                         message="convert failed: CorruptDicomError: not DICOM")
    ok = status_row("s2", "convert", details={"image": "s2/image.nii.gz"})
    write_status(skipped, tmp_path / "s1.json")
    write_status(ok, tmp_path / "s2.json")
    assert json.loads((tmp_path / "s2.json").read_text())["details"] == {"image": "s2/image.nii.gz"}
    assert read_status_record(tmp_path / "s2.json")["details"] == {"image": "s2/image.nii.gz"}
    assert read_status_record(tmp_path / "absent.json") is None
    table = read_status([tmp_path / "s1.json", tmp_path / "s2.json"])
    assert table.schema.equals(STATUS_SCHEMA) and table.column("status").to_pylist() == ["skipped", "ok"]
    res = aggregate([], tmp_path / "cohort", status_parts=[tmp_path / "s1.json", tmp_path / "s2.json"])
    assert res.n_failed == 0 and pq.read_table(res.status_path).num_rows == 2


def test_cli_stats_and_aggregate(tmp_path, totalseg_dir, capsys):
    image = totalseg_dir / "example_ct_sm.nii.gz"
    good = make_study(tmp_path, totalseg_dir, "s1", {"liver": 5})
    assert main(["stats", "--image", str(image), "--masks", str(good), "-o", str(tmp_path / "s1.parquet"),
                 "--status", str(tmp_path / "s1.status.json")]) == 0
    # a mask on another grid: typed error -> failed status row, empty table, exit 0 with --empty-on-error
    bad = make_study(tmp_path, totalseg_dir, "s2", {"liver": 5})
    mask = bad / f"{prompt_id('liver')}.nii.gz"
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, :-2], img.affine), mask)
    assert main(["stats", "--image", str(image), "--masks", str(bad), "-o", str(tmp_path / "s2.parquet"),
                 "--status", str(tmp_path / "s2.status.json"), "--empty-on-error"]) == 0
    assert main(["stats", "--image", str(image), "--masks", str(bad), "-o", str(tmp_path / "s2b.parquet")]) == 1
    assert not (tmp_path / "s2b.parquet").exists()
    (tmp_path / "parts.txt").write_text(f"{tmp_path / 's1.parquet'}\n{tmp_path / 's2.parquet'}\n")
    assert main(["aggregate", "@" + str(tmp_path / "parts.txt"), "-o", str(tmp_path / "cohort"),
                 "--status", str(tmp_path / "s1.status.json"), str(tmp_path / "s2.status.json")]) == 0
    status = pa.Table.to_pylist(pq.read_table(tmp_path / "cohort" / "status.parquet"))
    assert [(r["study_id"], r["status"], r["error_class"]) for r in status] == [
        ("s1", "ok", None), ("s2", "failed", "GridMismatchError")]
    assert pq.read_table(tmp_path / "cohort" / "stats.parquet").num_rows == 1
