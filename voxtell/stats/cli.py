"""``voxtell stats``, ``voxtell aggregate``, ``voxtell qc`` and ``voxtell qc-report``.

Handlers import numpy, scipy, pyarrow and matplotlib only when they run and wrap the
Python API (``compute_study_stats``, ``aggregate``, ``render_study_qc``,
``write_cohort_html``) without adding behaviour.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats",
        help="volumetric statistics of one study's masks -> Parquet",
        description="One row per prompt: volume, LPS bbox/centroid, components, RECIST diameters, intensity, "
        "report size and, with --reference, Dice/HD95/MSD.",
    )
    p.add_argument("--image", required=True, help="the study's image (NIfTI) the masks were predicted on")
    p.add_argument("--masks", required=True, help="mask folder: {prompt_id}.nii.gz + manifest.json")
    p.add_argument("--findings", help="findings JSONL of the study (adds report_diameter_mm and diameter_ratio)")
    p.add_argument("--reference", help="reference masks: a folder named by prompt/prompt id, or a .json/.tsv mapping")
    p.add_argument("--study-id", help="study id (default: the manifest's)")
    p.add_argument("--workers", type=int, default=1, help="threads measuring masks in parallel (default 1)")
    p.add_argument("-o", "--output", required=True, help="output Parquet file")
    p.add_argument("--status", help="also write this stage's status row here (.parquet or .json)")
    p.add_argument("--empty-on-error", action="store_true",
                   help="on a bad study write an empty Parquet and the failed status row, and exit 0")
    p.set_defaults(func=_stats)

    a = subparsers.add_parser(
        "aggregate",
        help="join per-study Parquet files into the cohort table + status table",
        fromfile_prefix_chars="@",
        description="Writes OUT/stats.parquet, OUT/status.parquet and OUT/SCHEMA.md. "
        "Arguments may come from a file: voxtell aggregate @parts.txt -o cohort/.",
    )
    a.add_argument("parts", nargs="+", help="per-study stats Parquet files or folders of them")
    a.add_argument("-o", "--output", required=True, help="cohort output folder")
    a.add_argument("--status", nargs="*", default=[], help="status files (.parquet/.json) or folders of .parquet")
    a.add_argument("--config-hash", help="hash of the run's configuration, stored in the metadata")
    a.add_argument("--findings", nargs="*", default=[],
                   help="findings files ({study}/findings.jsonl or {study}.jsonl): also write OUT/findings.parquet "
                   "with every finding, its mask row or why it has none")
    a.add_argument("--qc-checks", help="JSON file of QC thresholds (stats.qc_checks); default: the built-in ones")
    a.set_defaults(func=_aggregate)

    q = subparsers.add_parser("qc", help="QC PNG: three orthogonal slices through each mask's centroid")
    q.add_argument("--image", required=True, help="the study's image (NIfTI)")
    q.add_argument("--masks", required=True, help="mask folder with manifest.json")
    q.add_argument("--modality", help="CT (W400/L40) or MR/PT (percentile window); default: series.json or guess")
    q.add_argument("--max-masks", type=int, help="at most this many masks (rows)")
    q.add_argument("--reference", help="reference masks (as for voxtell stats): drawn as a second outline")
    q.add_argument("-o", "--output", required=True, help="output PNG")
    q.set_defaults(func=_qc)

    r = subparsers.add_parser("qc-report", help="cohort QC review page + a page per study (offline, pictures inline)")
    r.add_argument("--stats", required=True, help="cohort stats.parquet")
    r.add_argument("--status", help="cohort status.parquet")
    r.add_argument("--png", nargs="*", default=[], help="study QC PNGs ({study_id}.png or {study_id}/qc.png)")
    r.add_argument("--max-pictures", "--max-thumbnails", type=int, default=2000,
                   help="mask pictures on the main page, flagged rows first (study pages show all)")
    r.add_argument("-o", "--output", required=True, help="output HTML file")
    r.set_defaults(func=_qc_report)


def _stats(args: argparse.Namespace) -> int:
    from voxtell.errors import VoxTellError
    from voxtell.stats.parquet import write_stats_parquet
    from voxtell.stats.status import status_row, write_status
    from voxtell.stats.study import StudyStatsConfig, compute_study_stats, read_manifest

    config = StudyStatsConfig(study_id=args.study_id, workers=args.workers)
    try:
        result = compute_study_stats(
            args.image, args.masks, findings=args.findings, reference=args.reference, config=config
        )
    except VoxTellError as exc:
        study_id = args.study_id
        if not study_id:
            try:
                study_id = read_manifest(args.masks).get("study_id")
            except VoxTellError:
                study_id = None
        study_id = study_id or "unknown"
        if args.status:
            write_status(status_row(study_id, "stats", exc), args.status)
        if args.empty_on_error:
            log.error("%s: %s (wrote an empty table)", type(exc).__name__, exc)
            write_stats_parquet([], args.output, {"study_id": study_id})
            return 0
        raise
    write_stats_parquet(result, args.output)
    if args.status:
        write_status(status_row(result.study_id, "stats"), args.status)
    print(f"{args.output}: {len(result.rows)} rows for study {result.study_id}")
    return 0


def _aggregate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from voxtell.stats.findings_table import write_findings_parquet
    from voxtell.stats.flags import QCChecksConfig
    from voxtell.stats.parquet import aggregate

    checks = QCChecksConfig.from_mapping(json.loads(Path(args.qc_checks).read_text()) if args.qc_checks else None)
    res = aggregate(args.parts, args.output, status_parts=args.status, config_hash=args.config_hash, checks=checks)
    print(f"{res.stats_path}: {res.n_rows} rows, {res.n_studies} studies; {res.status_path}: {res.n_failed} failed")
    if args.findings:
        files = {}
        for f in map(Path, args.findings):
            stem = f.name[: -len(".jsonl")] if f.name.endswith(".jsonl") else f.stem
            files[f.parent.name if stem == "findings" else stem] = f
        print(write_findings_parquet(files, res.stats_path, Path(args.output) / "findings.parquet"))
    return 0


def _qc(args: argparse.Namespace) -> int:
    from voxtell.stats.qc import render_study_qc

    out = render_study_qc(args.image, args.masks, args.output, modality=args.modality, max_masks=args.max_masks,
                          reference=args.reference)
    print(out)
    return 0


def _qc_report(args: argparse.Namespace) -> int:
    from voxtell.stats.qc_report import write_cohort_html

    out = write_cohort_html(args.stats, args.output, status=args.status, qc_pngs=args.png,
                            max_pictures=args.max_pictures)
    print(out)
    return 0
