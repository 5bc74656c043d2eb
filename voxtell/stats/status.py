"""The status table: one row per (study, stage): ``ok``, ``failed`` with the error, or
``skipped`` with the reason there was nothing to do.

Every stage records its outcome with ``status_row`` and ``write_status``; ``aggregate``
gathers the files into ``cohort/status.parquet``. A bad study is a ``failed`` row with the
error's class and message, never a stopped cohort. Status files are Parquet (``.parquet``)
or JSON (``.json``: one object or a list), whichever a stage finds easier to write. A JSON
row may carry ``details`` (facts a later stage needs, e.g. the converted image and its
sha256); they stay in the file, the table has flat columns only.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from voxtell.io.atomic import atomic_path, write_json_atomic
from voxtell.stats.errors import SchemaMismatchError
from voxtell.stats.schema import STATUS_SCHEMA, STATUS_VALUES


def _text(value: object) -> str:
    """Text that any writer accepts: a file name with undecodable bytes (a Latin-1 folder on
    a UTF-8 system reaches Python as lone surrogates) keeps its bytes as \\x escapes."""
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def status_row(
    study_id: str,
    stage: str,
    error: BaseException | None = None,
    *,
    status: str | None = None,
    message: str | None = None,
    error_class: str | None = None,
    timestamp: datetime | None = None,
    details: Mapping[str, Any] | None = None,
    warnings: Iterable[str] = (),
) -> dict[str, Any]:
    """A status row: ``ok`` without ``error``, ``failed`` with the error's class and message
    (or any of ``STATUS_VALUES`` given as ``status``); ``warnings`` (plausibility notes, e.g.
    convert's HU range check) go to the table, ``details`` to JSON files only."""
    if status is None:
        status = "failed" if (error is not None or error_class) else "ok"
    if status not in STATUS_VALUES:
        raise ValueError(f"status must be one of {STATUS_VALUES}, not {status!r}")
    if error is not None:
        error_class = error_class or type(error).__name__
        message = message if message is not None else str(error)
    ts = timestamp or datetime.now(timezone.utc)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    row = {
        "study_id": _text(study_id),
        "stage": str(stage),
        "status": status,
        "error_class": error_class,
        "message": None if message is None else _text(message),
        "timestamp": ts.astimezone(timezone.utc),
        "warnings": [_text(w) for w in warnings or ()],
    }
    if details:
        row["details"] = dict(details)
    return row


def status_table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """Rows (from ``status_row`` or JSON) as a table of ``STATUS_SCHEMA``."""
    clean = []
    for row in rows:
        missing = [k for k in ("study_id", "stage", "status") if not row.get(k)]
        if missing:
            raise SchemaMismatchError(f"status row {row!r} lacks {missing}; build rows with status_row()")
        ts = row.get("timestamp")
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        warnings = row.get("warnings") or []
        if isinstance(warnings, str):
            warnings = [warnings]
        clean.append(status_row(row["study_id"], row["stage"], status=row["status"], message=row.get("message"),
                                error_class=row.get("error_class"), timestamp=ts, warnings=warnings))
    return pa.Table.from_pylist(clean, schema=STATUS_SCHEMA)


def write_status(rows: dict[str, Any] | Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write status rows atomically: ``.json`` as JSON (one row given as a dict is written
    as one object, with its ``details``), anything else as Parquet."""
    single = isinstance(rows, dict)
    rows = [rows] if single else list(rows)
    table = status_table(rows)  # validates JSON output too
    p = Path(path)
    if p.suffix.lower() == ".json":
        records = table.to_pylist()
        for given, r in zip(rows, records):
            r["timestamp"] = r["timestamp"].isoformat()
            if given.get("details"):
                r["details"] = dict(given["details"])
        write_json_atomic(p, records[0] if single else records)
    else:
        with atomic_path(p) as tmp:
            pq.write_table(table, tmp)
    return p


def read_status(paths: Iterable[str | Path]) -> pa.Table:
    """Read status files (Parquet, JSON object/list, or JSON lines) into one table, in order.

    Consecutive JSON files become one table (a cohort has one small file per study and stage)."""
    tables: list[pa.Table] = []
    pending: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise SchemaMismatchError(f"status file {p} does not exist")
        if p.suffix.lower() in (".json", ".jsonl"):
            text = p.read_text(encoding="utf-8").strip()
            try:
                data = json.loads(text) if p.suffix.lower() == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
            except json.JSONDecodeError as exc:
                raise SchemaMismatchError(f"status file {p} is not valid JSON: {exc}") from exc
            pending.extend([data] if isinstance(data, dict) else data)
        else:
            try:
                t = pq.read_table(p)
            except (OSError, pa.ArrowInvalid) as exc:
                raise SchemaMismatchError(f"status file {p} is not readable Parquet: {exc}") from exc
            if pending:
                tables.append(status_table(pending))
                pending = []
            tables.append(status_table(t.to_pylist()))
    if pending:
        tables.append(status_table(pending))
    if not tables:
        return STATUS_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def read_status_record(path: str | Path) -> dict[str, Any] | None:
    """The one row of a per-study JSON status file (with its ``details``), or None when the
    file is absent or damaged, so that the stage that owns it runs again."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, list) and len(data) == 1:
            data = data[0]
        row = status_table([data]).to_pylist()[0]
    except (OSError, ValueError, TypeError, AttributeError, SchemaMismatchError):
        return None
    details = data.get("details")
    if isinstance(details, dict) and details:
        row["details"] = details
    return row
