"""Which prompts each study is segmented with, and the cohort's set of unique prompts.

A study's prompts are the fixed prompts of the configuration (organs at risk and the like,
``source = "config"``) followed by its report findings that get a mask
(``voxtell.reports.findings.gets_mask``: asserted present, not a duplicate;
``source = "finding"``). Prompts that normalise to the same text are segmented once (masks
are named by ``prompt_id``). At most ``max_prompts`` prompts per study are segmented (a
report with thousands of finding sentences would otherwise run a segmentation job out of
memory); the findings beyond the cap are recorded as skipped, with the reason. The cohort's
unique prompts feed the single embedding job, so each prompt is embedded once per cohort.

A finding prompt carries the finding's fields (contract C3) through the predictor into the
manifest, where the stats stage reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from voxtell.errors import InputError
from voxtell.prompts import normalize_prompt, prompt_id
from voxtell.reports.findings import gets_mask
from voxtell.reports.output import read_findings_jsonl

CONFIG, FINDING = "config", "finding"
#: The finding fields a prompt entry carries into the manifest (contract C3).
FINDING_FIELDS = ("finding_id", "sentence", "section", "concepts", "laterality", "assertion", "uncertain",
                  "measurements")
#: Default cap of prompts per study (config ``segment.max_prompts_per_study``).
MAX_PROMPTS = 64


@dataclass(frozen=True)
class StudyPrompt:
    """One prompt of one study, with where it came from."""

    prompt: str
    source: str
    finding_id: str | None = None
    finding: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def prompt_id(self) -> str:
        return prompt_id(self.prompt)

    def as_job_entry(self) -> dict[str, Any]:
        """The per-prompt dict of a predictor job (extra keys land in the mask manifest)."""
        return {"prompt": self.prompt, "source": self.source, "finding_id": self.finding_id, "finding": self.finding}


@dataclass(frozen=True)
class StudyPrompts:
    """A study's prompts, and the findings it does not segment beyond the cap."""

    prompts: list[StudyPrompt]
    #: {"finding_id", "prompt", "reason"} of findings that get a mask but are over the cap.
    over_cap: list[dict[str, Any]]

    def warnings(self) -> list[str]:
        if not self.over_cap:
            return []
        return [f"{len(self.over_cap)} finding(s) beyond segment.max_prompts_per_study were not segmented "
                f"(first: {self.over_cap[0]['finding_id']}: {self.over_cap[0]['prompt'][:80]!r}); raise the cap "
                "if the segmentation job's memory allows"]


def finding_fields(finding: dict[str, Any]) -> dict[str, Any]:
    """The C3 dict of a findings.jsonl record (``measurements``: the measured values in mm)."""
    out = {k: finding.get(k) for k in FINDING_FIELDS if k != "measurements"}
    out["concepts"] = list(finding.get("concepts") or [])
    out["uncertain"] = bool(finding.get("uncertain", False))
    measurements = finding.get("measurements")
    if measurements is None:
        measurements = [{"value_mm": float(v)} for v in finding.get("measurements_mm") or []]
    out["measurements"] = list(measurements)
    return out


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


def read_findings(path: str | os.PathLike | None) -> list[dict]:
    """A study's findings (``read_findings_jsonl``); no file means no findings (no report)."""
    return read_findings_jsonl(path, missing_ok=True) if path else []


def select_prompts(fixed: Sequence[str], findings: Iterable[dict] = (), max_prompts: int | None = MAX_PROMPTS
                   ) -> StudyPrompts:
    """Fixed prompts first, then the findings that get a mask; one entry per normalised
    prompt, at most ``max_prompts`` (None: no cap; fixed prompts always count first)."""
    out: list[StudyPrompt] = []
    over: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(item: StudyPrompt) -> None:
        key = normalize_prompt(item.prompt)
        if not key or key in seen:
            return
        if max_prompts is not None and len(out) >= max_prompts:
            over.append({"finding_id": item.finding_id, "prompt": item.prompt,
                         "reason": f"over the cap of {max_prompts} prompts per study (segment.max_prompts_per_study)"})
            return
        seen.add(key)
        out.append(item)

    for p in fixed:
        add(StudyPrompt(p, CONFIG))
    for f in findings:
        if gets_mask(f)[0]:
            add(StudyPrompt(f["prompt"], FINDING, f.get("finding_id"), finding_fields(f)))
    return StudyPrompts(out, over)


def study_prompts(fixed: Sequence[str], findings: Iterable[dict] = (), max_prompts: int | None = MAX_PROMPTS
                  ) -> list[StudyPrompt]:
    """The prompts ``select_prompts`` segments."""
    return select_prompts(fixed, findings, max_prompts).prompts


def cohort_prompts(fixed: Sequence[str], findings_files: Iterable[str | os.PathLike],
                   max_prompts: int | None = MAX_PROMPTS) -> list[str]:
    """Unique normalised prompts of the whole cohort, in first-seen order (each study's
    prompts as ``select_prompts`` chooses them, so the cap applies here too)."""
    unique: dict[str, None] = {}
    for p in fixed:
        unique.setdefault(normalize_prompt(p))
    for path in findings_files:
        for p in select_prompts(fixed, read_findings(path), max_prompts).prompts:
            unique.setdefault(normalize_prompt(p.prompt))
    unique.pop("", None)
    return list(unique)
