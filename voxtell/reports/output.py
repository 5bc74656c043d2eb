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


def read_findings_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a findings file back as dicts (the stable contract other stages use)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
