"""Per-study, per-stage status records of the cohort stages, in the one status format.

Each stage writes ``status.json`` for every study it touches (its path: ``layout``): one
row of ``voxtell.stats.status`` (the format the aggregate reads into the cohort's status
table), ``ok``, ``failed`` (a ``VoxTellError``: bad DICOM, empty report, ... or an error
the pipeline did not expect from this study's input) or ``skipped`` (an upstream stage
failed, or there is nothing to do; the message names the root cause), with the stage's
plausibility ``warnings``. Facts a later stage needs (the converted image and its sha256)
ride along as the row's ``details``. Errors that are the job's, not the study's (out of
memory, a full disk, a CUDA failure) propagate and fail the job so that the scheduler
retries it (``study_error``).

This module only adds what the stages share on top of that format: constructors that
record the pipeline version, the root cause of a skip, and a log line for failures.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any, Iterable

from voxtell import __version__
from voxtell.errors import VoxTellError
from voxtell.stats.schema import STATUS_VALUES
from voxtell.stats.status import read_status_record, status_row, write_status

log = logging.getLogger(__name__)

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
STATUSES = STATUS_VALUES
#: Messages are cut to this length: a status table is read by people, not parsed.
MAX_MESSAGE = 2000
#: OS errors that say the machine is unwell, not the study.
_JOB_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENOMEM}

Record = dict[str, Any]


def ok(study_id: str, stage: str, warnings: Iterable[str] = (), **details: Any) -> Record:
    return status_row(study_id, stage, status=OK, warnings=warnings,
                      details={"pipeline_version": __version__, **details})


def failed(study_id: str, stage: str, exc: BaseException, warnings: Iterable[str] = (), **details: Any) -> Record:
    """Record of a study-level error; the message is the exception's (it says what to do)."""
    return status_row(study_id, stage, exc, message=str(exc)[:MAX_MESSAGE], warnings=warnings,
                      details={"pipeline_version": __version__, **details})


def is_job_error(exc: BaseException) -> bool:
    """Errors of the machine or the job, which a retry (more memory, another node) may fix."""
    if isinstance(exc, (MemoryError, KeyboardInterrupt, SystemExit)) or "OutOfMemory" in type(exc).__name__:
        return True
    if isinstance(exc, OSError) and exc.errno in _JOB_ERRNOS:
        return True
    return isinstance(exc, RuntimeError) and "CUDA" in str(exc)


def study_error(study_id: str, stage: str, exc: BaseException) -> Record:
    """The failed record of a study whose processing raised ``exc``, or re-raise a job error.

    A ``VoxTellError`` carries its own actionable message. Anything else (a bare
    ``TypeError`` from a malformed header) is a gap in the pipeline's checks: its traceback
    goes to the job's log and the study still becomes a row naming the error's class, so one
    odd study never costs the others or the cohort table."""
    if isinstance(exc, VoxTellError):
        return failed(study_id, stage, exc)
    if is_job_error(exc):
        raise exc
    log.error("%s %s: unexpected %s", stage, study_id, type(exc).__name__, exc_info=exc)
    message = (f"unexpected {type(exc).__name__}: {exc} (the pipeline did not expect this input; the traceback is in "
               f"the {stage} job's log; please report it with the study's headers)")
    return status_row(study_id, stage, exc, message=message[:MAX_MESSAGE],
                      details={"pipeline_version": __version__, "unexpected": True})


def skipped(study_id: str, stage: str, upstream: Record | None, reason: str | None = None,
            warnings: Iterable[str] = ()) -> Record:
    """Nothing to do because an upstream stage did not succeed (named as the root cause),
    or for ``reason``."""
    if upstream is not None and upstream["status"] != OK:
        message = f"{upstream['stage']} {upstream['status']}: {upstream['error_class']}: {upstream['message']}"
        return status_row(study_id, stage, status=SKIPPED, error_class=upstream["error_class"],
                          message=message[:MAX_MESSAGE], warnings=warnings, details={"pipeline_version": __version__})
    return status_row(study_id, stage, status=SKIPPED, message=reason, warnings=warnings,
                      details={"pipeline_version": __version__})


def is_ok(record: Record) -> bool:
    return record["status"] == OK


def is_unexpected(record: Record) -> bool:
    """A failure from an error the pipeline did not expect: not vouched for by a done marker,
    so the next run of the shard tries the study again."""
    return bool(details(record).get("unexpected"))


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
