"""A cohort of reports from one table (CSV, TSV, JSONL or Parquet) -> one findings file per study.

The table has ``study_id`` and either ``report`` (the text) or ``report_path`` (a file read
with :func:`~voxtell.reports.textio.read_report`). A bad study (unreadable file, unsafe id)
becomes a status row and never stops the cohort; the status table is written last.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from voxtell.errors import InputError, VoxTellError
from voxtell.io.atomic import write_text_atomic
from voxtell.reports.config import FindingsConfig
from voxtell.reports.findings import extract_findings
from voxtell.reports.output import write_findings_jsonl
from voxtell.reports.textio import read_report

log = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
STATUS_FILE = "findings_status.tsv"


class ReportTableError(InputError):
    """The cohort table cannot be read or lacks the required columns."""


@dataclass(frozen=True)
class StudyStatus:
    study_id: str
    status: str  # ok | empty | error
    n_findings: int
    n_present: int
    message: str = ""


def read_report_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a report table as dicts with ``study_id`` and ``report`` or ``report_path``."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(p).to_pylist()
        elif suffix in (".jsonl", ".ndjson"):
            with open(p, encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
        elif suffix in (".csv", ".tsv", ".txt"):
            with open(p, encoding="utf-8-sig", newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
        else:
            raise ReportTableError(f"{p}: unknown table format {suffix!r}; use .csv, .tsv, .jsonl or .parquet")
    except (OSError, ValueError) as exc:
        raise ReportTableError(f"cannot read report table {p}: {exc}") from exc
    if rows and ("study_id" not in rows[0] or not ({"report", "report_path"} & rows[0].keys())):
        raise ReportTableError(f"{p}: needs a 'study_id' column and a 'report' (text) or 'report_path' column; found {sorted(rows[0])}")
    return rows


def extract_cohort(
    table: str | os.PathLike, out_dir: str | os.PathLike, config: FindingsConfig | None = None
) -> list[StudyStatus]:
    """Write ``out_dir/{study_id}.jsonl`` for every row and ``out_dir/findings_status.tsv``."""
    from tqdm import tqdm

    config = config or FindingsConfig()
    rows = read_report_table(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(table).parent
    statuses: list[StudyStatus] = []
    for row in tqdm(rows, desc="findings", unit="report", disable=None):
        study_id = str(row.get("study_id") or "").strip()
        try:
            if not _SAFE_ID.match(study_id):
                raise InputError(f"study_id {study_id!r} is not a safe file name (letters, digits, . _ -)")
            text = row.get("report")
            if text is None or (isinstance(text, float)):
                rp = row.get("report_path")
                if not rp:
                    raise InputError("row has neither report text nor report_path")
                rp = Path(rp)
                text = read_report(rp if rp.is_absolute() else base / rp)
            statuses.append(extract_study(str(text), study_id, out / f"{study_id}.jsonl", config))
        except VoxTellError as exc:
            log.error("study %s: %s", study_id, exc)
            statuses.append(StudyStatus(study_id, "error", 0, 0, f"{type(exc).__name__}: {exc}"))
    write_status_table(statuses, out / STATUS_FILE)
    return statuses


def extract_study(text: str, study_id: str, path: str | os.PathLike, config: FindingsConfig) -> StudyStatus:
    """Findings of one report written to ``path``; an empty report gives an empty file and status 'empty'."""
    findings = extract_findings(text, study_id, config)
    write_findings_jsonl(findings, path)
    present = sum(1 for f in findings if not f.negated and f.duplicate_of is None)
    if not text.strip():
        return StudyStatus(study_id, "empty", 0, 0, "empty report: no findings")
    return StudyStatus(study_id, "ok", len(findings), present)


def write_status_table(statuses: list[StudyStatus], path: str | os.PathLike) -> None:
    fields = list(StudyStatus.__dataclass_fields__)
    lines = ["\t".join(fields)]
    for s in statuses:
        d = asdict(s)
        lines.append("\t".join(str(d[f]).replace("\t", " ").replace("\n", " ") for f in fields))
    write_text_atomic(path, "\n".join(lines) + "\n")
