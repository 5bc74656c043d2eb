"""Cohort-level orchestration that no single stage owns.

The Snakemake workflow calls these functions (through the thin scripts in ``scripts/``),
but nothing here imports Snakemake, so a plain Python loop or another scheduler can run a
cohort the same way: load and validate the samples table, assign studies to shards by a
stable hash, collect the cohort's prompts, and run each stage over a shard of studies with
per-study done markers, so that a rerun redoes only studies whose inputs, model or
prompts changed. A bad study becomes a status record; infrastructure errors propagate.

Heavy stage modules (torch, pydicom, highdicom) are imported inside the stage functions only.
"""

from __future__ import annotations

from voxtell.cohort.errors import CohortError, SamplesError
from voxtell.cohort.hashing import config_hash, file_sha256, stable_hash
from voxtell.cohort.samples import Sample, load_samples, validate_samples
from voxtell.cohort.sharding import assign_shards, shard_label, shard_of

__all__ = [
    "CohortError",
    "Sample",
    "SamplesError",
    "assign_shards",
    "config_hash",
    "file_sha256",
    "load_samples",
    "shard_label",
    "shard_of",
    "stable_hash",
    "validate_samples",
]
