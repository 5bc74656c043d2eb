"""``voxtell findings``: report text -> findings JSONL, one report (a cohort of reports is the
workflow's findings stage: ``snakemake findings``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "findings",
        help="extract finding sentences (prompts) from radiology/radiotherapy reports",
        description="Extract finding sentences from a report (REPORT.txt -o findings.jsonl). For a cohort, "
        "list the reports in the workflow's samples table (report column) and run `snakemake findings`.",
    )
    p.add_argument("report", type=Path, help="report text file (UTF-8/16/32 with or without BOM; Latin-1 with a warning)")
    p.add_argument("-o", "--output", type=Path, required=True, help="findings .jsonl")
    p.add_argument("--study-id", help="study id for finding ids (default: the report file name without suffix)")
    p.add_argument("--vocabulary", type=Path, help="concept vocabulary TSV (default: config/concepts.tsv)")
    p.add_argument("--spacy-model", help=argparse.SUPPRESS)  # no longer used; kept so old scripts run
    p.add_argument("--omit-negated", action="store_true", help="leave negated/normal/resolved statements out")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from voxtell.reports.config import FindingsConfig
    from voxtell.reports.findings import extract_findings, gets_mask
    from voxtell.reports.output import write_findings_jsonl
    from voxtell.reports.textio import read_report

    config = FindingsConfig(
        vocabulary=args.vocabulary, spacy_model=args.spacy_model, keep_negated=not args.omit_negated
    )
    study_id = args.study_id or args.report.stem
    text = read_report(args.report)
    findings = extract_findings(text, study_id, config)
    write_findings_jsonl(findings, args.output)
    n_masks = sum(gets_mask(f)[0] for f in findings)
    detail = " (empty report: no findings)" if not text.strip() else ""
    print(f"findings: study {study_id}: {len(findings)} findings, {n_masks} to segment{detail} -> {args.output}")
    return 0
