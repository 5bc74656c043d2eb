"""Rasterise RTSTRUCT contours onto a converted image grid.

Clinical contours (GTV, organs at risk) are closed planar polygons in patient LPS
millimetres. They are mapped through the inverse NIfTI affine (which is RAS, so x and y
change sign first) into voxel coordinates of ``image.nii.gz``, and every voxel whose
centre lies inside is set. All contours of one ROI on one slice are filled together by
the even-odd rule, so a contour inside another is a hole, as DICOM specifies.

Which image an RTSTRUCT may be drawn on is decided by its Frame of Reference, the
geometric contract of RT objects: same frame as the image -> drawn (a warning when the
structure set names another series of that frame, common after re-exports); another frame
-> ``FrameOfReferenceMismatchError``; no frame in the RTSTRUCT -> the series UIDs decide.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from voxtell.io.atomic import write_json_atomic
from voxtell.io.errors import RTStructError
from voxtell.io.nifti import load_nifti, save_nifti_atomic
from voxtell.prompts import slugify as _slugify

log = logging.getLogger(__name__)


class FrameOfReferenceMismatchError(RTStructError):
    """The RTSTRUCT's contours live in another Frame of Reference than the image (or cannot be placed)."""


_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
PLANE_TOLERANCE_VOX = 0.25  # how far (in voxels) a contour may sit off a slice centre


@dataclass(frozen=True)
class Contour:
    """One contour of an ROI: points in LPS mm and its DICOM geometric type."""

    points_lps: np.ndarray
    geometric_type: str


@dataclass
class Roi:
    """One ROI of a structure set."""

    number: int
    name: str
    contours: list[Contour] = field(default_factory=list)


@dataclass
class StructureSet:
    """The parts of an RTSTRUCT that rasterisation needs."""

    rois: list[Roi]
    frame_of_reference_uids: tuple[str, ...]
    referenced_series_uids: tuple[str, ...]


@dataclass(frozen=True)
class RoiMask:
    """One written ROI mask and what happened while drawing it (rows of rois.json)."""

    number: int
    name: str
    file: str
    voxel_count: int
    volume_ml: float
    n_contours: int
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


def read_rtstruct(path: str | os.PathLike) -> StructureSet:
    """Read ROI names and contours; ``RTStructError`` if the file is not a usable RTSTRUCT."""
    import pydicom

    p = Path(path)
    try:
        ds = pydicom.dcmread(p)
    except Exception as exc:
        raise RTStructError(f"cannot read RTSTRUCT {p.name}: {exc}; check the path or re-export it") from exc
    if str(ds.get("Modality", "")).upper() != "RTSTRUCT":
        raise RTStructError(f"{p.name} is a {ds.get('Modality', 'non-RT')} object, not an RTSTRUCT")
    try:
        return _structure_set(ds, p)
    except RTStructError:
        raise
    except Exception as exc:  # a malformed value (text where a number belongs, a missing number, wrong VR)
        raise RTStructError(
            f"RTSTRUCT {p.name} has a malformed value ({type(exc).__name__}: {exc}); re-export it from the planning system"
        ) from exc


def _structure_set(ds: Any, p: Path) -> StructureSet:
    names = {int(r.ROINumber): str(r.get("ROIName", f"roi_{r.ROINumber}")) for r in ds.get("StructureSetROISequence", [])}
    rois: dict[int, Roi] = {num: Roi(num, name) for num, name in names.items()}
    for rc in ds.get("ROIContourSequence", []):
        num = int(rc.ReferencedROINumber)
        roi = rois.setdefault(num, Roi(num, f"roi_{num}"))
        for item in rc.get("ContourSequence", []):
            data = np.asarray([float(v) for v in item.get("ContourData", [])], dtype=float)
            if data.size % 3:
                raise RTStructError(f"ROI '{roi.name}' has a contour with {data.size} coordinates (not x,y,z triples)")
            roi.contours.append(Contour(data.reshape(-1, 3), str(item.get("ContourGeometricType", "CLOSED_PLANAR"))))
    frames = [str(r.get("ReferencedFrameOfReferenceUID", "")) for r in ds.get("StructureSetROISequence", [])]
    series: list[str] = []
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.append(str(fr.get("FrameOfReferenceUID", "")))
        for st in fr.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                series.append(str(se.get("SeriesInstanceUID", "")))
    if not rois:
        raise RTStructError(f"RTSTRUCT {p.name} defines no ROIs")
    return StructureSet(
        list(rois.values()),
        tuple(dict.fromkeys(f.strip() for f in frames if f.strip())),
        tuple(dict.fromkeys(s.strip() for s in series if s.strip())),
    )


