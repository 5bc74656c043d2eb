"""Report parsing: sections, sentences, abbreviations, negation and findings.

Public API (pure Python: the pipeline builds in milliseconds, once per process)::

    extract_findings(text, study_id, config) -> list[Finding]
    read_report(path) -> str
    write_findings_jsonl(findings, path)
    gets_mask(finding) -> (bool, reason)        # the one rule for which findings are segmented
    build_pipeline(config) -> ReportPipeline   # cached: one per process and vocabulary
"""

from voxtell.reports.config import FindingsConfig
from voxtell.reports.findings import Finding, extract_findings, gets_mask
from voxtell.reports.output import read_findings_jsonl, write_findings_jsonl
from voxtell.reports.pipeline import build_pipeline, pipeline_versions
from voxtell.reports.textio import read_report

__all__ = [
    "Finding", "FindingsConfig", "build_pipeline", "extract_findings", "gets_mask", "pipeline_versions",
    "read_findings_jsonl", "read_report", "write_findings_jsonl",
]
