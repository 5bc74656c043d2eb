"""Done markers: skip a study whose inputs, model, prompts and settings are unchanged.

Shard jobs rerun whenever one of their studies changes (a new study joins the shard, a
report is edited, the model is replaced). Inside the job, each study's marker holds a
fingerprint of everything its result depends on; a study whose fingerprint matches is
skipped, so a rerun costs only the studies that changed, and an interrupted job resumes
where it stopped. The marker is written last, after the study's outputs are in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from voxtell import __version__
from voxtell.cohort.hashing import stable_hash
from voxtell.io.atomic import write_json_atomic

MARKER_NAME = "done.json"


def fingerprint(inputs: dict[str, Any]) -> str:
    """Stable hash of the inputs that determine a study's result."""
    return stable_hash(inputs, length=32)


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(path: str | os.PathLike, inputs: dict[str, Any]) -> bool:
    """True if the marker at ``path`` was written for exactly these inputs."""
    marker = read_marker(path)
    return marker is not None and marker.get("fingerprint") == fingerprint(inputs)


def write_marker(path: str | os.PathLike, inputs: dict[str, Any], **extra: Any) -> None:
    write_json_atomic(
        path,
        {"fingerprint": fingerprint(inputs), "pipeline_version": __version__, "inputs": inputs, **extra},
    )


def can_reuse(marker: str | os.PathLike, inputs: dict[str, Any], previous: dict[str, Any] | None,
              output: str | os.PathLike) -> bool:
    """Whether a study's earlier result stands: its marker matches ``inputs`` and either it
    failed (the failure stays recorded until an input changes) or its output still exists."""
    if previous is None or not is_current(marker, inputs):
        return False
    return previous.get("status") != "ok" or Path(output).is_file()
