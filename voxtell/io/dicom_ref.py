"""What derived DICOM objects need to know about their source series (``dicom_ref.json``).

A DICOM SEG or RTSTRUCT must name the study, series, frame of reference and every source
SOP instance it was derived from. ``series.json`` keeps the identity of the chosen series
but not its instances, so when DICOM export is enabled the convert stage also writes
``dicom_ref.json`` beside it: the source's Study, Series, Frame of Reference and SOP
Class UIDs, the SOP Instance UIDs in slice order (along the slice normal, the order of the
header geometry) and that geometry (RAS affine and shape). It holds UIDs and numbers only:
no names, patient ids, accession numbers or dates.

The record pins the instances the image was made from: the export checks the source folder
it is given against it, so masks are never written onto a series that changed since.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voxtell.io.atomic import write_json_atomic
from voxtell.io.errors import DicomError

log = logging.getLogger(__name__)

DICOM_REF_NAME = "dicom_ref.json"
DICOM_REF_VERSION = 1


class DicomReferenceError(DicomError):
    """The source series of a study cannot be identified, or no longer matches its record."""


@dataclass(frozen=True)
class SourceSeries:
    """The chosen source series: its UIDs, slice-sorted files and header geometry."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[Path, ...]
    affine_ras: np.ndarray  # (column, row, slice) index -> RAS mm
    shape: tuple[int, int, int]  # columns, rows, slices

    def to_json(self) -> dict[str, Any]:
        """The ``dicom_ref.json`` record: UIDs and geometry, no file paths or identifiers."""
        return {
            "schema_version": DICOM_REF_VERSION,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "sop_class_uid": self.sop_class_uid,
            "sop_instance_uids": list(self.sop_instance_uids),
            "slice_order": "along the slice normal (header geometry), first = index 0 of affine_ras",
            "affine_ras": np.round(self.affine_ras, 6).tolist(),
            "shape": list(self.shape),
        }


def _series_uid_of(convert_dir: Path) -> str:
    path = convert_dir / "series.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        uid = str(record["series_uid"] or "")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DicomReferenceError(f"cannot read the series UID from {path} ({exc}); rerun convert for this study") from exc
    if not uid or uid.startswith("inferred:") or record.get("series_uid_inferred"):
        raise DicomReferenceError(
            f"the converted series has no SeriesInstanceUID (blank in the source headers); derived DICOM objects "
            f"cannot reference it: export the study with its UIDs"
        )
    return uid


def read_source_series(dicom_dir: str | os.PathLike, series_uid: str) -> SourceSeries:
    """Find series ``series_uid`` in ``dicom_dir`` and read its UIDs in slice order (headers only)."""
    import pydicom

    from voxtell.io.dicom_index import index_study, series_geometry

    index = index_study(dicom_dir)
    matches = [s for s in index.series if s.series_uid == series_uid]
    if not matches:
        found = ", ".join(sorted({s.series_uid or s.key for s in index.series})[:5]) or "none"
        raise DicomReferenceError(
            f"series {series_uid} is not in {dicom_dir} (image series there: {found}); pass the study's source folder"
        )
    geom = series_geometry(matches[0])
    uids: list[tuple[str, str, str, str]] = []
    for inst in geom.instances:
        ds = pydicom.dcmread(
            inst.path,
            stop_before_pixels=True,
            specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"],
        )
        uids.append(tuple(str(ds.get(k, "") or "").strip() for k in (  # type: ignore[misc]
            "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")))
    classes, sops, studies, frames = (tuple(col) for col in zip(*uids))
    for name, values in (("StudyInstanceUID", studies), ("FrameOfReferenceUID", frames), ("SOPClassUID", classes)):
        if len(set(values)) != 1 or not values[0]:
            raise DicomReferenceError(
                f"series {series_uid} has {'blank' if not values[0] else 'mixed'} {name} values; "
                "derived DICOM objects need one; export the series with complete UIDs"
            )
    if len(set(sops)) != len(sops) or not all(sops):
        raise DicomReferenceError(f"series {series_uid} has blank or repeated SOPInstanceUIDs; re-export the series")
    return SourceSeries(
        study_instance_uid=studies[0],
        series_instance_uid=series_uid,
        frame_of_reference_uid=frames[0],
        sop_class_uid=classes[0],
        sop_instance_uids=sops,
        files=tuple(i.path for i in geom.instances),
        affine_ras=geom.affine_ras,
        shape=geom.shape,
    )


