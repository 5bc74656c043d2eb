"""Volumetric statistics, Parquet cohort tables and visual QC.

One row per (study, prompt): volume, location (DICOM LPS millimetres), shape, intensity in
the image's original units, the report's measured size and, with a reference mask, overlap
and surface distances, and the QC checks it fails (``qc_flags``, ``needs_review``). Rows go
to one Parquet file per study; ``aggregate`` joins them into the cohort table (adding the
checks against the cohort) with a separate status table of failures; ``findings.parquet``
lists every finding, with its mask or why it has none; the QC report shows each mask.

This module stays light (``voxtell --help`` imports the CLI); the public names below load
their submodules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MaskStats": "voxtell.stats.measure",
    "mask_statistics": "voxtell.stats.measure",
    "compute_study_stats": "voxtell.stats.study",
    "StudyStatsConfig": "voxtell.stats.study",
    "load_reference_map": "voxtell.stats.reference",
    "STATS_SCHEMA": "voxtell.stats.schema",
    "STATUS_SCHEMA": "voxtell.stats.schema",
    "write_stats_parquet": "voxtell.stats.parquet",
    "read_stats": "voxtell.stats.parquet",
    "aggregate": "voxtell.stats.parquet",
    "AggregateResult": "voxtell.stats.parquet",
    "status_row": "voxtell.stats.status",
    "write_status": "voxtell.stats.status",
    "read_status": "voxtell.stats.status",
    "render_study_qc": "voxtell.stats.qc",
    "write_cohort_html": "voxtell.stats.qc_report",
    "QCChecksConfig": "voxtell.stats.flags",
    "row_flags": "voxtell.stats.flags",
    "cohort_flags": "voxtell.stats.flags",
    "write_findings_parquet": "voxtell.stats.findings_table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voxtell.stats' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
