"""``voxtell findings``: report text -> findings JSONL (one report, or a cohort table)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "findings",
        help="extract finding sentences (prompts) from radiology/radiotherapy reports",
        description="Extract finding sentences from a report (REPORT.txt -o findings.jsonl) or a "
        "cohort table of study_id + report/report_path (--table T -o OUT_DIR).",
    )
    p.add_argument("report", nargs="?", type=Path, help="report text file (UTF-8; Latin-1 is decoded with a warning)")
    p.add_argument("-o", "--output", type=Path, required=True, help="findings .jsonl (one report) or output folder (--table)")
    p.add_argument("--table", type=Path, help="CSV/TSV/JSONL/Parquet with study_id and report or report_path")
    p.add_argument("--study-id", help="study id for finding ids (default: the report file name without suffix)")
    p.add_argument("--vocabulary", type=Path, help="concept vocabulary TSV (default: config/concepts.tsv)")
    p.add_argument("--spacy-model", help="installed scispaCy model to use (e.g. en_core_sci_sm); default: blank English")
    p.add_argument("--omit-negated", action="store_true", help="leave negated/normal/resolved statements out")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from voxtell.errors import InputError
    from voxtell.reports.cohort import extract_cohort, extract_study
    from voxtell.reports.config import FindingsConfig
    from voxtell.reports.textio import read_report

    config = FindingsConfig(
        vocabulary=args.vocabulary, spacy_model=args.spacy_model, keep_negated=not args.omit_negated
    )
    if (args.table is None) == (args.report is None):
        raise InputError("give either REPORT.txt or --table TABLE (not both)")
    if args.table is not None:
        statuses = extract_cohort(args.table, args.output, config)
        errors = sum(s.status == "error" for s in statuses)
        print(f"findings: {len(statuses)} studies, {errors} errors, status table in {args.output}")
        return 0
    study_id = args.study_id or args.report.stem
    status = extract_study(read_report(args.report), study_id, args.output, config)
    detail = f" ({status.message})" if status.message else ""
    print(f"findings: study {study_id}: {status.n_findings} findings, {status.n_present} to segment{detail} -> {args.output}")
    return 0
