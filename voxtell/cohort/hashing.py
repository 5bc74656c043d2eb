"""Stable hashes: of configuration values and of study ids (for sharding); file checksums
come from ``voxtell.io.hashing`` (re-exported here as ``file_sha256``).

Python's ``hash()`` is salted per process, so nothing here uses it: a hash must give the
same answer on every node, in every run, for years of nightly reprocessing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from voxtell.io.hashing import file_sha256

__all__ = ["canonical_json", "config_hash", "file_sha256", "stable_hash"]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no white space: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any, length: int = 16) -> str:
    """Hex sha256 of the canonical JSON of ``value``, cut to ``length`` characters."""
    # surrogateescape: a path with undecodable bytes hashes as its bytes instead of raising
    return hashlib.sha256(canonical_json(value).encode("utf-8", "surrogateescape")).hexdigest()[:length]


def config_hash(config: Any, length: int = 16) -> str:
    """Hash of a configuration mapping; recorded in outputs to tell which settings made them."""
    return stable_hash(config, length)
