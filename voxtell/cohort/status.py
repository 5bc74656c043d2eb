"""Per-study, per-stage status records of the cohort stages, in the one status format.

Each stage writes ``status.json`` for every study it touches: one row of
``voxtell.stats.status`` (the format the aggregate reads into the cohort's status table),
``ok``, ``failed`` (a ``VoxTellError``: bad DICOM, empty report, ...) or ``skipped`` (an
upstream stage failed, or there is nothing to do; the message names the root cause). Facts a
later stage needs (the converted image and its sha256) ride along as the row's ``details``.
Only ``VoxTellError`` becomes a record; anything else (out of memory, a bug, a killed
process) propagates and fails the job so that the scheduler retries it.

This module only adds what the stages share on top of that format: constructors that
record the pipeline version, the root cause of a skip, and a log line for failures.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from voxtell import __version__
from voxtell.errors import VoxTellError
from voxtell.stats.status import read_status_record, status_row, write_status

log = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
STATUSES = (OK, FAILED, SKIPPED)
#: Messages are cut to this length: a status table is read by people, not parsed.
MAX_MESSAGE = 2000

Record = dict[str, Any]


def ok(study_id: str, stage: str, **details: Any) -> Record:
    return status_row(study_id, stage, status=OK, details={"pipeline_version": __version__, **details})


def failed(study_id: str, stage: str, exc: VoxTellError, **details: Any) -> Record:
    """Record of a study-level error; the message is the exception's (it says what to do)."""
    return status_row(study_id, stage, exc, message=str(exc)[:MAX_MESSAGE],
                      details={"pipeline_version": __version__, **details})


def skipped(study_id: str, stage: str, upstream: Record | None, reason: str | None = None) -> Record:
    """Nothing to do because an upstream stage did not succeed (named as the root cause),
    or for ``reason``."""
    if upstream is not None and upstream["status"] != OK:
        message = f"{upstream['stage']} {upstream['status']}: {upstream['error_class']}: {upstream['message']}"
        return status_row(study_id, stage, status=SKIPPED, error_class=upstream["error_class"],
                          message=message[:MAX_MESSAGE], details={"pipeline_version": __version__})
    return status_row(study_id, stage, status=SKIPPED, message=reason, details={"pipeline_version": __version__})


def is_ok(record: Record) -> bool:
    return record["status"] == OK


def details(record: Record) -> dict[str, Any]:
    return record.get("details") or {}


def write(path: str | os.PathLike, record: Record) -> None:
    write_status(record, path)
    if record["status"] == FAILED:
        log.warning("%s %s failed: %s: %s", record["stage"], record["study_id"], record["error_class"],
                    record["message"])


def read(path: str | os.PathLike) -> Record | None:
    """The record at ``path``, or None if it does not exist or cannot be parsed."""
    return read_status_record(path)
