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

4. ``auto`` (the default for DICOM studies, contract C5): the RTSTRUCTs and SEGs inside the
   study's DICOM folder, drawn onto the image by ``voxtell.io.rt_objects``. ROI names are
   matched to prompts by ``RoiRule``s (config ``reference.roi_map``), first matching rule
   wins: ``roi`` is an exact name (case-insensitive), a glob (``GTV*``) or a regular
   expression (``re:^GTV``); the target is a ``prompt`` (text or prompt id), a
   ``prompt_regex`` over the study's prompt texts, or ``concepts``: the study's affirmed
   finding whose concepts include one of them (e.g. ``GTV*`` -> the report's tumour
   finding). An ROI no rule matches serves the prompt of the same name, as in form 1.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from voxtell.prompts import prompt_id
from voxtell.stats.errors import ReferenceMapError

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


AUTO = "auto"


@dataclass(frozen=True)
class ReferenceSpec:
    file: Path
    label: int | None = None
    name: str | None = None  # the ROI or segment it came from (auto references)


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


# ----------------------------------------------------------------------------- auto (RT objects)


@dataclass(frozen=True)
class RoiRule:
    """One ``reference.roi_map`` entry: which ROI names serve which prompt."""

    roi: str
    prompt: str | None = None
    prompt_regex: str | None = None
    concepts: tuple[str, ...] = ()

    def matches(self, roi_name: str) -> bool:
        name = roi_name.strip()
        if self.roi.startswith("re:"):
            return re.search(self.roi[3:], name, flags=re.IGNORECASE) is not None
        if any(c in self.roi for c in "*?["):
            return fnmatch.fnmatch(name.lower(), self.roi.lower())
        return name.lower() == self.roi.strip().lower()


def parse_roi_map(rules: Iterable[Mapping[str, Any]] | None) -> list[RoiRule]:
    """Check and convert the config's ``reference.roi_map`` list."""
    out = []
    for n, rule in enumerate(rules or []):
        where = f"reference.roi_map[{n}]"
        if not isinstance(rule, Mapping) or not isinstance(rule.get("roi"), str) or not rule["roi"].strip():
            raise ReferenceMapError(f"{where}: needs 'roi' (an ROI name, a glob like GTV* or re:REGEX)")
        targets = [k for k in ("prompt", "prompt_regex", "concepts") if rule.get(k)]
        if len(targets) != 1:
            raise ReferenceMapError(f"{where}: give exactly one of 'prompt', 'prompt_regex' or 'concepts' (got {targets})")
        unknown = set(rule) - {"roi", "prompt", "prompt_regex", "concepts"}
        if unknown:
            raise ReferenceMapError(f"{where}: unknown key(s) {sorted(unknown)}")
        for key in ("roi", "prompt_regex"):
            pattern = rule.get(key)
            if isinstance(pattern, str) and (key == "prompt_regex" or pattern.startswith("re:")):
                try:
                    re.compile(pattern[3:] if key == "roi" else pattern)
                except re.error as exc:
                    raise ReferenceMapError(f"{where}: {key} {pattern!r} is not a valid regular expression ({exc})") from None
        concepts = rule.get("concepts") or ()
        if isinstance(concepts, str):
            concepts = (concepts,)
        out.append(RoiRule(rule["roi"], rule.get("prompt"), rule.get("prompt_regex"), tuple(str(c) for c in concepts)))
    return out


def _affirmed(entry: Mapping[str, Any]) -> bool:
    finding = entry.get("finding") or {}
    return str(finding.get("assertion") or "present") == "present"


