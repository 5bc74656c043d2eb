"""Assign studies to shards by a stable hash of the study id.

A shard is the unit of one GPU job (the model is loaded once per shard). Membership
depends only on the study id and the number of shards, never on the other studies in the
table, so a nightly run that adds studies leaves every finished shard's membership as it
was: only the shards that receive a new study have new inputs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable

from voxtell.errors import ConfigError


def shard_of(study_id: str, n_shards: int) -> int:
    """Shard index in ``[0, n_shards)``: first 8 bytes of sha256(study id) modulo ``n_shards``."""
    if n_shards < 1:
        raise ConfigError(f"n_shards must be >= 1, got {n_shards}")
    digest = hashlib.sha256(study_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n_shards


def shard_label(index: int, n_shards: int) -> str:
    """Zero-padded shard name (``007`` of 100), so that file listings sort naturally."""
    width = max(3, len(str(n_shards - 1)))
    return f"{index:0{width}d}"


def assign_shards(study_ids: Iterable[str], n_shards: int) -> dict[str, list[str]]:
    """Map shard label -> study ids (in input order); empty shards are left out."""
    shards: dict[str, list[str]] = defaultdict(list)
    for study_id in study_ids:
        shards[shard_label(shard_of(study_id, n_shards), n_shards)].append(study_id)
    return dict(sorted(shards.items()))
