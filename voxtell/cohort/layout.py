"""The results layout: every path the cohort workflow writes, in one place.

Stages, scripts, the ``voxtell status`` command and the Snakemake rules build their paths
here, never by hand, so a file name has one definition::

    results/convert/{study}/image.nii.gz, series.json, status.json, done.json
    results/convert/shards/{shard}.json                   (shard summary: the rule's output)
    results/findings/{study}/findings.jsonl, status.json, done.json
    results/findings/shards/{shard}.json
    results/embed/prompts.json                            (the cohort's prompts + bank checksum)
    results/segment/settings.json                         (run-level settings of the shard jobs)
    results/segment/{study}/{prompt_id}.nii.gz, manifest.json, status.json, done.json
    results/segment/shards/{shard}.json
    results/stats/settings.json
    results/stats/{study}/stats.parquet, qc.png, status.json, done.json
    results/stats/shards/{shard}.json
    results/cohort/stats.parquet, status.parquet, qc.html, qc/{study}.html, findings.parquet,
                   versions.json, dice.tsv, SCHEMA.md
    results/cohort/findings.parquet, qc/{study}.html      (every finding; QC page per study)
    results/stats/{study}/qc/{prompt_id}.png              (each mask's QC picture)

Per-study folders sit beside the stage's own names (``shards``, ``settings.json``, ...),
so those names can never be study ids (``RESERVED_IDS``; checked when the samples table is
read). Every per-study ``status.json`` holds one record of ``voxtell.stats.status``
(status ``ok``, ``failed`` or ``skipped``, plus ``warnings``); ``done.json`` is the done
marker of ``voxtell.cohort.markers``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Stages with one folder per study, in pipeline order.
STAGES = ("convert", "findings", "segment", "stats")
EMBED, COHORT = "embed", "cohort"

STATUS = "status.json"
MARKER = "done.json"
SHARDS = "shards"
SETTINGS = "settings.json"
IMAGE = "image.nii.gz"
SERIES = "series.json"
FINDINGS = "findings.jsonl"
MANIFEST = "manifest.json"
STATS = "stats.parquet"
QC = "qc.png"
PROMPTS = "prompts.json"

#: Files of results/cohort/ (key -> name).
COHORT_FILES = {
    "stats": "stats.parquet",
    "status": "status.parquet",
    "qc": "qc.html",
    "versions": "versions.json",
    "dice": "dice.tsv",
    "schema": "SCHEMA.md",
    "findings": "findings.parquet",  # every extracted finding, with its mask row or why none
    "qc_studies": "qc",  # one QC page per study: qc/{study}.html
}

#: Names the workflow itself uses beside the per-study folders (compared case-insensitively:
#: on a case-insensitive file system ``Shards`` is ``shards``).
RESERVED_IDS = frozenset({SHARDS, SETTINGS, PROMPTS, "settings", "prompts", EMBED, COHORT, *STAGES})


def is_reserved(study_id: str) -> bool:
    return study_id.lower() in RESERVED_IDS


@dataclass(frozen=True)
class Layout:
    """Paths under one results folder (``results`` relative to the workflow's directory).

    Methods take a study id or shard label; give ``"{study}"``/``"{shard}"`` to get the
    Snakemake pattern instead."""

    root: str = "results"

    def _join(self, *parts: str) -> str:
        return "/".join((self.root.rstrip("/"), *parts))

    # ------------------------------------------------------------------ per study
    def study_dir(self, stage: str, study: str) -> str:
        return self._join(stage, study)

    def status(self, stage: str, study: str) -> str:
        return self._join(stage, study, STATUS)

    def marker(self, stage: str, study: str) -> str:
        return self._join(stage, study, MARKER)

    def image(self, study: str) -> str:
        return self._join("convert", study, IMAGE)

    def findings(self, study: str) -> str:
        return self._join("findings", study, FINDINGS)

    def manifest(self, study: str) -> str:
        return self._join("segment", study, MANIFEST)

    def mask(self, study: str, prompt_id: str) -> str:
        return self._join("segment", study, f"{prompt_id}.nii.gz")

    def stats(self, study: str) -> str:
        return self._join("stats", study, STATS)

    def qc(self, study: str) -> str:
        return self._join("stats", study, QC)

    # ------------------------------------------------------------------ per shard / stage
    def shard_summary(self, stage: str, shard: str) -> str:
        return self._join(stage, SHARDS, f"{shard}.json")

    def settings(self, stage: str) -> str:
        return self._join(stage, SETTINGS)

    def embed_manifest(self) -> str:
        return self._join(EMBED, PROMPTS)

    # ------------------------------------------------------------------ cohort
    def cohort(self, key: str) -> str:
        return self._join(COHORT, COHORT_FILES[key])

    def cohort_dir(self) -> str:
        return self._join(COHORT)


#: The workflow's layout (paths relative to its working directory).
RESULTS = Layout()


def study_folders(results: str | os.PathLike, stage: str) -> list[str]:
    """Study ids that have a folder under ``results/{stage}`` (the stage's own names excluded)."""
    base = os.path.join(os.fspath(results), stage)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not is_reserved(n) and not n.startswith(".")
                  and os.path.isdir(os.path.join(base, n)))
