"""Findings stage, one shard of studies: report -> ``findings.jsonl`` per study.

The scispaCy pipeline is built once per shard job (building it costs far more than
parsing a report). A study without a report gets an empty findings file (it is still
segmented with the fixed prompts); an unreadable or empty report is a ``failed`` status
row, and its empty findings file lets the study go on with the fixed prompts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from voxtell.cohort import markers
from voxtell.cohort import status as st
from voxtell.cohort.hashing import file_sha256
from voxtell.cohort.shards import ShardSummary
from voxtell.errors import InputError, VoxTellError
from voxtell.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

STAGE = "findings"
FINDINGS_NAME = "findings.jsonl"
STATUS_NAME = "status.json"


class EmptyReportError(InputError):
    """The report file holds no text."""


@dataclass(frozen=True)
class FindingsTask:
    study_id: str
    report: str | None
    out_dir: str


def findings_config(settings: dict[str, Any]):
    """The FindingsConfig of the workflow's findings settings (None values: the defaults)."""
    from voxtell.reports import FindingsConfig

    kwargs = {k: v for k, v in settings.items() if v is not None}
    if "keep_sections" in kwargs:
        kwargs["keep_sections"] = tuple(kwargs["keep_sections"])
    if "vocabulary" in kwargs:
        kwargs["vocabulary"] = Path(kwargs["vocabulary"])
    return FindingsConfig(**kwargs)


def _process(task: FindingsTask, cfg) -> st.Record:
    from voxtell.reports import extract_findings, read_report, write_findings_jsonl

    out = Path(task.out_dir) / FINDINGS_NAME
    if not task.report:
        write_text_atomic(out, "")
        return st.ok(task.study_id, STAGE, n_findings=0, n_segmentable=0, report=None)
    try:
        text = read_report(task.report)
        if not text.strip():
            raise EmptyReportError(
                f"report {task.report} is empty; fix or remove the 'report' entry (the study is still "
                "segmented with the fixed prompts)"
            )
        findings = extract_findings(text, task.study_id, cfg)
    except VoxTellError as exc:
        write_text_atomic(out, "")
        return st.failed(task.study_id, STAGE, exc, n_findings=0)
    write_findings_jsonl(findings, out)
    affirmed = [f for f in findings if not getattr(f, "negated", False) and getattr(f, "duplicate_of", None) is None]
    return st.ok(task.study_id, STAGE, n_findings=len(findings), n_segmentable=len(affirmed), report=task.report)


def run_findings_shard(
    shard: str,
    tasks: Sequence[FindingsTask],
    summary_path: str | os.PathLike,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract findings for every study of a shard whose report or settings changed."""
    settings = dict(settings or {})
    summary = ShardSummary(STAGE, shard)
    vocab = settings.get("vocabulary")
    base = {"settings": settings, "vocabulary_sha256": file_sha256(vocab) if vocab else None}
    cfg = None
    for task in tasks:
        out_dir = Path(task.out_dir)
        inputs = {**base, "report_sha256": file_sha256(task.report) if task.report and Path(task.report).is_file() else None}
        marker, status_path = out_dir / markers.MARKER_NAME, out_dir / STATUS_NAME
        previous = st.read(status_path)
        if previous is not None and (out_dir / FINDINGS_NAME).is_file() and markers.is_current(marker, inputs):
            summary.add(previous, reused=True)
            continue
        if cfg is None:
            cfg = findings_config(settings)
        marker.unlink(missing_ok=True)
        record = _process(task, cfg)
        st.write(status_path, record)
        markers.write_marker(marker, inputs)
        summary.add(record, reused=False)
    return summary.write(summary_path)
