"""Aggregate stage, once per cohort: per-study Parquet parts -> the cohort dataset, the
status table, a versions file and the QC report.
"""

from __future__ import annotations

import logging
import os
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable

from voxtell import __version__
from voxtell.cohort import status as st
from voxtell.cohort.layout import COHORT_FILES
from voxtell.io.atomic import write_json_atomic

log = logging.getLogger(__name__)

#: Packages whose versions go into ``versions.json`` (nf-core style software manifest).
TOOLS = ("torch", "onnxruntime", "nibabel", "pydicom", "dcm2niix", "highdicom", "pyarrow", "snakemake",
         "numpy", "transformers")


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"voxtell-pipeline": __version__, "python": platform.python_version()}
    for name in TOOLS:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


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
    findings_files: dict[str, str] | None = None,
    qc_checks: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``stats.parquet``, ``status.parquet``, ``SCHEMA.md``, ``versions.json`` and ``qc.html``.

    ``status_files`` are the stages' per-study ``status.json`` rows (ok, failed, skipped);
    they go into the status table as they are, so every (study, stage) has a row.
    ``findings_files`` (study -> findings.jsonl) add ``findings.parquet``; ``qc_checks``
    are the QC thresholds (``stats.qc_checks``) of the flags recomputed over the cohort."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from voxtell.stats import aggregate, write_cohort_html
    from voxtell.stats.findings_table import write_findings_parquet
    from voxtell.stats.flags import QCChecksConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status_files = list(status_files)
    missing = [str(p) for p in status_files if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} status record(s) are missing, e.g. {missing[0]}; rerun their stage")
    parts = [p for p in stats_files if Path(p).is_file()]
    versions = tool_versions()
    result = aggregate(
        parts,
        out,
        status_parts=status_files,
        config_hash=config_hash,
        metadata={"model_sha256_config": model_sha256, "text_encoder": text_encoder,
                  "pipeline_version_workflow": __version__, **(extra or {})},
        checks=QCChecksConfig.from_mapping(qc_checks),
    )
    status = pq.read_table(result.status_path)
    failed = status.filter(pc.equal(status["status"], st.FAILED)).to_pylist() if status.num_rows else []
    pngs = {k: v for k, v in (qc_pngs or {}).items() if Path(v).is_file()}
    write_cohort_html(result.stats_path, out / COHORT_FILES["qc"], status=result.status_path, qc_pngs=pngs)
    if findings_files is not None:
        write_findings_parquet(findings_files, result.stats_path, out / COHORT_FILES["findings"])
    summary = {
        "pipeline_version": __version__,
        "config_hash": config_hash,
        "model_sha256": model_sha256,
        "text_encoder": text_encoder,
        "n_rows": result.n_rows,
        "n_studies_with_rows": result.n_studies,
        "n_failed_stages": result.n_failed,
        "failed": [{**r, "timestamp": r["timestamp"].isoformat()} for r in failed],
        "tools": versions,
    }
    summary["dice"] = write_dice_summary(result.stats_path, out / COHORT_FILES["dice"])
    write_json_atomic(out / COHORT_FILES["versions"], summary)
    log.info("cohort table: %d rows, %d studies, %d failed stage(s)", result.n_rows, result.n_studies, result.n_failed)
    return summary


#: The dice.tsv row of every report finding with a reference (each finding's text is its own
#: prompt, so per-prompt rows would say little; stats.parquet has them one by one).
FINDINGS_ROW = "(report findings)"


def write_dice_summary(stats_path: str | os.PathLike, out_tsv: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Mean Dice per fixed prompt, and over all report findings, for the studies with a
    reference mask (the demo's ground truth)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from voxtell.cohort.prompts import FINDING
    from voxtell.io.atomic import write_text_atomic

    table = pq.read_table(stats_path, columns=["prompt", "source", "dice"])
    table = table.filter(pc.is_valid(table["dice"]))
    per_prompt: dict[str, list[float]] = {}
    for prompt, source, dice in zip(table["prompt"].to_pylist(), table["source"].to_pylist(), table["dice"].to_pylist()):
        per_prompt.setdefault(FINDINGS_ROW if source == FINDING else prompt, []).append(float(dice))
    summary = {p: {"n": len(v), "mean_dice": sum(v) / len(v), "min_dice": min(v)} for p, v in sorted(per_prompt.items())}
    lines = ["prompt\tn\tmean_dice\tmin_dice"]
    lines += [f"{p}\t{s['n']}\t{s['mean_dice']:.4f}\t{s['min_dice']:.4f}" for p, s in summary.items()]
    write_text_atomic(out_tsv, "\n".join(lines) + "\n")
    return summary
