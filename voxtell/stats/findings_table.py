"""The cohort's ``findings.parquet``: every extracted finding, with its mask or why it has none.

``stats.parquet`` has a row per mask, so a finding that got no mask (negated, a repeat of
another sentence, or its study failed) is missing there; a reader counting findings needs
them all. One row per finding of every study's findings file, joined to its statistics row
by prompt id (findings whose prompts normalise alike share one mask and one row).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from voxtell.io.atomic import atomic_path
from voxtell.prompts import prompt_id
from voxtell.reports.findings import gets_mask
from voxtell.stats.study import load_findings, report_diameter

log = logging.getLogger(__name__)

# (name, type, description)
_FIELDS: list[tuple[str, pa.DataType, str]] = [
    ("study_id", pa.string(), "Study identifier from the samples table."),
    ("finding_id", pa.string(), "Finding id; stable while its sentence is unchanged."),
    ("sentence", pa.string(), "The report sentence, as written."),
    ("prompt", pa.string(), "Text segmented for this finding."),
    ("section", pa.string(), "Report section of the sentence."),
    ("concepts", pa.list_(pa.string()), "Vocabulary concepts the sentence names."),
    ("laterality", pa.string(), "left, right, bilateral or null."),
    ("assertion", pa.string(), "present, negated, normal, resolved or historical."),
    ("uncertain", pa.bool_(), "True when the sentence hedges."),
    ("duplicate_of", pa.string(), "Finding id this sentence repeats (impression restating findings), or null."),
    ("measurements", pa.string(), "Measurements as the findings stage gave them, as JSON."),
    ("report_diameter_mm", pa.float64(), "Largest size the sentence gives, in mm."),
    ("gets_mask", pa.bool_(), "True when the workflow segments this finding."),
    ("no_mask_reason", pa.string(), "Why there is no mask row (null when there is one)."),
    ("prompt_id", pa.string(), "Prompt id of the mask row in stats.parquet (null without one)."),
    ("volume_ml", pa.float64(), "Mask volume (mL) from stats.parquet."),
    ("dice", pa.float64(), "Dice with the reference mask from stats.parquet."),
    ("qc_flags", pa.list_(pa.string()), "QC flags of the mask row (see stats.parquet)."),
    ("needs_review", pa.bool_(), "True when the mask row has QC flags."),
]

FINDINGS_SCHEMA = pa.schema(
    [pa.field(n, t, metadata={"description": d}) for n, t, d in _FIELDS], metadata={"voxtell.table": "findings"}
)


def findings_rows(findings_files: Mapping[str, str | Path], stats: pa.Table) -> list[dict[str, Any]]:
    """One row per finding of each study's findings file (missing files are skipped)."""
    columns = ["study_id", "prompt_id", "volume_ml", "dice", "qc_flags", "needs_review"]
    by_key = {(r["study_id"], r["prompt_id"]): r for r in stats.select(columns).to_pylist()}
    studies_with_rows = {k[0] for k in by_key}
    rows = []
    for study, path in sorted(findings_files.items()):
        if not Path(path).is_file():
            log.info("no findings file for study %s (%s)", study, path)
            continue
        for finding in load_findings(path).values():
            wanted, reason = gets_mask(finding)
            pid = prompt_id(finding["prompt"]) if finding.get("prompt") else None
            stat = by_key.get((study, pid)) if wanted else None
            if wanted and stat is None:
                reason = ("no statistics for this study (a stage failed; see status.parquet)"
                          if study not in studies_with_rows else "no mask row for its prompt")
            measurements = finding.get("measurements", finding.get("measurements_mm"))
            rows.append({
                "study_id": study,
                "finding_id": str(finding.get("finding_id")),
                "sentence": finding.get("sentence"),
                "prompt": finding.get("prompt"),
                "section": finding.get("section"),
                "concepts": [str(c) for c in finding.get("concepts") or []],
                "laterality": finding.get("laterality"),
                "assertion": finding.get("assertion") or ("negated" if finding.get("negated") else "present"),
                "uncertain": finding.get("uncertain"),
                "duplicate_of": finding.get("duplicate_of"),
                "measurements": None if measurements is None else json.dumps(measurements, sort_keys=True),
                "report_diameter_mm": report_diameter(finding),
                "gets_mask": wanted,
                "no_mask_reason": None if stat is not None else reason,
                "prompt_id": pid if stat is not None else None,
                "volume_ml": stat["volume_ml"] if stat else None,
                "dice": stat["dice"] if stat else None,
                "qc_flags": stat["qc_flags"] if stat else None,
                "needs_review": stat["needs_review"] if stat else None,
            })
    return rows


def write_findings_parquet(findings_files: Mapping[str, str | Path], stats: pa.Table | str | Path,
                           out: str | Path) -> Path:
    """Write ``findings.parquet`` (see the module docstring) atomically."""
    table = stats if isinstance(stats, pa.Table) else pq.read_table(stats)
    rows = findings_rows(findings_files, table)
    out = Path(out)
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=FINDINGS_SCHEMA), tmp)
    log.info("findings table: %d findings, %d without a mask -> %s", len(rows),
             sum(r["no_mask_reason"] is not None for r in rows), out)
    return out
