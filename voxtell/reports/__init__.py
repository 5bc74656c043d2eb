"""Report parsing: sections, sentences, abbreviations, negation and findings.

Public API (spaCy is imported only when a pipeline is first built)::

    extract_findings(text, study_id, config) -> list[Finding]
    read_report(path) -> str
    write_findings_jsonl(findings, path)
    extract_cohort(table, out_dir, config) -> list[StudyStatus]
    build_pipeline(config) -> ReportPipeline   # cached: one nlp object per process
"""

from voxtell.reports.cohort import StudyStatus, extract_cohort, extract_study, read_report_table
from voxtell.reports.config import FindingsConfig
from voxtell.reports.findings import Finding, extract_findings
from voxtell.reports.output import read_findings_jsonl, write_findings_jsonl
from voxtell.reports.pipeline import build_pipeline, pipeline_versions
from voxtell.reports.textio import read_report

__all__ = [
    "Finding", "FindingsConfig", "StudyStatus", "build_pipeline", "extract_cohort", "extract_findings",
    "extract_study", "pipeline_versions", "read_findings_jsonl", "read_report", "read_report_table",
    "write_findings_jsonl",
]