def match_reference(
    structure: StructureSet, image_series: str, image_frame: str, *, name: str = "RTSTRUCT", enforce: bool = True
) -> tuple[str, list[str]]:
    """Decide whether ``structure`` may be drawn on the image; returns (outcome, warnings).

    Outcomes: ``frame_match`` (same Frame of Reference), ``series_match`` (no frame in the
    RTSTRUCT, same series), ``unchecked`` (the image side has neither UID, e.g. NIfTI
    input, or ``enforce`` is False). Raises ``FrameOfReferenceMismatchError`` when the
    frames differ, the series differ without a frame to vouch for them, or the RTSTRUCT
    names neither (nothing ties its millimetres to this scan).
    """
    frames, series = structure.frame_of_reference_uids, structure.referenced_series_uids
    warnings: list[str] = []
    hint = "use the RTSTRUCT drawn on this scan's frame of reference (or --no-reference-check if you know they match)"
    problem = None
    outcome = "unchecked"
    if image_frame and frames:
        if image_frame not in frames:
            problem = f"{name} is in frame of reference {list(frames)}, but the image is in {image_frame}"
        else:
            outcome = "frame_match"
            if len(frames) > 1:
                warnings.append(f"{name} names several frames of reference {list(frames)}; contours drawn in the image's")
            if image_series and series and image_series not in series:
                warnings.append(
                    f"{name} refers to series {list(series)}, the image is series {image_series} of the same frame "
                    "of reference; contours drawn by frame of reference"
                )
    elif image_series and series:
        if image_series in series:
            outcome = "series_match"
        else:
            problem = f"{name} refers to series {list(series)}, but the image is series {image_series}"
    elif image_frame or image_series:
        if not frames and not series:
            problem = f"{name} names neither a frame of reference nor a series, so it cannot be tied to this image"
        else:  # the image has a frame but the RTSTRUCT only series, or the other way round
            problem = (
                f"{name} names frame(s) {list(frames)} / series {list(series)}; the image is frame "
                f"{image_frame or 'unknown'}, series {image_series or 'unknown'}: nothing in common to check"
            )
    else:
        warnings.append(f"the image has no DICOM identity (NIfTI input?); {name} drawn without a reference check")
    if problem:
        if enforce:
            raise FrameOfReferenceMismatchError(f"{problem}; {hint}")
        warnings.append(f"{problem}; drawn anyway because the reference check is off")
        outcome = "unchecked"
    return outcome, warnings


def slugify(name: str) -> str:
    """File-system-safe lower-case slug of an ROI name ('GTV 1+2' -> 'gtv_1_2')."""
    return _slugify(name, sep="_", max_len=64)


def rasterise_contours(
    contours_lps: Iterable[np.ndarray], affine: np.ndarray, shape: Sequence[int]
) -> tuple[np.ndarray, list[str]]:
    """Fill closed planar contours (LPS mm) on the grid (``affine`` RAS, ``shape``); even-odd rule.

    Returns the boolean mask and warnings about contours that are off the grid or not in
    an image plane (those are skipped, never guessed).
    """
    shape3 = tuple(int(s) for s in shape[:3])
    inv = np.linalg.inv(np.asarray(affine, dtype=float))
    mask = np.zeros(shape3, dtype=bool)
    warnings: list[str] = []
    by_plane: dict[tuple[int, int], list[np.ndarray]] = defaultdict(list)
    for n, pts in enumerate(contours_lps):
        pts = np.asarray(pts, dtype=float).reshape(-1, 3)
        if not np.isfinite(pts).all():
            warnings.append(f"contour {n} has non-finite coordinates (NaN or infinity); skipped")
            continue
        if len(pts) < 3:
            warnings.append(f"contour {n}: {len(pts)} point(s), not a polygon; skipped")
            continue
        ras = pts * _LPS_TO_RAS
        vox = (inv[:3, :3] @ ras.T).T + inv[:3, 3]
        spread = np.ptp(vox, axis=0)
        axis = int(np.argmin(spread))
        if spread[axis] > 2 * PLANE_TOLERANCE_VOX:
            warnings.append(f"contour {n} is not parallel to an image plane (spread {spread[axis]:.2f} voxels); skipped")
            continue
        level = float(np.mean(vox[:, axis]))
        k = int(np.round(level))
        if abs(level - k) > PLANE_TOLERANCE_VOX:
            warnings.append(f"contour {n} lies {abs(level - k):.2f} voxels off the nearest slice; drawn on slice {k}")
        if not 0 <= k < shape3[axis]:
            warnings.append(f"contour {n} lies outside the image (slice {k} on axis {axis}); skipped")
            continue
        in_plane = [a for a in range(3) if a != axis]
        outside = [
            a for a in in_plane if vox[:, a].min() < -0.5 - 1e-6 or vox[:, a].max() > shape3[a] - 0.5 + 1e-6
        ]
        if outside:
            warnings.append(f"contour {n} on slice {k} extends outside the image (axis {outside}); clipped at the border")
        by_plane[(axis, k)].append(vox[:, in_plane])
    for (axis, k), polys in by_plane.items():
        in_plane = [a for a in range(3) if a != axis]
        plane = _fill_even_odd(polys, (shape3[in_plane[0]], shape3[in_plane[1]]))
        index: list[Any] = [slice(None)] * 3
        index[axis] = k
        mask[tuple(index)] ^= plane
    return mask, warnings


