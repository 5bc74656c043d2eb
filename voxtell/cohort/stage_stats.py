"""Stats stage, one shard of studies: masks -> per-study Parquet and QC PNG.

Runs after the shard's segmentation and, like it, skips studies whose inputs (the
segmentation marker, findings, reference masks, settings) are unchanged, so adding one
study to a shard measures only that study again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from voxtell.cohort import markers
from voxtell.cohort import status as st
from voxtell.cohort.hashing import file_sha256
from voxtell.cohort.shards import ShardSummary
from voxtell.errors import VoxTellError

log = logging.getLogger(__name__)

STAGE = "stats"
STATUS_NAME = "status.json"
STATS_NAME = "stats.parquet"
QC_NAME = "qc.png"


@dataclass(frozen=True)
class StatsTask:
    study_id: str
    segment_dir: str
    findings: str | None
    reference: str | None
    out_dir: str


def _path_fingerprint(path: str | None) -> Any:
    """Content hash of a file, or (name, size, mtime) of a folder's files; None if absent."""
    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    if p.is_dir():
        return sorted((str(f.relative_to(p)), f.stat().st_size, f.stat().st_mtime_ns) for f in p.rglob("*") if f.is_file())
    return None


def run_stats_shard(
    shard: str,
    tasks: Sequence[StatsTask],
    summary_path: str | os.PathLike,
    *,
    qc: bool = True,
    workers: int = 1,
    config_hash: str | None = None,
) -> dict[str, Any]:
    """Measure every study of the shard whose segmentation, findings or reference changed."""
    from voxtell.stats import StudyStatsConfig, compute_study_stats, render_study_qc, write_stats_parquet

    summary = ShardSummary(STAGE, shard, extra={"config_hash": config_hash})
    for task in tqdm(tasks, desc=f"stats shard {shard}", unit="study", disable=len(tasks) < 2):
        out_dir, seg_dir = Path(task.out_dir), Path(task.segment_dir)
        status_path, marker = out_dir / STATUS_NAME, out_dir / markers.MARKER_NAME
        seg = st.read(seg_dir / STATUS_NAME)
        if seg is None:
            raise FileNotFoundError(f"{seg_dir / STATUS_NAME} is missing; the segment step did not finish")
        if not st.is_ok(seg):
            for name in (STATS_NAME, QC_NAME):
                (out_dir / name).unlink(missing_ok=True)
            record = st.skipped(task.study_id, STAGE, seg, seg["message"])
            st.write(status_path, record)
            summary.add(record, reused=False)
            continue
        seg_marker = markers.read_marker(seg_dir / markers.MARKER_NAME) or {}
        inputs = {
            "segmentation": seg_marker.get("fingerprint"),
            "findings": _path_fingerprint(task.findings),
            "reference": _path_fingerprint(task.reference),
            "qc": qc,
        }
        previous = st.read(status_path)
        if markers.can_reuse(marker, inputs, previous, out_dir / STATS_NAME):
            summary.add(previous, reused=True)
            continue
        marker.unlink(missing_ok=True)
        try:
            manifest_image = _manifest_image(seg_dir)
            study = compute_study_stats(
                manifest_image,
                seg_dir,
                findings=task.findings if task.findings and Path(task.findings).is_file() else None,
                reference=task.reference or None,
                config=StudyStatsConfig(study_id=task.study_id, workers=workers),
            )
            write_stats_parquet(study, out_dir / STATS_NAME, metadata={"config_hash": config_hash or ""})
            if qc:
                render_study_qc(manifest_image, seg_dir, out_dir / QC_NAME, title=task.study_id)
        except VoxTellError as exc:
            for name in (STATS_NAME, QC_NAME):
                (out_dir / name).unlink(missing_ok=True)
            record = st.failed(task.study_id, STAGE, exc)
        else:
            record = st.ok(task.study_id, STAGE, n_rows=len(study.rows))
        st.write(status_path, record)
        markers.write_marker(marker, inputs)
        summary.add(record, reused=False)
    return summary.write(summary_path)


def _manifest_image(seg_dir: Path) -> str:
    import json

    from voxtell.cohort.errors import CohortError

    try:
        manifest = json.loads((seg_dir / "manifest.json").read_text(encoding="utf-8"))
        return str(manifest["image"])
    except (OSError, ValueError, KeyError) as exc:
        raise CohortError(f"{seg_dir}/manifest.json is missing or names no image ({exc}); rerun segmentation") from exc
