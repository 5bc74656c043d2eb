"""Choose the one image series of a study that the pipeline segments.

The policy is data (a frozen dataclass) so that a cohort's choice is recorded in its
config and reproducible: allowed modalities in order of preference, no localizers, enough
slices, then ORIGINAL before DERIVED, most slices, thinnest slices. Series that still tie
(two reconstructions of one scan, e.g. soft-tissue and lung kernels) are ordered by what
survives a re-export of the study: lower SeriesNumber, then earlier acquisition time, then
description; the UID comes last because anonymisers regenerate it. A tie is reported as a
warning naming both series. Every candidate is kept with the reason it was taken or
passed over, and written to ``series.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from voxtell.errors import ConfigError
from voxtell.io.dicom_index import Series, SeriesGeometry, StudyIndex, orientation_code, series_geometry
from voxtell.io.errors import DicomError, NoImageSeriesError, NoUsableSeriesError


@dataclass(frozen=True)
class SelectionPolicy:
    """How a study's series is chosen; the defaults suit CT-based radiotherapy cohorts."""

    modalities: tuple[str, ...] = ("CT", "MR", "PT")  # allowed, most preferred first
    min_slices: int = 10  # fewer means localizer, scout or single-slice capture
    exclude_localizers: bool = True  # ImageType LOCALIZER / SCOUT
    prefer_original: bool = True  # ORIGINAL before DERIVED (MPRs, MIPs, subtractions)

    def __post_init__(self) -> None:
        if not self.modalities or isinstance(self.modalities, str):
            raise ConfigError("SelectionPolicy.modalities must be a list naming at least one modality (e.g. [CT, MR])")
        object.__setattr__(self, "modalities", tuple(str(m).upper() for m in self.modalities))
        if not isinstance(self.min_slices, int) or isinstance(self.min_slices, bool) or self.min_slices < 2:
            raise ConfigError(f"SelectionPolicy.min_slices is {self.min_slices!r}; it must be an integer of at least 2")


@dataclass
class Candidate:
    """One image series as the policy saw it."""

    series_uid: str
    uid_inferred: bool
    modality: str
    description: str
    n_slices: int
    slice_spacing_mm: float | None
    orientation: str | None
    image_type: list[str]
    accepted: bool
    reason: str
    series: Series = field(repr=False)
    geometry: SeriesGeometry | None = field(default=None, repr=False)
    error: DicomError | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        skip = ("series", "geometry", "error")  # objects, not facts (and asdict would deep-copy every instance)
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass
class Selection:
    """The chosen series, its geometry, all candidates and the reason in words."""

    chosen: Candidate
    candidates: list[Candidate]
    reason: str
    warnings: list[str] = field(default_factory=list)


#: What each position of ``_rank`` means, for the reasons written to series.json.
_RANK_LABELS = (
    "modality preference", "ORIGINAL before DERIVED", "more slices", "thinner slices",
    "lower series number", "earlier acquisition time", "series description order", "series UID order",
)
_SUBSTANTIVE = 4  # the first four keys say which series is better; the rest only break ties


def _rank(policy: SelectionPolicy, cand: Candidate) -> tuple:
    derived = cand.series.is_derived if policy.prefer_original else False
    first = cand.series.first
    return (
        policy.modalities.index(cand.modality),
        derived,
        -cand.n_slices,
        cand.slice_spacing_mm if cand.slice_spacing_mm is not None else float("inf"),
        first.series_number if first.series_number is not None else float("inf"),
        _time_key(first.acquisition_time),
        cand.description,
        cand.series_uid,
    )


def _time_key(text: str) -> float:
    """HHMMSS.FFFFFF as seconds; unknown times sort last."""
    try:
        digits = text.strip()
        return int(digits[0:2]) * 3600 + int(digits[2:4] or 0) * 60 + float(digits[4:] or 0)
    except (ValueError, IndexError):
        return float("inf")


