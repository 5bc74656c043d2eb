"""``findings/{study}.jsonl``: one JSON object per finding, written atomically."""

from __future__ import annotations

import json
import os
from typing import Iterable

from voxtell.io.atomic import write_text_atomic
from voxtell.reports.findings import Finding


def write_findings_jsonl(findings: Iterable[Finding], path: str | os.PathLike) -> None:
    """Write findings as JSON lines (an empty report gives an empty file, so the output exists)."""
    lines = [json.dumps(f.to_dict(), ensure_ascii=False) for f in findings]
    write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_findings_jsonl(path: str | os.PathLike, missing_ok: bool = False) -> list[dict]:
    """Read a findings file back as dicts: the one findings reader every stage uses.

    ``missing_ok``: a file that does not exist is no findings (a study without a report).
    A damaged line is an ``InputError`` naming the file and line."""
    from voxtell.errors import InputError

    if missing_ok and not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path} line {n} is not JSON ({exc}); rerun the findings step") from exc
            if not isinstance(record, dict):
                raise InputError(f"{path} line {n} is not a JSON object; rerun the findings step")
            records.append(record)
    return records
