"""Stats stage, one shard of studies: masks -> per-study Parquet and QC PNG.

Runs after the shard's segmentation and, like it, skips studies whose inputs (the
segmentation's masks, reference masks, settings) are unchanged and whose outputs are intact,
so adding one study to a shard measures only that study again. A finding's fields come with
its prompt entry in the segmentation's manifest (contract C3); findings.jsonl is not read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from tqdm import tqdm

from voxtell.cohort import layout, markers
from voxtell.cohort import status as st
from voxtell.cohort.hashing import file_sha256
from voxtell.cohort.shards import ShardSummary
from voxtell.errors import VoxTellError

log = logging.getLogger(__name__)

STAGE = "stats"
STATUS_NAME = layout.STATUS
STATS_NAME = layout.STATS
QC_NAME = layout.QC


@dataclass(frozen=True)
class StatsTask:
    study_id: str
    segment_dir: str
    reference: str | None
    out_dir: str
    dicom: str | None = None  # the study's DICOM folder: RT objects there are references when reference is 'auto'


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
    roi_map: Sequence[Mapping[str, Any]] | None = None,
    mtv_threshold_suv: float = 2.5,
    qc_checks: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure every study of the shard whose segmentation, findings or reference changed.

    ``reference: auto`` uses the RTSTRUCT/SEG objects of the study's DICOM folder, mapped to
    prompts by ``roi_map`` (see ``voxtell.stats.reference``); a PET converted beside the CT
    adds SUV columns (``voxtell.stats.suv_stats``).
    """
    from voxtell.stats import StudyStatsConfig, compute_study_stats, render_study_qc, write_stats_parquet
    from voxtell.stats.reference import AUTO, auto_reference_fingerprint, parse_roi_map, prepare_auto_reference
    from voxtell.stats.flags import QCChecksConfig
    from voxtell.stats.suv_stats import SuvConfig, add_suv_columns, pet_beside

    rules = parse_roi_map(roi_map)
    checks = QCChecksConfig.from_mapping(qc_checks)

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
            marker.unlink(missing_ok=True)  # the marker vouches for a result; there is none now
            record = st.skipped(task.study_id, STAGE, seg, seg["message"])
            st.write(status_path, record)
            summary.add(record, reused=False, study_dir=out_dir)
            continue
        seg_marker = markers.read_marker(seg_dir / markers.MARKER_NAME) or {}
        inputs = {
            # the masks as published: a study segmented again is measured again
            "segmentation": [seg_marker.get("fingerprint"), seg_marker.get("outputs")],
            "reference": auto_reference_fingerprint(task.dicom, rules) if task.reference == AUTO
            else _path_fingerprint(task.reference),
            "pet": _pet_fingerprint(seg_dir),
            "mtv_threshold_suv": mtv_threshold_suv,
            "qc": qc,
            "qc_checks": checks.as_dict(),
        }
        previous = st.read(status_path)
        if markers.can_reuse(marker, inputs, previous):
            summary.add(previous, reused=True, study_dir=out_dir)
            continue
        marker.unlink(missing_ok=True)
        try:
            manifest_image = _manifest_image(seg_dir)
            reference, ref_warnings = task.reference or None, []
            if task.reference == AUTO:
                prompts = _manifest_prompts(seg_dir)
                reference, ref_warnings = prepare_auto_reference(task.dicom, manifest_image, prompts, rules,
                                                                 out_dir / "reference")
            study = compute_study_stats(
                manifest_image,
                seg_dir,
                reference=reference,
                config=StudyStatsConfig(study_id=task.study_id, workers=workers, checks=checks),
            )
            add_suv_columns(study.rows, manifest_image, pet_beside(manifest_image), SuvConfig(mtv_threshold_suv))
            for row in study.rows:
                row["warnings"] = list(row.get("warnings") or []) + ref_warnings
            write_stats_parquet(study, out_dir / STATS_NAME, metadata={"config_hash": config_hash or ""})
            if qc:
                render_study_qc(manifest_image, seg_dir, out_dir / QC_NAME, title=task.study_id, reference=reference)
        except Exception as exc:  # the stage boundary: a study's error is its row (job errors re-raise)
            for name in (STATS_NAME, QC_NAME):
                (out_dir / name).unlink(missing_ok=True)
            record = st.study_error(task.study_id, STAGE, exc)
        else:
            record = st.ok(task.study_id, STAGE, n_rows=len(study.rows), warnings=ref_warnings)
        st.write(status_path, record)
        if not st.is_unexpected(record):
            outputs = [status_path] + [out_dir / n for n in (STATS_NAME, QC_NAME) if (out_dir / n).is_file()]
            markers.write_marker(marker, inputs, outputs)
        summary.add(record, reused=False, study_dir=out_dir)
    return summary.write(summary_path)


def _pet_fingerprint(seg_dir: Path) -> Any:
    """Hash of the PET converted beside the study's image (None without one or without a manifest)."""
    from voxtell.stats.suv_stats import pet_beside

    try:
        pet = pet_beside(_manifest_image(seg_dir))
    except VoxTellError:
        return None
    return _path_fingerprint(str(pet)) if pet else None


def _manifest_prompts(seg_dir: Path) -> list[dict[str, Any]]:
    from voxtell.stats.study import read_manifest

    return list(read_manifest(seg_dir)["prompts"])


def _manifest_image(seg_dir: Path) -> str:
    import json

    from voxtell.cohort.errors import CohortError

    try:
        manifest = json.loads((seg_dir / layout.MANIFEST).read_text(encoding="utf-8"))
        return str(manifest["image"])
    except (OSError, ValueError, KeyError) as exc:
        raise CohortError(f"{seg_dir}/manifest.json is missing or names no image ({exc}); rerun segmentation") from exc