def _fill_even_odd(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Scanline fill: a voxel centre (u, v) is inside when a ray crosses the edges an odd number of times."""
    edges = []
    for poly in polygons:
        nxt = np.roll(poly, -1, axis=0)
        edges.append(np.concatenate([poly, nxt], axis=1))  # u0, v0, u1, v1
    e = np.concatenate(edges, axis=0)
    e = e[e[:, 1] != e[:, 3]]  # edges parallel to the scanline never cross it
    out = np.zeros(shape, dtype=bool)
    if not len(e):
        return out
    nu, nv = shape
    v_lo = max(int(np.ceil(min(e[:, 1].min(), e[:, 3].min()))), 0)
    v_hi = min(int(np.floor(max(e[:, 1].max(), e[:, 3].max()))), nv - 1)
    u_idx = np.arange(nu)
    for v in range(v_lo, v_hi + 1):
        # half-open rule: an edge counts when v is in [min(v0, v1), max(v0, v1))
        crosses = (np.minimum(e[:, 1], e[:, 3]) <= v) & (v < np.maximum(e[:, 1], e[:, 3]))
        if not crosses.any():
            continue
        c = e[crosses]
        u = c[:, 0] + (v - c[:, 1]) * (c[:, 2] - c[:, 0]) / (c[:, 3] - c[:, 1])
        u.sort()
        count = np.searchsorted(u, u_idx, side="right")  # crossings at or left of each centre
        out[:, v] = (count % 2) == 1
    return out


def rasterise_rtstruct(
    rtstruct_path: str | os.PathLike,
    image_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    series_json: str | os.PathLike | None = None,
    check_reference: bool = True,
) -> list[RoiMask]:
    """Write one uint8 NIfTI per ROI (named by its slug) on the grid of ``image_path`` + rois.json.

    The image's ``series.json`` (default: beside the image) gives its Frame of Reference
    and series UIDs; ``match_reference`` decides (another frame of reference raises
    ``FrameOfReferenceMismatchError`` unless ``check_reference`` is False: contours of
    another scan would land on wrong voxels). Reference warnings go into every ROI's
    warnings and ``rois.json``.
    """
    import json

    import nibabel as nib

    structure = read_rtstruct(rtstruct_path)
    img = load_nifti(image_path)
    shape = img.shape[:3]
    affine = img.affine
    sj = Path(series_json) if series_json else Path(image_path).parent / "series.json"
    image_series = image_frame = ""
    if sj.is_file():
        try:
            record = json.loads(sj.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RTStructError(f"cannot read {sj} ({exc}); rerun convert for this study or pass series_json") from exc
        if isinstance(record, dict):
            image_series = str(record.get("series_uid") or "").strip()
            image_frame = str(record.get("frame_of_reference_uid") or "").strip()
    reference, ref_warnings = match_reference(
        structure, image_series, image_frame, name=f"RTSTRUCT {Path(rtstruct_path).name}", enforce=check_reference
    )
    for w in ref_warnings:
        log.warning("%s", w)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    results: list[RoiMask] = []
    used: set[str] = set()
    for roi in structure.rois:
        warnings: list[str] = list(ref_warnings)
        closed = [c.points_lps for c in roi.contours if c.geometric_type.upper() == "CLOSED_PLANAR"]
        skipped = len(roi.contours) - len(closed)
        if skipped:
            warnings.append(f"{skipped} non-closed contour(s) (POINT/OPEN_PLANAR) ignored")
        mask, draw_warnings = rasterise_contours(closed, affine, shape)
        warnings += draw_warnings
        if not roi.contours:
            warnings.append("ROI has no contours; the mask is empty")
        base = slugify(roi.name) or f"roi_{roi.number}"
        slug, n = base, 1
        while slug in used:  # two ROIs must never share (and overwrite) one file
            slug = f"{base}_{roi.number}" if n == 1 else f"{base}_{roi.number}_{n}"
            n += 1
        used.add(slug)
        name = f"{slug}.nii.gz"
        mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
        mask_img.header.set_qform(affine, int(img.header["qform_code"]) or 1)
        mask_img.header.set_sform(affine, int(img.header["sform_code"]) or 1)
        save_nifti_atomic(mask_img, out / name)
        count = int(mask.sum())
        results.append(RoiMask(roi.number, roi.name, name, count, round(count * voxel_ml, 4), len(roi.contours), tuple(warnings)))
        for w in warnings[len(ref_warnings):]:
            log.warning("ROI '%s': %s", roi.name, w)
    write_json_atomic(
        out / "rois.json",
        {
            "image": Path(image_path).name,
            "image_series_uid": image_series,
            "image_frame_of_reference_uid": image_frame,
            "referenced_series_uids": list(structure.referenced_series_uids),
            "frame_of_reference_uids": list(structure.frame_of_reference_uids),
            "reference_check": reference,
            "warnings": ref_warnings,
            "rois": [r.to_json() for r in results],
        },
    )
    return results
