"""Send a study's masks back to DICOM: one SEG and one RTSTRUCT in the source's geometry.

Radiotherapy and PACS viewers read masks as DICOM, referenced to the images they were made
on. Per study this writes

* ``seg.dcm``: a binary DICOM Segmentation (highdicom), one segment per prompt: label =
  prompt id, description = prompt text, algorithm = model id (name) and sha256 (version);
* ``rtstruct.dcm``: an RT Structure Set, one ROI per prompt, closed planar contours along
  the voxel borders of every slice (each component and each hole its own contour, filled
  by the even-odd rule), each contour naming its source slice;
* ``export.json``: what was written and the UIDs it references.

Both objects reference the source series' SOP instances and share its Study and Frame of
Reference UIDs; patient and study attributes are copied from the source (the objects
belong to that patient's study). Masks are re-indexed (never resampled) from the NIfTI
grid onto the header geometry of the source series, which is checked against
``dicom_ref.json`` when convert recorded it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from voxtell.io.atomic import atomic_path, write_json_atomic
from voxtell.io.contours import mask_to_polygons
from voxtell.io.dicom_ref import DicomReferenceError, SourceSeries, load_source_for_export, reorient_to_grid
from voxtell.io.errors import DicomError
from voxtell.io.rtstruct_write import RTSTRUCT_SOP_CLASS, RoiContours, add_structure_set

log = logging.getLogger(__name__)

SEG_NAME = "seg.dcm"
RTSTRUCT_NAME = "rtstruct.dcm"
EXPORT_JSON = "export.json"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
)
_COLOURS = ((255, 0, 0), (0, 200, 0), (0, 100, 255), (255, 200, 0), (200, 0, 255), (0, 220, 220), (255, 120, 0))


class DicomExportError(DicomError):
    """A study's masks cannot be exported as DICOM (no masks, no source series, odd grid)."""


@dataclass(frozen=True)
class ExportMask:
    """One prompt's mask on the source grid (columns, rows, slices) and its labels."""

    prompt_id: str
    prompt: str
    source: str | None
    mask: np.ndarray


@dataclass(frozen=True)
class ExportResult:
    seg_path: Path
    rtstruct_path: Path
    n_segments: int
    n_contours: int
    referenced_sop_instance_uids: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        data["seg_path"], data["rtstruct_path"] = self.seg_path.name, self.rtstruct_path.name
        data["referenced_sop_instance_uids"] = list(self.referenced_sop_instance_uids)
        return data


def _lo(text: str, limit: int = 64) -> str:
    """A DICOM LO value: one line, at most ``limit`` characters, no backslash."""
    clean = " ".join(str(text).replace("\\", "/").split())
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def load_masks(mask_dir: str | os.PathLike, source: SourceSeries) -> tuple[list[ExportMask], dict[str, Any]]:
    """The study's masks (from its manifest) re-indexed onto the source series' grid."""
    import nibabel as nib

    from voxtell.stats.study import read_manifest

    manifest = read_manifest(mask_dir)
    masks: list[ExportMask] = []
    seen: set[str] = set()
    for entry in manifest["prompts"]:
        pid = str(entry.get("prompt_id"))
        if pid in seen:
            continue
        seen.add(pid)
        path = Path(mask_dir) / (entry.get("file") or f"{pid}.nii.gz")
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
        except Exception as exc:  # nibabel raises many types on a damaged file
            raise DicomExportError(f"cannot read mask {path} ({exc}); rerun segmentation for this study") from exc
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        values = np.unique(data)
        if data.ndim != 3 or not np.isin(values, (0, 1)).all():
            raise DicomExportError(f"mask {path.name} is not a binary 3-D volume (values {values[:5]}); cannot export it")
        try:
            on_grid = reorient_to_grid(data.astype(bool), img.affine, source.affine_ras, source.shape)
        except DicomReferenceError as exc:
            raise DicomExportError(f"mask {path.name}: {exc}; the study was converted to a resampled grid") from exc
        masks.append(ExportMask(pid, str(entry.get("prompt") or pid), entry.get("source"), on_grid))
    if not masks:
        raise DicomExportError(f"{mask_dir} lists no masks to export")
    return masks, manifest


def _blank_invalid(ds: Any) -> list[str]:
    """Empty the copied patient/study attributes whose source value breaks its VR (e.g. a
    17-character Study ID): a derived object must be valid even when its source is not."""
    from pydicom.valuerep import validate_value

    fixed = []
    for key in _PATIENT_STUDY:
        if key == "StudyInstanceUID" or key not in ds or ds[key].value in (None, ""):
            continue
        elem = ds[key]
        try:
            validate_value(elem.VR, elem.value, validation_mode=2)  # 2 = raise
        except (ValueError, TypeError):
            ds[key].value = ""
            fixed.append(key)
    return fixed


def _read_datasets(files: Sequence[Path]) -> list[Any]:
    import pydicom

    return [pydicom.dcmread(f) for f in files]