def select_series(index: StudyIndex, policy: SelectionPolicy = SelectionPolicy()) -> Selection:
    """Apply ``policy`` to the series of ``index``.

    Raises ``NoImageSeriesError`` when the study has no image series, ``NoUsableSeriesError``
    when none passes the policy, and the series' own error (missing slices, mixed
    orientations, truncated files) when the only series of an allowed modality are broken.
    """
    if not index.series:
        found = ", ".join(f"{n} {k}" for k, n in sorted(index.non_image.items())) or "no DICOM objects"
        extra = f", {index.non_dicom} non-DICOM file(s)" if index.non_dicom else ""
        raise NoImageSeriesError(f"no DICOM image series in {index.study_dir.name} (found {found}{extra})")
    candidates: list[Candidate] = []
    for series in index.series:
        cand = Candidate(
            series_uid=series.series_uid,
            uid_inferred=series.uid_inferred,
            modality=series.modality,
            description=series.first.series_description,
            n_slices=series.n_files,
            slice_spacing_mm=None,
            orientation=None,
            image_type=list(series.first.image_type),
            accepted=False,
            reason="",
            series=series,
        )
        candidates.append(cand)
        if cand.modality not in policy.modalities:
            cand.reason = f"modality {cand.modality} not in {list(policy.modalities)}"
            continue
        if policy.exclude_localizers and series.is_localizer:
            cand.reason = "localizer/scout image type"
            continue
        if series.is_multi_frame:
            try:
                series_geometry(series)  # raises MultiFrameError naming the series
            except DicomError as exc:
                cand.error = exc
                cand.reason = f"{type(exc).__name__}: {exc}"
            continue
        if series.n_files < policy.min_slices:
            cand.reason = f"{series.n_files} slice(s) < min_slices {policy.min_slices}"
            continue
        try:
            geom = series_geometry(series)
        except DicomError as exc:
            cand.error = exc
            cand.reason = f"{type(exc).__name__}: {exc}"
            continue
        cand.geometry = geom
        cand.slice_spacing_mm = round(geom.spacing[2], 4)
        cand.orientation = orientation_code(geom.affine_ras)
        cand.accepted = True
        cand.reason = "eligible"

    eligible = sorted((c for c in candidates if c.accepted), key=lambda c: _rank(policy, c))
    if not eligible:
        broken = [c for c in candidates if c.error is not None]
        if broken:
            broken.sort(key=lambda c: _rank(policy, c))
            raise broken[0].error  # type: ignore[misc]
        summary = "; ".join(f"{c.modality} {c.n_slices} slice(s): {c.reason}" for c in candidates)
        raise NoUsableSeriesError(
            f"no image series passes the selection policy ({summary}); "
            "adjust SelectionPolicy (modalities, min_slices) or export the intended series"
        )
    chosen = eligible[0]
    for other in eligible[1:]:
        other.accepted = False
        other.reason = f"eligible, ranked below the chosen series ({_explain(policy, chosen, other)})"
    chosen.reason = "chosen"
    warnings = _tie_warnings(policy, chosen, eligible[1:]) + [
        f"{c.series.label} ({c.modality}, {c.n_slices} slices) not used: {type(c.error).__name__}: {str(c.error)[:300]}"
        for c in candidates
        if c.error is not None
    ]
    reason = (
        f"{chosen.modality} (preference {list(policy.modalities)}), {chosen.n_slices} slices, "
        f"slice spacing {chosen.slice_spacing_mm} mm, image type {'/'.join(chosen.image_type[:2]) or 'unknown'}; "
        f"{len(eligible)} eligible of {len(candidates)} image series"
    )
    return Selection(chosen=chosen, candidates=candidates, reason=reason, warnings=warnings)


def _explain(policy: SelectionPolicy, chosen: Candidate, other: Candidate) -> str:
    a, b = _rank(policy, chosen), _rank(policy, other)
    for label, x, y in zip(_RANK_LABELS, a, b):
        if x != y:
            return label
    return "tie"


def _tie_warnings(policy: SelectionPolicy, chosen: Candidate, others: list[Candidate]) -> list[str]:
    """A warning naming the series that were as good as the chosen one on every substantive key."""
    key = _rank(policy, chosen)[:_SUBSTANTIVE]
    tied = [c for c in others if _rank(policy, c)[:_SUBSTANTIVE] == key]
    if not tied:
        return []
    names = ", ".join(c.series.label for c in tied[:3])
    rule = _explain(policy, chosen, tied[0])
    how = "the last resort, which a re-export may change" if rule in ("series UID order", "tie") else "a rule that survives re-export"
    return [
        f"series tie: {len(tied) + 1} {chosen.modality} series have {chosen.n_slices} slices at "
        f"{chosen.slice_spacing_mm} mm; chose {chosen.series.label} over {names} by {rule} ({how}); "
        "check that it is the intended one"
    ]
