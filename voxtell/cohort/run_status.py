"""One screen on how a run went: studies ok / failed / skipped per stage, and the failures.

Read from the shard summaries the stage jobs write last (``layout``: one small file per
shard and stage, so this is fast for 100,000 studies). If shard counts changed between
runs, a study's newest summary wins. ``voxtell status RESULTS_DIR`` prints it and exits 1
when any study failed; the workflow prints it at the end of every run and exits non-zero in
the same case, so a nightly run whose studies failed is never silently green.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from voxtell.cohort.layout import SHARDS, STAGES
from voxtell.cohort.status import FAILED, STATUSES

#: Failures listed by name on the screen (the rest are counted).
MAX_LISTED = 12


@dataclass
class RunStatus:
    """Per stage: study -> its latest {status, error_class, message, ...} entry."""

    results: str
    stages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def counts(self, stage: str) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for rec in self.stages.get(stage, {}).values():
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out

    def failures(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(stage, study, rec) for stage, recs in self.stages.items() for study, rec in sorted(recs.items())
                if rec["status"] == FAILED]

    @property
    def any_failed(self) -> bool:
        return bool(self.failures())

    def render(self, max_listed: int = MAX_LISTED) -> str:
        if not self.stages:
            return f"no stage has finished a shard under {self.results} yet"
        lines = [f"studies per stage ({self.results}):", f"  {'stage':<10}{'ok':>8}{'failed':>8}{'skipped':>9}"]
        for stage in self.stages:
            c = self.counts(stage)
            lines.append(f"  {stage:<10}{c['ok']:>8}{c['failed']:>8}{c['skipped']:>9}")
        failures = self.failures()
        if failures:
            lines.append(f"{len(failures)} failed (study, stage: error):")
            for stage, study, rec in failures[:max_listed]:
                message = " ".join(str(rec.get("message") or "").split())
                lines.append(f"  {study}, {stage}: {rec.get('error_class')}: {message[:110]}")
            if len(failures) > max_listed:
                lines.append(f"  ... and {len(failures) - max_listed} more: see {self.results}/cohort/status.parquet")
        return "\n".join(lines)


def read_run_status(results: str | os.PathLike = "results", studies: Iterable[str] | None = None) -> RunStatus:
    """The latest status of every study in every stage's shard summaries under ``results``
    (only ``studies`` when given: the samples table's, leaving out studies since removed)."""
    results = str(results)
    wanted = set(studies) if studies is not None else None
    out = RunStatus(results)
    for stage in STAGES:
        folder = Path(results) / stage / SHARDS
        if not folder.is_dir():
            continue
        summaries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        found: dict[str, dict[str, Any]] = {}
        for path in summaries:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            for study, rec in (data.get("studies") or {}).items():
                if isinstance(rec, dict) and rec.get("status") in STATUSES and (wanted is None or study in wanted):
                    found[study] = rec
        if found:
            out.stages[stage] = found
    return out
