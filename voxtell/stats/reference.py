"""Which reference mask belongs to which prompt.

``--reference`` accepts three forms, all resolved to ``prompt_id -> (file, label)``:

1. A folder of binary NIfTI masks. A file ``NAME.nii.gz`` (or ``.nii``) serves the prompt
   whose id is ``NAME`` or whose text is ``NAME`` (``prompt_id(NAME)`` matches): a folder
   of ``liver.nii.gz``, ``spleen.nii.gz`` serves the prompts "liver" and "Spleen"; the ROI
   folder ``voxtell rtstruct`` writes (file = slug of the ROI name) works the same way.
2. A JSON object: ``{"liver": "seg.nii.gz", "spleen": {"file": "seg.nii.gz", "label": 1}}``.
   Keys are prompts or prompt ids; ``label`` selects one value of a label map (else
   any nonzero voxel counts); relative paths are relative to the JSON file.
3. A TSV with a header: ``prompt`` (or ``prompt_id``), ``file``, optional ``label``.
   Relative paths are relative to the TSV file.

References must lie on the image's grid (same shape and affine).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from voxtell.prompts import prompt_id
from voxtell.stats.errors import ReferenceMapError

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ReferenceSpec:
    file: Path
    label: int | None = None


@dataclass(frozen=True)
class ReferenceMap:
    """Reference masks by key; a key is a prompt id or a prompt."""

    entries: dict[str, ReferenceSpec]

    def lookup(self, pid: str) -> ReferenceSpec | None:
        """Reference of the prompt with id ``pid``, or None."""
        if pid in self.entries:
            return self.entries[pid]
        for key, spec in self.entries.items():
            if prompt_id(key) == pid:
                return spec
        return None


def load_reference_map(path: str | Path) -> ReferenceMap:
    """Read a reference folder, JSON or TSV mapping (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        entries = {}
        for f in sorted(p.iterdir()):
            for suffix in _NIFTI_SUFFIXES:
                if f.name.endswith(suffix) and not f.name.startswith("."):
                    entries[f.name[: -len(suffix)]] = ReferenceSpec(f)
        if not entries:
            raise ReferenceMapError(f"reference folder {p} holds no .nii/.nii.gz masks")
        return ReferenceMap(entries)
    if not p.is_file():
        raise ReferenceMapError(f"reference {p} does not exist; pass a folder of masks, a .json or a .tsv mapping")
    if p.suffix.lower() == ".json":
        return ReferenceMap(_from_json(p))
    if p.suffix.lower() in (".tsv", ".txt"):
        return ReferenceMap(_from_tsv(p))
    if p.name.endswith(_NIFTI_SUFFIXES):
        raise ReferenceMapError(
            f"{p} is a single mask: put it in a folder named by prompt, or map prompts to it in a .json/.tsv"
        )
    raise ReferenceMapError(f"unknown reference format {p.name}; use a folder, .json or .tsv")


def _label(value: object, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ReferenceMapError(f"{where}: label {value!r} is not an integer") from None


def _from_json(p: Path) -> dict[str, ReferenceSpec]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceMapError(f"cannot read reference mapping {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise ReferenceMapError(f"{p}: expected a JSON object mapping prompt or prompt_id to a file")
    out = {}
    for key, value in data.items():
        if isinstance(value, str):
            out[key] = ReferenceSpec(p.parent / value)
        elif isinstance(value, dict) and isinstance(value.get("file"), str):
            out[key] = ReferenceSpec(p.parent / value["file"], _label(value.get("label"), f"{p}: {key!r}"))
        else:
            raise ReferenceMapError(f"{p}: entry {key!r} must be a file name or {{\"file\": ..., \"label\": N}}")
    return out


def _from_tsv(p: Path) -> dict[str, ReferenceSpec]:
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except OSError as exc:
        raise ReferenceMapError(f"cannot read reference mapping {p}: {exc}") from exc
    out = {}
    for n, row in enumerate(rows, start=2):
        key = row.get("prompt_id") or row.get("prompt")
        if not key or not row.get("file"):
            raise ReferenceMapError(f"{p} line {n}: needs columns 'prompt' (or 'prompt_id') and 'file'")
        out[key] = ReferenceSpec(p.parent / row["file"], _label(row.get("label"), f"{p} line {n}"))
    return out
