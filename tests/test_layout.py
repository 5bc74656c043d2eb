"""The results contract (voxtell.cohort.layout, markers, status): one layout, one status
format with warnings, done markers that vouch for their files, ids that cannot collide
with the workflow's own names, and a stage boundary that turns any study error into a row."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from voxtell.cohort import markers
from voxtell.cohort import status as st
from voxtell.cohort.errors import SamplesError
from voxtell.cohort.layout import RESERVED_IDS, RESULTS, Layout, study_folders
from voxtell.cohort.samples import load_samples, read_samples_rows
from voxtell.cohort.shards import ShardSummary
from voxtell.cohort.stage_convert import ConvertTask, run_convert_shard
from voxtell.errors import InputError
from voxtell.stats.status import read_status


def test_layout_paths_and_patterns():
    assert RESULTS.status("convert", "s1") == "results/convert/s1/status.json"
    assert RESULTS.findings("s1") == "results/findings/s1/findings.jsonl"
    assert RESULTS.mask("s1", "liver-abc") == "results/segment/s1/liver-abc.nii.gz"
    assert RESULTS.shard_summary("segment", "{shard}") == "results/segment/shards/{shard}.json"
    assert RESULTS.cohort("status") == "results/cohort/status.parquet"
    assert Layout("/x/out/").stats("s") == "/x/out/stats/s/stats.parquet"


def test_study_folders_leave_out_the_workflows_own_names(tmp_path):
    for name in ("s1", "s2", "shards", ".s3.partial-x"):
        (tmp_path / "segment" / name).mkdir(parents=True)
    (tmp_path / "segment" / "settings.json").write_text("{}")
    assert study_folders(tmp_path, "segment") == ["s1", "s2"]


def _table(tmp_path: Path, text: str) -> Path:
    (tmp_path / "s.tsv").write_text(text, encoding="utf-8")
    return tmp_path / "s.tsv"


@pytest.mark.parametrize("study_id", sorted(RESERVED_IDS) + ["Shards", "COHORT"])
def test_reserved_study_ids_are_refused_by_name(tmp_path, study_id):
    with pytest.raises(SamplesError, match="workflow uses for its own files") as info:
        load_samples(_table(tmp_path, f"study_id\timage\n{study_id}\timg.nii.gz\nok1\timg.nii.gz\n"))
    assert repr(study_id) in str(info.value)


def test_ids_differing_only_in_case_collide(tmp_path):
    with pytest.raises(SamplesError, match="ignoring case"):
        load_samples(_table(tmp_path, "study_id\timage\nAbc\ta.nii.gz\nabc\tb.nii.gz\n"))


def test_trailing_tabs(tmp_path):
    # a trailing tab after the header or a row, with nothing after it, is harmless
    rows = read_samples_rows(_table(tmp_path, "study_id\timage\t\ns1\ta.nii.gz\t\ns2\tb.nii.gz\n"))
    assert rows == [{"study_id": "s1", "image": "a.nii.gz"}, {"study_id": "s2", "image": "b.nii.gz"}]
    # a value beyond the header is named, with its line (not "None was unexpected")
    with pytest.raises(SamplesError, match=r"line 3 has 3 tab-separated fields .*'oops'"):
        read_samples_rows(_table(tmp_path, "study_id\timage\ns1\ta.nii.gz\ns2\tb.nii.gz\toops\n"))
    with pytest.raises(SamplesError, match="empty column name"):
        read_samples_rows(_table(tmp_path, "study_id\t\timage\ns1\t\ta.nii.gz\n"))


def test_status_record_carries_warnings(tmp_path):
    rec = st.ok("s1", "convert", warnings=["HU range -3000..4000 after rescale"], image="x.nii.gz")
    st.write(tmp_path / "status.json", rec)
    back = st.read(tmp_path / "status.json")
    assert back["warnings"] == ["HU range -3000..4000 after rescale"] and st.details(back)["image"] == "x.nii.gz"
    table = read_status([tmp_path / "status.json"])
    assert table.column("warnings").to_pylist() == [["HU range -3000..4000 after rescale"]]
    assert st.failed("s1", "segment", InputError("bad"))["warnings"] == []


def test_study_error_turns_any_study_error_into_a_row_but_not_machine_errors():
    rec = st.study_error("s1", "convert", TypeError("unsupported operand type(s) for *: 'NoneType' and 'float'"))
    assert rec["status"] == "failed" and rec["error_class"] == "TypeError" and "NoneType" in rec["message"]
    assert st.is_unexpected(rec)
    typed = st.study_error("s1", "convert", InputError("no image series"))
    assert typed["message"] == "no image series" and not st.is_unexpected(typed)
    for exc in (MemoryError(), OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(type(exc)):
            st.study_error("s1", "segment", exc)


def test_marker_vouches_for_its_files(tmp_path):
    out = tmp_path / "s1"
    out.mkdir()
    mask, status = out / "liver.nii.gz", out / "status.json"
    mask.write_bytes(b"mask")
    st.write(status, st.ok("s1", "segment"))
    inputs = {"image_sha256": "a"}
    markers.write_marker(out / "done.json", inputs, [status, mask])
    previous = st.read(status)

    def stale() -> list[str]:  # what the workflow checks when it plans: the shard summary's copy of the stamps
        summary = ShardSummary("segment", "000")
        summary.add(previous, reused=True, study_dir=out)
        return markers.stale_studies(summary.write(tmp_path / "summary.json"))

    assert markers.can_reuse(out / "done.json", inputs, previous) and stale() == []
    assert not markers.can_reuse(out / "done.json", {"image_sha256": "b"}, previous)
    data = json.loads((tmp_path / "summary.json").read_text())
    mask.write_bytes(b"edited!")  # changed size
    assert not markers.can_reuse(out / "done.json", inputs, previous) and markers.stale_studies(data) == ["s1"]
    mask.write_bytes(b"mask")
    os.utime(mask, ns=(1, 1))  # same size, other mtime: also a change
    assert not markers.can_reuse(out / "done.json", inputs, previous) and markers.stale_studies(data) == ["s1"]
    markers.write_marker(out / "done.json", inputs, [status, mask])
    assert stale() == []
    mask.unlink()
    assert not markers.can_reuse(out / "done.json", inputs, previous) and stale() == ["s1"]
    (out / "done.json").unlink()  # no marker (a skipped study): only its status record is vouched for
    assert stale() == []
    status.unlink()
    assert stale() == ["s1"]
    with pytest.raises(FileNotFoundError):
        markers.write_marker(out / "done.json", inputs, [mask])


def _nifti(path: Path) -> Path:
    import nibabel as nib
    import numpy as np

    data = (np.arange(16 * 16 * 12).reshape(16, 16, 12) % 200 - 100).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    return path


def test_convert_shard_isolates_a_crashing_study_and_skips_current_ones(tmp_path):
    good = _nifti(tmp_path / "good.nii.gz")
    tasks = [
        ConvertTask("good", None, str(good), str(tmp_path / "out" / "good")),
        # a folder name with undecodable bytes (Latin-1 on a UTF-8 system): it used to crash the
        # status writer (UnicodeEncodeError) and with it the whole shard job
        ConvertTask("crash", str(tmp_path / "\udcdcbersicht"), None, str(tmp_path / "out" / "crash")),
        ConvertTask("missing", str(tmp_path / "nowhere"), None, str(tmp_path / "out" / "missing")),
    ]
    summary = run_convert_shard("000", tasks, tmp_path / "summary.json", settings={"min_slices": 5})
    studies = summary["studies"]
    assert studies["good"]["status"] == "ok"
    assert studies["crash"]["status"] == "failed" and "\\xdcbersicht" in studies["crash"]["message"]
    assert studies["missing"]["status"] == "failed" and "nowhere" in studies["missing"]["message"]
    assert "\\xdcbersicht" in st.read(tmp_path / "out" / "crash" / "status.json")["message"]
    # rerun: current studies (ok or failed) are not converted again
    again = run_convert_shard("000", tasks, tmp_path / "summary.json", settings={"min_slices": 5})
    assert {s: r["reused"] for s, r in again["studies"].items()} == {"good": True, "crash": True, "missing": True}
    # the source changes -> converted again; a setting changes -> everything converted again
    os.utime(good, ns=(10**9, 10**9))
    third = run_convert_shard("000", tasks[:1], tmp_path / "summary.json", settings={"min_slices": 5})
    assert third["studies"]["good"]["reused"] is False
    fourth = run_convert_shard("000", tasks[:1], tmp_path / "summary.json", settings={"min_slices": 6})
    assert fourth["studies"]["good"]["reused"] is False
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["ok"] == 1
