"""Per-study, per-stage status records: how a bad study is reported without stopping the cohort.

Each stage writes ``status.json`` for every study it touches: ``ok``, ``failed`` (a
``VoxTellError``: bad DICOM, empty report, ...) or ``skipped`` (an upstream stage failed,
so there is nothing to do). The aggregate step turns all records into the cohort's status
table. Only ``VoxTellError`` becomes a record; anything else (out of memory, a bug, a
killed process) propagates and fails the job so that the scheduler retries it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxtell import __version__
from voxtell.errors import VoxTellError
from voxtell.io.atomic import write_json_atomic

log = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
STATUSES = (OK, FAILED, SKIPPED)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StudyStatus:
    """Outcome of one stage for one study."""

    study_id: str
    stage: str
    status: str
    error_class: str | None = None
    message: str | None = None
    timestamp: str = field(default_factory=_now)
    pipeline_version: str = __version__
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StudyStatus":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def ok(study_id: str, stage: str, **details: Any) -> StudyStatus:
    return StudyStatus(study_id, stage, OK, details=details)


def failed(study_id: str, stage: str, exc: VoxTellError, **details: Any) -> StudyStatus:
    """Record of a study-level error; the message is the exception's (it says what to do)."""
    return StudyStatus(study_id, stage, FAILED, type(exc).__name__, str(exc)[:2000], details=details)


def skipped(study_id: str, stage: str, upstream: StudyStatus | None, reason: str | None = None) -> StudyStatus:
    """Nothing to do because an upstream stage did not succeed; names the root cause."""
    if upstream is not None and upstream.status != OK:
        message = f"{upstream.stage} {upstream.status}: {upstream.error_class}: {upstream.message}"
        return StudyStatus(study_id, stage, SKIPPED, upstream.error_class, message[:2000])
    return StudyStatus(study_id, stage, SKIPPED, None, reason)


def write_status(path: str | os.PathLike, status: StudyStatus) -> None:
    write_json_atomic(path, status.to_dict())
    if status.status == FAILED:
        log.warning("%s %s failed: %s: %s", status.stage, status.study_id, status.error_class, status.message)


def read_status(path: str | os.PathLike) -> StudyStatus | None:
    """The record at ``path``, or None if it does not exist or cannot be parsed."""
    try:
        return StudyStatus.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
