"""Aggregate stage, once per cohort: per-study Parquet parts -> the cohort dataset, the
status table, a versions file and the QC report.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable

from voxtell import __version__
from voxtell.cohort import status as st
from voxtell.io.atomic import write_json_atomic

log = logging.getLogger(__name__)

#: Packages whose versions go into ``versions.json`` (nf-core style software manifest).
TOOLS = ("torch", "onnxruntime", "nibabel", "pydicom", "dcm2niix", "spacy", "scispacy", "pyarrow", "snakemake",
         "numpy", "transformers")


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"voxtell-pipeline": __version__, "python": platform.python_version()}
    for name in TOOLS:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def collect_status_rows(status_files: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Status-table rows from per-study ``status.json`` records (``skipped`` ones are left
    out: the upstream stage's ``failed`` row already names the cause)."""
    rows = []
    for path in status_files:
        rec = st.read_status(path)
        if rec is None:
            raise FileNotFoundError(f"status record {path} is missing or unreadable; rerun its stage")
        if rec.status == st.SKIPPED:
            continue
        rows.append({"study_id": rec.study_id, "stage": rec.stage, "status": rec.status,
                     "error_class": rec.error_class, "message": rec.message, "timestamp": rec.timestamp})
    return rows


def run_aggregate(
    stats_files: Iterable[str | os.PathLike],
    status_files: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    config_hash: str,
    model_sha256: str | None,
    text_encoder: str | None = None,
    qc_pngs: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``stats.parquet``, ``status.parquet``, ``SCHEMA.md``, ``versions.json`` and ``qc.html``."""
    from voxtell.stats import aggregate, write_cohort_html, write_status

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = collect_status_rows(status_files)
    status_json = out / "status_rows.json"
    write_status(rows, status_json) if rows else write_json_atomic(status_json, [])
    parts = [p for p in stats_files if Path(p).is_file()]
    versions = tool_versions()
    result = aggregate(
        parts,
        out,
        status_parts=[status_json] if rows else [],
        config_hash=config_hash,
        metadata={"model_sha256_config": model_sha256, "text_encoder": text_encoder,
                  "pipeline_version_workflow": __version__, **(extra or {})},
    )
    status_json.unlink(missing_ok=True)
    pngs = {k: v for k, v in (qc_pngs or {}).items() if Path(v).is_file()}
    write_cohort_html(result.stats_path, out / "qc.html", status=result.status_path, qc_pngs=pngs)
    summary = {
        "pipeline_version": __version__,
        "config_hash": config_hash,
        "model_sha256": model_sha256,
        "text_encoder": text_encoder,
        "n_rows": result.n_rows,
        "n_studies_with_rows": result.n_studies,
        "n_failed_stages": result.n_failed,
        "failed": [r for r in rows if r["status"] == st.FAILED],
        "tools": versions,
    }
    summary["dice"] = write_dice_summary(result.stats_path, out / "dice.tsv")
    write_json_atomic(out / "versions.json", summary)
    log.info("cohort table: %d rows, %d studies, %d failed stage(s)", result.n_rows, result.n_studies, result.n_failed)
    return summary


def write_dice_summary(stats_path: str | os.PathLike, out_tsv: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Mean Dice per prompt over studies with a reference mask (the demo's ground truth)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from voxtell.io.atomic import write_text_atomic

    table = pq.read_table(stats_path, columns=["prompt", "dice"])
    table = table.filter(pc.is_valid(table["dice"]))
    per_prompt: dict[str, list[float]] = {}
    for prompt, dice in zip(table["prompt"].to_pylist(), table["dice"].to_pylist()):
        per_prompt.setdefault(prompt, []).append(float(dice))
    summary = {p: {"n": len(v), "mean_dice": sum(v) / len(v), "min_dice": min(v)} for p, v in sorted(per_prompt.items())}
    lines = ["prompt\tn\tmean_dice\tmin_dice"]
    lines += [f"{p}\t{s['n']}\t{s['mean_dice']:.4f}\t{s['min_dice']:.4f}" for p, s in summary.items()]
    write_text_atomic(out_tsv, "\n".join(lines) + "\n")
    return summary


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