def write_seg(
    path: str | os.PathLike, source: SourceSeries, datasets: Sequence[Any], masks: Sequence[ExportMask], model: dict
) -> Path:
    """Binary DICOM SEG, one segment per mask, frames in the source slice order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from voxtell import __version__

    model_id = _lo(str(model.get("model_id") or "voxtell"))
    sha = str(model.get("sha256") or "unknown")[:64]
    algorithm = hd.AlgorithmIdentificationSequence(name=model_id, family=codes.cid7162.ArtificialIntelligence, version=sha)
    descriptions = []
    for n, m in enumerate(masks, start=1):
        finding = m.source == "finding"
        desc = hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=_lo(m.prompt_id),
            segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
            if finding else hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
            segmented_property_type=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
            if finding else hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        desc.SegmentDescription = _lo(m.prompt)
        descriptions.append(desc)
    # (frames, rows, columns, segments): frame k is slice k, row j / column i of the source grid
    pixels = np.stack([np.transpose(m.mask, (2, 1, 0)) for m in masks], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="VoxTell pipeline",
        manufacturer_model_name=model_id,
        software_versions=_lo(f"voxtell {__version__}"),
        device_serial_number="none",
        series_description="VoxTell masks",
        content_label="VOXTELL",
        content_description=_lo(f"VoxTell segmentation, model {model_id}"),
        omit_empty_frames=bool(pixels.any()),
    )
    seg.SpecificCharacterSet = "ISO_IR 192"
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return Path(path)


def write_rtstruct_export(
    path: str | os.PathLike, source: SourceSeries, first: Any, masks: Sequence[ExportMask], model: dict
) -> tuple[Path, int]:
    """RT Structure Set with one ROI per mask; returns the path and the number of contours."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from voxtell import __version__
    from voxtell.io.dicom_write import _ds_number

    now = dt.datetime.now()
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for key in _PATIENT_STUDY:
        setattr(ds, key, first.get(key, ""))
    ds.StudyInstanceUID = source.study_instance_uid
    ds.FrameOfReferenceUID = source.frame_of_reference_uid
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 902
    ds.SeriesDescription = "VoxTell masks"
    ds.OperatorsName = ""
    ds.Manufacturer = "VoxTell pipeline"
    ds.ManufacturerModelName = _lo(str(model.get("model_id") or "voxtell"))
    ds.SoftwareVersions = _lo(f"voxtell {__version__}")
    ds.StructureSetLabel = "VOXTELL"
    ds.StructureSetName = "VoxTell masks"
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.InstanceNumber = 1

    lps = _LPS @ source.affine_ras
    rois = []
    for number, m in enumerate(masks, start=1):
        contours = []
        for k in range(m.mask.shape[2]):
            for poly in mask_to_polygons(m.mask[:, :, k]):
                index = np.c_[poly, np.full(len(poly), k), np.ones(len(poly))]
                contours.append(((lps @ index.T).T[:, :3], source.sop_instance_uids[k]))
        rois.append(RoiContours(
            name=_lo(m.prompt_id), contours=contours, description=" ".join(m.prompt.split())[:1024],
            algorithm_description=_lo(f"VoxTell {model.get('model_id') or ''}"),
            colour=_COLOURS[(number - 1) % len(_COLOURS)],
        ))
    n_contours = add_structure_set(
        ds, frame_uid=source.frame_of_reference_uid, study_uid=source.study_instance_uid,
        series_uid=source.series_instance_uid, sop_class=source.sop_class_uid, sop_uids=source.sop_instance_uids,
        rois=rois, number_format=lambda v: _ds_number(round(v, 6)),
    )
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path), n_contours


def export_study(
    mask_dir: str | os.PathLike, dicom_dir: str | os.PathLike, out_dir: str | os.PathLike,
    *, convert_dir: str | os.PathLike | None = None,
) -> ExportResult:
    """Write ``seg.dcm``, ``rtstruct.dcm`` and ``export.json`` for one segmented study.

    ``mask_dir`` is the study's segment folder (masks + ``manifest.json``); the converted
    image's folder (``series.json``, ``dicom_ref.json``) is taken from the manifest's image
    path unless ``convert_dir`` is given; ``dicom_dir`` is the study's DICOM source.
    """
    from voxtell.stats.study import read_manifest

    if convert_dir is None:
        image = read_manifest(mask_dir).get("image")
        if not image:
            raise DicomExportError(f"{mask_dir}/manifest.json names no image; pass the convert folder explicitly")
        convert_dir = Path(image).parent
    try:
        source = load_source_for_export(dicom_dir, convert_dir)
    except DicomReferenceError as exc:
        raise DicomExportError(str(exc)) from exc
    masks, manifest = load_masks(mask_dir, source)
    datasets = _read_datasets(source.files)
    blanked = sorted({key for d in datasets for key in _blank_invalid(d)})
    warnings = [f"source {key} is invalid for its value representation; written empty" for key in blanked]
    for w in warnings:
        log.warning("%s", w)
    model = manifest.get("model") or {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg_path = write_seg(out / SEG_NAME, source, datasets, masks, model)
    rs_path, n_contours = write_rtstruct_export(out / RTSTRUCT_NAME, source, datasets[0], masks, model)
    result = ExportResult(seg_path, rs_path, len(masks), n_contours, source.sop_instance_uids, tuple(warnings))
    record = result.to_json() | {
        "study_instance_uid": source.study_instance_uid,
        "series_instance_uid": source.series_instance_uid,
        "frame_of_reference_uid": source.frame_of_reference_uid,
        "segments": [{"number": n, "prompt_id": m.prompt_id, "voxels": int(m.mask.sum())} for n, m in enumerate(masks, 1)],
    }
    write_json_atomic(out / EXPORT_JSON, record)
    log.info("exported %d masks of %s as DICOM SEG and RTSTRUCT (%d contours)", len(masks), mask_dir, n_contours)
    return result


def read_export_json(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``export.json`` an export wrote (for tests and the workflow's summary)."""
    return json.loads((Path(out_dir) / EXPORT_JSON).read_text(encoding="utf-8"))
