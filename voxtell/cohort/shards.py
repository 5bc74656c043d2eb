"""Shard job bookkeeping shared by the shard stages (findings, segment, stats).

A shard job walks its studies, skips those whose done marker is current, processes the
rest, and ends with a summary JSON (its declared output): per-study status, counts and
timings. The summary is written last, so its presence means the whole shard finished.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtell import __version__
from voxtell.cohort import status as st
from voxtell.cohort.layout import MARKER
from voxtell.cohort.markers import read_marker
from voxtell.io.atomic import write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class ShardSummary:
    """Collects per-study outcomes of one shard job."""

    stage: str
    shard: str
    started: float = field(default_factory=time.perf_counter)
    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, record: st.Record, reused: bool, study_dir: str | os.PathLike | None = None) -> None:
        """Record a study's outcome; with ``study_dir``, also where it is and the stamps its
        done marker vouches for, so the workflow can tell from this one file whether the
        study's results were changed since (``markers.stale_studies``)."""
        entry: dict[str, Any] = {
            "status": record["status"],
            "reused": reused,
            "error_class": record["error_class"],
            "message": record["message"],
            "n_warnings": len(record.get("warnings") or []),
        }
        if study_dir is not None:
            marker = read_marker(Path(study_dir) / MARKER)
            entry["dir"] = str(study_dir)
            entry["outputs"] = marker.get("outputs") if marker else None
        self.studies[record["study_id"]] = entry

    def time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in st.STATUSES}
        for rec in self.studies.values():
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        out["processed"] = sum(1 for r in self.studies.values() if not r["reused"])
        out["reused"] = sum(1 for r in self.studies.values() if r["reused"])
        return out

    def write(self, path: str | os.PathLike) -> dict[str, Any]:
        self.timings["wall_s"] = time.perf_counter() - self.started
        data = {
            "stage": self.stage,
            "shard": self.shard,
            "pipeline_version": __version__,
            "counts": self.counts(),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            **self.extra,
            "studies": self.studies,
        }
        write_json_atomic(path, data)
        c = data["counts"]
        log.info(
            "%s shard %s: %d ok, %d failed, %d skipped (%d processed, %d reused) in %.1f s",
            self.stage, self.shard, c["ok"], c["failed"], c["skipped"], c["processed"], c["reused"],
            self.timings["wall_s"],
        )
        return data
