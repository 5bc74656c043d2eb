"""`voxtell status RESULTS_DIR`: the one-screen run summary, exit 1 when a study failed."""

from __future__ import annotations

import os
import time

from voxtell.cli import main
from voxtell.cohort import status as st
from voxtell.cohort.layout import Layout
from voxtell.cohort.run_status import read_run_status
from voxtell.cohort.shards import ShardSummary
from voxtell.errors import InputError


def _summary(layout: Layout, stage: str, shard: str, records: list[dict]) -> None:
    s = ShardSummary(stage, shard)
    for r in records:
        s.add(r, reused=False)
    s.write(layout.shard_summary(stage, shard))


def test_status_counts_per_stage_and_names_failures(tmp_path, capsys):
    layout = Layout(str(tmp_path / "results"))
    bad = st.failed("bad01", "convert", InputError("no DICOM image series in dicom/bad01"))
    _summary(layout, "convert", "000", [st.ok("a", "convert"), st.ok("b", "convert"), bad])
    _summary(layout, "segment", "000", [st.ok("a", "segment"), st.ok("b", "segment"),
                                        st.skipped("bad01", "segment", bad)])
    assert main(["status", layout.root]) == 1
    out = capsys.readouterr().out
    assert "convert" in out and "segment" in out and len(out.splitlines()) < 25
    assert "bad01, convert: InputError: no DICOM image series" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:4]}
    assert lines == {"convert": ["2", "1", "0"], "segment": ["2", "0", "1"]}


def test_status_ok_run_exits_0_and_newest_summary_wins(tmp_path, capsys):
    layout = Layout(str(tmp_path / "results"))
    _summary(layout, "stats", "000", [st.failed("a", "stats", InputError("old failure"))])
    past = time.time() - 100
    os.utime(layout.shard_summary("stats", "000"), (past, past))
    _summary(layout, "stats", "0000", [st.ok("a", "stats")])  # n_shards changed since: a newer file
    assert main(["status", layout.root]) == 0
    assert "failed" not in capsys.readouterr().out.split("\n", 2)[2]
    assert read_run_status(layout.root, studies=[]).stages == {}


def test_status_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nope")]) == 1
    assert read_run_status(tmp_path).render().startswith("no stage has finished")
