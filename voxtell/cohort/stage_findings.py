"""Findings stage, one shard of studies: report -> ``findings.jsonl`` per study.

The findings pipeline (vocabulary matcher, sentence splitter) is built once per shard job
and reused for every report. A study without a report gets an empty findings file (it is still
segmented with the fixed prompts); an unreadable or empty report is a ``failed`` status
row, and its empty findings file lets the study go on with the fixed prompts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from voxtell.cohort import layout, markers
from voxtell.cohort import status as st
from voxtell.cohort.hashing import file_sha256
from voxtell.cohort.shards import ShardSummary
from voxtell.errors import InputError
from voxtell.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

STAGE = "findings"
FINDINGS_NAME = layout.FINDINGS
STATUS_NAME = layout.STATUS


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
    from voxtell.reports.findings import gets_mask

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
    except Exception as exc:  # the stage boundary: a study's error is its row (job errors re-raise)
        write_text_atomic(out, "")
        return st.study_error(task.study_id, STAGE, exc)
    write_findings_jsonl(findings, out)
    n_masks = sum(gets_mask(f)[0] for f in findings)
    return st.ok(task.study_id, STAGE, n_findings=len(findings), n_segmentable=n_masks, report=task.report)


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
        if markers.can_reuse(marker, inputs, previous):
            summary.add(previous, reused=True, study_dir=out_dir)
            continue
        if cfg is None:
            cfg = findings_config(settings)
        marker.unlink(missing_ok=True)
        record = _process(task, cfg)
        st.write(status_path, record)
        if not st.is_unexpected(record):
            markers.write_marker(marker, inputs, [status_path, out_dir / FINDINGS_NAME])
        summary.add(record, reused=False, study_dir=out_dir)
    return summary.write(summary_path)