def write_dicom_reference(dicom_dir: str | os.PathLike, convert_dir: str | os.PathLike) -> Path:
    """Write ``convert_dir/dicom_ref.json`` for the series that convert chose (see module docstring)."""
    out = Path(convert_dir)
    source = read_source_series(dicom_dir, _series_uid_of(out))
    path = out / DICOM_REF_NAME
    write_json_atomic(path, source.to_json())
    log.info("wrote %s (%d instances)", path, len(source.sop_instance_uids))
    return path


def load_source_for_export(dicom_dir: str | os.PathLike, convert_dir: str | os.PathLike) -> SourceSeries:
    """The source series of a converted study, checked against ``dicom_ref.json`` when it exists."""
    conv = Path(convert_dir)
    source = read_source_series(dicom_dir, _series_uid_of(conv))
    record_path = conv / DICOM_REF_NAME
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DicomReferenceError(f"cannot read {record_path} ({exc}); rerun convert with DICOM export on") from exc
        if list(record.get("sop_instance_uids") or []) != list(source.sop_instance_uids) or record.get(
            "frame_of_reference_uid"
        ) != source.frame_of_reference_uid:
            raise DicomReferenceError(
                f"the source folder {dicom_dir} no longer holds the instances recorded in {record_path} "
                "(slices added, removed or re-exported since conversion); rerun the study from convert"
            )
    else:
        log.info("%s not found: the source series is taken from %s as it is now", record_path, dicom_dir)
    return source


def reorient_to_grid(
    array: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape: Sequence[int], atol_vox: float = 1e-3
) -> np.ndarray:
    """Re-index ``array`` (on ``src_affine``) onto a grid that covers the same voxel centres.

    Only axis permutations and flips are allowed (what dcm2niix and the header geometry may
    differ by); anything else (a resampled or shifted grid) raises ``DicomReferenceError``,
    since moving a mask between such grids would change it.
    """
    src_affine = np.asarray(src_affine, float)
    m = np.linalg.inv(src_affine) @ np.asarray(dst_affine, float)  # dst index -> src index
    rot, shift = m[:3, :3], m[:3, 3]
    perm = np.argmax(np.abs(rot), axis=0)  # dst axis d reads src axis perm[d]
    signs = np.sign(rot[perm, np.arange(3)])
    expected = np.zeros((3, 3))
    expected[perm, np.arange(3)] = signs
    dst_shape = tuple(int(s) for s in dst_shape[:3])
    if sorted(perm.tolist()) != [0, 1, 2] or not np.allclose(rot, expected, atol=atol_vox):
        raise DicomReferenceError("the mask grid is rotated or scaled against the DICOM grid; it cannot be re-indexed exactly")
    if not np.allclose(shift, np.round(shift), atol=1e-2):
        raise DicomReferenceError("the mask grid is shifted by a fraction of a voxel against the DICOM grid")
    src_shape = np.asarray(array.shape[:3])
    corners = m @ np.array([[0, 0, 0, 1], [*(np.asarray(dst_shape) - 1), 1]], float).T
    lo, hi = np.round(corners[:3].min(axis=1)), np.round(corners[:3].max(axis=1))
    if np.any(lo != 0) or np.any(hi != src_shape - 1):
        raise DicomReferenceError(
            f"the mask grid {tuple(array.shape[:3])} does not cover the same voxels as the DICOM grid {dst_shape}; "
            "it cannot be re-indexed without resampling"
        )
    out = np.transpose(np.asarray(array).reshape(tuple(src_shape)), perm)
    for d in range(3):
        if signs[d] < 0:
            out = np.flip(out, axis=d)
    return np.ascontiguousarray(out)
