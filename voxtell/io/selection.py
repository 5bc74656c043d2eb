"""Choose the one image series of a study that the pipeline segments.

The policy is data (a frozen dataclass) so that a cohort's choice is recorded in its
config and reproducible: allowed modalities in order of preference, no localizers, enough
slices, then most slices, thinnest slices, ORIGINAL before DERIVED. Every candidate is
kept with the reason it was taken or passed over, and written to ``series.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
        if not self.modalities:
            raise ValueError("SelectionPolicy.modalities must name at least one modality")
        object.__setattr__(self, "modalities", tuple(m.upper() for m in self.modalities))
        if self.min_slices < 2:
            raise ValueError("SelectionPolicy.min_slices must be at least 2 (a volume)")


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
        data = asdict(self)
        for key in ("series", "geometry", "error"):
            data.pop(key)
        return data


@dataclass
class Selection:
    """The chosen series, its geometry, all candidates and the reason in words."""

    chosen: Candidate
    candidates: list[Candidate]
    reason: str


def _rank(policy: SelectionPolicy, cand: Candidate) -> tuple:
    derived = cand.series.is_derived if policy.prefer_original else False
    return (
        policy.modalities.index(cand.modality),
        derived,
        -cand.n_slices,
        cand.slice_spacing_mm if cand.slice_spacing_mm is not None else float("inf"),
        cand.series_uid,
    )


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
    reason = (
        f"{chosen.modality} (preference {list(policy.modalities)}), {chosen.n_slices} slices, "
        f"slice spacing {chosen.slice_spacing_mm} mm, image type {'/'.join(chosen.image_type[:2]) or 'unknown'}; "
        f"{len(eligible)} eligible of {len(candidates)} image series"
    )
    return Selection(chosen=chosen, candidates=candidates, reason=reason)


def _explain(policy: SelectionPolicy, chosen: Candidate, other: Candidate) -> str:
    a, b = _rank(policy, chosen), _rank(policy, other)
    labels = ("modality preference", "ORIGINAL before DERIVED", "more slices", "thinner slices", "series UID order")
    for label, x, y in zip(labels, a, b):
        if x != y:
            return label
    return "tie"
