"""Consistency checks of every mask: the codes in ``qc_flags`` and ``needs_review``.

A cohort table is only as useful as its worst rows, so each row is checked against what
the report and the image say, and a row that fails any check gets ``needs_review = True``
and the failed checks' codes. All thresholds live in ``QCChecksConfig`` (the workflow's
``stats.qc_checks``); ``docs()`` lists them for config/README.md.

Checks of one row (``row_flags``, at the stats stage):

- ``empty_finding``: an affirmed report finding whose mask is empty.
- ``size_vs_report``: the mask's long axis or its equivalent diameter (of a ball of the
  same volume) lies outside ``[size_ratio_min, size_ratio_max]`` times the largest size the
  report gives for the finding.
- ``wrong_side``: the sentence (or a config prompt's text) says left or right, or the
  organ lies on one side (``organ_sides``), and the mask's centroid lies more than
  ``side_margin_mm`` on the other side of the patient's midline (LPS +x is the patient's
  left; the midline is the body's centre on the centroid's axial slice, not the image's).
- ``fragmented``: more than ``max_components`` connected parts, or the largest part (the
  two largest for a bilateral or paired prompt) below ``min_largest_share`` of the volume.
- ``touches_edge``: more than ``max_edge_share`` of the voxels on the in-plane border of
  the scan (not the first/last slice, which organs routinely cross); prompts listed in
  ``edge_exempt`` (the body) are not checked.
- ``outside_body``: less than ``min_body_share`` of the voxels inside the patient's body.
- ``outside_organ``: a finding that names an organ also segmented in the study (its text
  equals a study prompt, or ``organ_prompts`` maps it to one) has less than
  ``min_organ_share`` of its voxels inside that organ's mask or within
  ``organ_margin_mm`` of it (a lesion is often a hole in its organ's mask).
- ``reference_disagrees``: with a reference mask, Dice below ``min_dice``.

Check against the cohort (``cohort_flags``, at aggregate time, per prompt with at least
``min_cohort`` rows):

- ``volume_outlier``: log volume further than ``volume_mad_z`` scaled MADs and
  ``volume_min_fold`` times from the prompt's median; or an empty mask where at least
  ``present_share`` of the prompt's masks are non-empty.
- ``intensity_spread_outlier``: the standard deviation of the image values inside the
  mask more than ``spread_mad_z`` scaled MADs (of the log) and ``spread_min_fold`` times
  above the prompt's median. An organ's values vary little from patient to patient (a
  liver is 20 to 40 HU wide on CT); a mask that grew into fat, lung or bone is many times
  wider, while its volume may still look ordinary. Images of different modalities are
  never compared (the row's ``modality`` column, when present, splits the groups).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from voxtell.errors import ConfigError
from voxtell.prompts import normalize_prompt

EMPTY_FINDING = "empty_finding"
SIZE_VS_REPORT = "size_vs_report"
WRONG_SIDE = "wrong_side"
FRAGMENTED = "fragmented"
TOUCHES_EDGE = "touches_edge"
OUTSIDE_BODY = "outside_body"
OUTSIDE_ORGAN = "outside_organ"
REFERENCE_DISAGREES = "reference_disagrees"
VOLUME_OUTLIER = "volume_outlier"
SPREAD_OUTLIER = "intensity_spread_outlier"

#: Every code, in the order the QC report lists them, with what it means for a reviewer.
CODES: dict[str, str] = {
    EMPTY_FINDING: "affirmed finding, empty mask",
    SIZE_VS_REPORT: "mask size disagrees with the size in the report",
    WRONG_SIDE: "mask on the other side of the patient's midline than the text says",
    FRAGMENTED: "mask falls apart into many pieces",
    TOUCHES_EDGE: "mask runs into the edge of the scan",
    OUTSIDE_BODY: "mask lies mostly outside the patient's body",
    OUTSIDE_ORGAN: "lesion lies mostly outside the organ its sentence names",
    REFERENCE_DISAGREES: "mask disagrees with the reference mask",
    VOLUME_OUTLIER: "volume far outside the cohort's for this prompt",
    SPREAD_OUTLIER: "intensity spread far above the cohort's for this prompt (mask took in other tissue)",
}

_SIDE_WORD = re.compile(r"\b(left|right|bilateral|bilaterally|both)\b")


def _default_organ_sides() -> dict[str, str]:
    return {"liver": "right", "gallbladder": "right", "spleen": "left", "stomach": "left"}


def _default_organ_prompts() -> dict[str, list[str]]:
    lobes = {"right upper lobe": "right", "right middle lobe": "right", "right lower lobe": "right",
             "left upper lobe": "left", "left lower lobe": "left", "lingula": "left"}
    out = {lobe: [f"{side} lung", "lungs", "lung"] for lobe, side in lobes.items()}
    out.update({"hepatic": ["liver"], "renal": ["kidneys", "kidney"], "splenic": ["spleen"]})
    return out


@dataclass(frozen=True)
class QCChecksConfig:
    """Thresholds of the QC checks (see the module docstring for what each one means)."""

    size_ratio_min: float = 0.5
    size_ratio_max: float = 2.0
    side_margin_mm: float = 10.0
    max_components: int = 10
    min_largest_share: float = 0.6
    max_edge_share: float = 0.0
    edge_exempt: tuple[str, ...] = ("body", "body contour", "skin", "patient")
    min_body_share: float = 0.5
    min_organ_share: float = 0.5
    organ_margin_mm: float = 10.0
    min_dice: float = 0.5
    min_cohort: int = 5
    volume_mad_z: float = 4.0
    volume_min_fold: float = 1.5
    present_share: float = 0.8
    spread_mad_z: float = 4.0
    spread_min_fold: float = 2.0
    paired_prompts: tuple[str, ...] = ("lungs", "kidneys", "lung", "kidney", "adrenal glands", "breasts")
    organ_sides: Mapping[str, str] = field(default_factory=_default_organ_sides)
    organ_prompts: Mapping[str, Sequence[str]] = field(default_factory=_default_organ_prompts)

    def __post_init__(self) -> None:
        if not 0 < self.size_ratio_min < 1 < self.size_ratio_max:
            raise ConfigError("stats.qc_checks: need 0 < size_ratio_min < 1 < size_ratio_max (e.g. 0.5 and 2)")
        for name in ("min_largest_share", "max_edge_share", "min_body_share", "min_organ_share", "min_dice",
                     "present_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"stats.qc_checks.{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.max_components < 1 or self.min_cohort < 2:
            raise ConfigError("stats.qc_checks: max_components must be >= 1 and min_cohort >= 2")
        if min(self.volume_min_fold, self.spread_min_fold) < 1 or min(self.volume_mad_z, self.spread_mad_z) <= 0 or self.side_margin_mm < 0 or self.organ_margin_mm < 0:
            raise ConfigError("stats.qc_checks: *_min_fold >= 1, *_mad_z > 0 and side_margin_mm, organ_margin_mm >= 0")
        bad = {k: v for k, v in self.organ_sides.items() if v not in ("left", "right")}
        if bad:
            raise ConfigError(f"stats.qc_checks.organ_sides: sides must be 'left' or 'right', got {bad}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> "QCChecksConfig":
        """From the workflow's ``stats.qc_checks`` (unknown keys are an error, not ignored)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"stats.qc_checks: unknown key(s) {unknown}; known: {sorted(known)}")
        for name in ("edge_exempt", "paired_prompts"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["organ_prompts"] = {k: list(v) for k, v in self.organ_prompts.items()}
        return out


def docs() -> str:
    """Markdown list of the checks' codes and default thresholds (for config/README.md)."""
    lines = [f"- `{code}`: {text}" for code, text in CODES.items()]
    defaults = QCChecksConfig().as_dict()
    lines += ["", "Thresholds (`stats.qc_checks`, defaults):", ""]
    lines += [f"- `{k}`: `{json.dumps(v)}`" for k, v in defaults.items()]
    return "\n".join(lines)


def side_of_text(text: str | None) -> str | None:
    """'left', 'right', 'bilateral' or None from the words of a prompt."""
    sides = {m.group(1) for m in _SIDE_WORD.finditer((text or "").lower())}
    if sides & {"bilateral", "bilaterally", "both"} or {"left", "right"} <= sides:
        return "bilateral"
    return next(iter(sides), None)


def expected_side(row: Mapping[str, Any], config: QCChecksConfig) -> str | None:
    """The side the text puts the mask on: the finding's laterality, the prompt's words,
    or the organ's known side."""
    side = row.get("laterality") if row.get("source") == "finding" else None
    side = side or side_of_text(row.get("prompt"))
    if side:
        return side
    return config.organ_sides.get(normalize_prompt(row.get("prompt") or ""))


def is_affirmed(row: Mapping[str, Any]) -> bool:
    """A report finding asserted present (config prompts are not findings)."""
    if row.get("source") != "finding":
        return False
    assertion = row.get("assertion")
    return assertion in (None, "present")


def row_flags(row: Mapping[str, Any], config: QCChecksConfig = QCChecksConfig()) -> list[str]:
    """Codes of the checks one statistics row fails (see the module docstring)."""
    flags: list[str] = []
    if row.get("empty"):
        if is_affirmed(row):
            flags.append(EMPTY_FINDING)
        return flags
    reported = row.get("report_diameter_mm")
    if reported:
        lo, hi = config.size_ratio_min * reported, config.size_ratio_max * reported
        sizes = [row.get("longest_axial_diameter_mm"), row.get("equivalent_diameter_mm")]
        if any(s is not None and not lo <= s <= hi for s in sizes):
            flags.append(SIZE_VS_REPORT)
    side, offset = expected_side(row, config), row.get("midline_offset_mm")
    if offset is not None and side in ("left", "right"):
        if (side == "left" and offset < -config.side_margin_mm) or (side == "right" and offset > config.side_margin_mm):
            flags.append(WRONG_SIDE)
    volume = row.get("volume_ml") or 0.0
    parts = row.get("largest_component_ml") or 0.0
    if side == "bilateral" or normalize_prompt(row.get("prompt") or "") in config.paired_prompts:
        parts += row.get("second_component_ml") or 0.0
    if (row.get("n_components") or 0) > config.max_components or (volume > 0 and parts / volume < config.min_largest_share):
        flags.append(FRAGMENTED)
    edge = row.get("edge_fraction")
    if edge is not None and edge > config.max_edge_share and normalize_prompt(row.get("prompt") or "") not in config.edge_exempt:
        flags.append(TOUCHES_EDGE)
    body = row.get("body_fraction")
    if body is not None and body < config.min_body_share:
        flags.append(OUTSIDE_BODY)
    organ = row.get("organ_fraction")
    if organ is not None and organ < config.min_organ_share:
        flags.append(OUTSIDE_ORGAN)
    dice = row.get("dice")
    if dice is not None and dice < config.min_dice:
        flags.append(REFERENCE_DISAGREES)
    return flags


def organ_prompt_for(concepts: Iterable[str], study_prompts: Mapping[str, str], own: str,
                     config: QCChecksConfig) -> str | None:
    """The study prompt id of the organ a finding names, or None.

    ``study_prompts`` maps normalised prompt text to prompt id; the finding's own prompt is
    never its organ. A concept names an organ when its text is a study prompt or
    ``organ_prompts`` maps it to one (first match wins)."""
    for concept in concepts:
        key = normalize_prompt(concept)
        for candidate in (key, *config.organ_prompts.get(key, ())):
            pid = study_prompts.get(normalize_prompt(candidate))
            if pid is not None and pid != own:
                return pid
    return None


#: Groups up to this size compare each value with the others only (leave one out): in a
#: small cohort, the value being tested would widen the spread it is tested against.
LEAVE_ONE_OUT_MAX = 200


def _high_or_low(values: np.ndarray, mad_z: float, min_fold: float, high_only: bool = False) -> np.ndarray:
    """Which of the (positive) values lie far from the others' median, on a log scale:
    further than ``mad_z`` scaled median absolute deviations and than ``min_fold`` times."""
    logs = np.log(values)

    def limits(others: np.ndarray) -> tuple[float, float]:
        median = float(np.median(others))
        spread = 1.4826 * float(np.median(np.abs(others - median)))
        return median, max(mad_z * spread, math.log(min_fold))

    if len(logs) <= LEAVE_ONE_OUT_MAX:
        median, limit = np.array([limits(np.delete(logs, i)) for i in range(len(logs))]).T
    else:
        median, limit = limits(logs)
    delta = logs - median
    return delta > limit if high_only else np.abs(delta) > limit


def cohort_flags(rows: Sequence[Mapping[str, Any]], config: QCChecksConfig = QCChecksConfig()) -> list[list[str]]:
    """Cohort-level codes per row (``volume_outlier``, ``intensity_spread_outlier``), in
    the order of ``rows``; groups are (prompt id, modality) with ``min_cohort`` rows or more."""
    out: list[list[str]] = [[] for _ in rows]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((str(r.get("prompt_id")), str(r.get("modality") or "")), []).append(i)
    for members in groups.values():
        if len(members) < config.min_cohort:
            continue
        present = [i for i in members if not rows[i].get("empty") and (rows[i].get("volume_ml") or 0) > 0]
        if len(present) / len(members) >= config.present_share:
            for i in set(members) - set(present):
                out[i].append(VOLUME_OUTLIER)
        if len(present) < config.min_cohort:
            continue
        volumes = np.array([float(rows[i]["volume_ml"]) for i in present])
        for i, bad in zip(present, _high_or_low(volumes, config.volume_mad_z, config.volume_min_fold)):
            if bad:
                out[i].append(VOLUME_OUTLIER)
        spread = [i for i in present if (rows[i].get("intensity_std") or 0) > 0]
        if len(spread) >= config.min_cohort:
            stds = np.array([float(rows[i]["intensity_std"]) for i in spread])
            for i, bad in zip(spread, _high_or_low(stds, config.spread_mad_z, config.spread_min_fold, high_only=True)):
                if bad:
                    out[i].append(SPREAD_OUTLIER)
    return out


def merge_flags(*lists: Iterable[str]) -> list[str]:
    """Codes of several checks, each once, in ``CODES`` order (unknown codes last)."""
    seen = {c for lst in lists for c in lst}
    order = list(CODES)
    return sorted(seen, key=lambda c: (order.index(c) if c in order else len(order), c))
