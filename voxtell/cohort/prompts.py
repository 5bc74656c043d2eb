"""Which prompts each study is segmented with, and the cohort's set of unique prompts.

A study's prompts are the fixed prompts of the configuration (organs at risk and the like,
``source = "config"``) followed by its report findings (``source = "finding"``) that are
neither negated nor duplicates. Prompts that normalise to the same text are segmented once
(masks are named by ``prompt_id``). The cohort's unique prompts feed the single embedding
job, so each prompt is embedded once per cohort, never per study.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from voxtell.errors import InputError
from voxtell.prompts import normalize_prompt, prompt_id

CONFIG, FINDING = "config", "finding"


@dataclass(frozen=True)
class StudyPrompt:
    """One prompt of one study, with where it came from."""

    prompt: str
    source: str
    finding_id: str | None = None

    @property
    def prompt_id(self) -> str:
        return prompt_id(self.prompt)

    def as_job_entry(self) -> dict[str, str | None]:
        """The per-prompt dict of a predictor job (extra keys land in the mask manifest)."""
        return {"prompt": self.prompt, "source": self.source, "finding_id": self.finding_id}


def fixed_prompts(prompts: Sequence[str] = (), prompts_file: str | os.PathLike | None = None) -> list[str]:
    """The configuration's fixed prompts (inline list, then file: text or JSONL, read by
    ``voxtell.text.prompts_file`` like ``voxtell embed --prompts-file``), without empty entries."""
    out = [p for p in prompts if normalize_prompt(p)]
    if prompts_file:
        from voxtell.text.prompts_file import read_prompts_file  # imported here: voxtell.text loads numpy

        try:
            out += [p for p in read_prompts_file(prompts_file) if normalize_prompt(p)]
        except InputError as exc:
            raise InputError(f"{exc}; fix 'prompts.file' in the config") from exc
    return out


def read_findings(path: str | os.PathLike) -> list[dict]:
    """Findings JSONL records; a missing file means no findings (e.g. no report)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise InputError(f"{path} line {n} is not JSON ({exc}); rerun the findings step") from exc
    return records


def segmentable(finding: dict) -> bool:
    """Findings that get a mask: affirmed (not negated) and not a duplicate of another."""
    return not finding.get("negated", False) and finding.get("duplicate_of") is None and bool(
        normalize_prompt(finding.get("prompt") or "")
    )


def study_prompts(fixed: Sequence[str], findings: Iterable[dict] = ()) -> list[StudyPrompt]:
    """Fixed prompts first, then segmentable findings; one entry per normalised prompt."""
    out: list[StudyPrompt] = []
    seen: set[str] = set()

    def add(item: StudyPrompt) -> None:
        key = normalize_prompt(item.prompt)
        if key and key not in seen:
            seen.add(key)
            out.append(item)

    for p in fixed:
        add(StudyPrompt(p, CONFIG))
    for f in findings:
        if segmentable(f):
            add(StudyPrompt(f["prompt"], FINDING, f.get("finding_id")))
    return out


def cohort_prompts(fixed: Sequence[str], findings_files: Iterable[str | os.PathLike]) -> list[str]:
    """Unique normalised prompts of the whole cohort, in first-seen order."""
    unique: dict[str, None] = {}
    for p in fixed:
        unique.setdefault(normalize_prompt(p))
    for path in findings_files:
        for f in read_findings(path):
            if segmentable(f):
                unique.setdefault(normalize_prompt(f["prompt"]))
    unique.pop("", None)
    return list(unique)