def _targets(rule: RoiRule | None, roi_name: str, prompts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Prompt ids (in manifest order) a rule, or the implicit same-name rule, sends an ROI to."""
    ids = [str(p.get("prompt_id") or prompt_id(str(p.get("prompt")))) for p in prompts]
    if rule is None or rule.prompt:
        key = rule.prompt if rule is not None else roi_name
        want = {key, prompt_id(key)}
        return [pid for pid, p in zip(ids, prompts) if pid in want or str(p.get("prompt") or "") == key]
    if rule.prompt_regex:
        rx = re.compile(rule.prompt_regex, flags=re.IGNORECASE)
        return [pid for pid, p in zip(ids, prompts) if rx.search(str(p.get("prompt") or ""))]
    wanted = {c.lower() for c in rule.concepts}
    return [
        pid for pid, p in zip(ids, prompts)
        if _affirmed(p) and wanted & {str(c).lower() for c in ((p.get("finding") or {}).get("concepts") or [])}
    ]


def auto_reference_map(
    masks: Sequence[tuple[str, Path]], prompts: Sequence[Mapping[str, Any]], rules: Sequence[RoiRule] = ()
) -> tuple[ReferenceMap, list[str]]:
    """Map RT masks ``(roi name, file)`` to the study's prompts (manifest entries); returns the map and warnings.

    One reference per prompt: when two ROIs claim the same prompt the first is kept and the
    other named in a warning; several prompts matching one ROI each get it, with a warning,
    because a finding rule that matches two findings cannot say which one the ROI outlines.
    """
    entries: dict[str, ReferenceSpec] = {}
    warnings: list[str] = []
    for name, file in masks:
        rule = next((r for r in rules if r.matches(name)), None)
        targets = list(dict.fromkeys(_targets(rule, name, prompts)))
        if not targets:
            if rule is not None:
                warnings.append(f"reference ROI '{name}' matches roi_map rule '{rule.roi}' but no prompt of this study")
            continue
        if len(targets) > 1 and rule is not None and rule.concepts:
            warnings.append(f"reference ROI '{name}' matches {len(targets)} findings; it serves each of them")
        for pid in targets:
            if pid in entries:
                warnings.append(f"prompt {pid} already has reference ROI '{entries[pid].name}'; ROI '{name}' ignored for it")
                continue
            entries[pid] = ReferenceSpec(Path(file), None, name)
    return ReferenceMap(entries), warnings


def auto_reference_fingerprint(dicom_dir: str | Path | None, rules: Sequence[RoiRule]) -> Any:
    """What auto references depend on: the RT objects' contents and the rules (for the done markers)."""
    from voxtell.cohort.hashing import file_sha256
    from voxtell.io.rt_objects import find_rt_objects

    if not dicom_dir:
        return None
    objects, _ = find_rt_objects(dicom_dir)
    hashes = []
    for o in objects:
        try:
            hashes.append(file_sha256(o.path))
        except OSError as exc:  # unreadable now: drawing will name it; the fingerprint just differs
            hashes.append(f"unreadable {o.path.name}: {exc.errno}")
    return {"objects": sorted(hashes), "rules": [repr(r) for r in rules]}


def prepare_auto_reference(
    dicom_dir: str | Path | None, image: str | Path, prompts: Sequence[Mapping[str, Any]], rules: Sequence[RoiRule],
    out_dir: str | Path,
) -> tuple[ReferenceMap | None, list[str]]:
    """Draw the study's RT objects onto ``image`` in ``out_dir`` and map them to ``prompts``."""
    from voxtell.io.rt_objects import draw_rt_references

    if not dicom_dir:
        return None, []
    drawn = draw_rt_references(dicom_dir, image, out_dir)
    if not drawn.masks:
        return None, drawn.warnings
    ref_map, warnings = auto_reference_map([(m.name, m.file) for m in drawn.masks], prompts, rules)
    used = {spec.name for spec in ref_map.entries.values()}
    unused = [m.name for m in drawn.masks if m.name not in used]
    if unused:
        warnings.append(f"reference ROI(s) {unused} match no prompt (add reference.roi_map rules to use them)")
    return (ref_map if ref_map.entries else None), drawn.warnings + warnings
