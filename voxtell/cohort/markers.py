"""Done markers: skip a study whose inputs are unchanged and whose outputs are intact.

Shard jobs rerun whenever one of their studies changes (a new study joins the shard, a
report is edited, the model is replaced). Inside the job, each study's marker holds a
fingerprint of everything its result depends on, and the size and modification time of
every file the study produced; a study is skipped only if its fingerprint matches and each
of those files is still there, unchanged. A mask deleted or edited after a run is therefore
redone by the next run (``stale_studies`` finds such studies from the shard summary, which
repeats each marker's stamps, when the workflow is planned, so that the shard job runs at
all). The marker is written last, after the study's outputs are in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from voxtell import __version__
from voxtell.cohort.hashing import stable_hash
from voxtell.cohort.layout import MARKER, STATUS
from voxtell.io.atomic import write_json_atomic

MARKER_NAME = MARKER


def fingerprint(inputs: dict[str, Any]) -> str:
    """Stable hash of the inputs that determine a study's result."""
    return stable_hash(inputs, length=32)


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def file_stamp(path: str | os.PathLike) -> list[int] | None:
    """[size, mtime_ns] of a file, None if it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _outputs_of(marker_path: Path, outputs: Iterable[str | os.PathLike]) -> dict[str, list[int]]:
    """Output file -> stamp; files in the marker's folder are named relative to it."""
    base = marker_path.parent.resolve()
    out: dict[str, list[int]] = {}
    for p in map(Path, outputs):
        stamp = file_stamp(p)
        if stamp is None:
            raise FileNotFoundError(f"{p} does not exist; a done marker can only vouch for files that exist")
        full = p.resolve()
        out[str(full.relative_to(base)) if full.is_relative_to(base) else str(full)] = stamp
    return out


def intact(folder: str | os.PathLike, outputs: Any) -> bool:
    """True if every file of ``outputs`` (name relative to ``folder`` -> stamp) is unchanged."""
    if not isinstance(outputs, dict):
        return False
    return all(file_stamp(Path(folder) / name) == stamp for name, stamp in outputs.items())


def outputs_intact(marker_path: str | os.PathLike, marker: dict[str, Any] | None = None) -> bool:
    """True if every file the marker vouches for still has its recorded size and mtime."""
    marker_path = Path(marker_path)
    marker = marker if marker is not None else read_marker(marker_path)
    return marker is not None and intact(marker_path.parent, marker.get("outputs"))


def is_current(path: str | os.PathLike, inputs: dict[str, Any]) -> bool:
    """True if the marker at ``path`` was written for exactly these inputs."""
    marker = read_marker(path)
    return marker is not None and marker.get("fingerprint") == fingerprint(inputs)


def write_marker(path: str | os.PathLike, inputs: dict[str, Any], outputs: Iterable[str | os.PathLike] = (),
                 **extra: Any) -> dict[str, Any]:
    """Write the marker last: ``outputs`` (the study's files, its status record included)
    are stamped so that a later change to any of them makes the study run again."""
    path = Path(path)
    record = {"fingerprint": fingerprint(inputs), "pipeline_version": __version__, "inputs": inputs,
              "outputs": _outputs_of(path, outputs), **extra}
    write_json_atomic(path, record)
    return record


def can_reuse(marker: str | os.PathLike, inputs: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    """Whether a study's earlier result stands: a status record exists, the marker matches
    ``inputs`` and every file it vouches for is unchanged (a failure stays recorded until an
    input changes)."""
    if previous is None:
        return False
    data = read_marker(marker)
    return data is not None and data.get("fingerprint") == fingerprint(inputs) and outputs_intact(marker, data)


def stale_studies(summary: dict[str, Any]) -> list[str]:
    """Studies of a shard summary (``voxtell.cohort.shards``) whose results no longer match
    what their done marker vouched for (a file deleted or changed since), or that lost their
    status record: their shard must run again. Reads no marker: the summary repeats the stamps."""
    out = []
    for study, entry in (summary.get("studies") or {}).items():
        folder = entry.get("dir") if isinstance(entry, dict) else None
        if not folder:
            continue
        outputs = entry.get("outputs")
        if outputs is None:
            if not (Path(folder) / STATUS).is_file():
                out.append(study)
        elif not intact(folder, outputs):
            out.append(study)
    return out
