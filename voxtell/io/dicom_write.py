"""Write synthetic DICOM image series and RTSTRUCTs from numpy arrays.

Tests, phantoms and the demo need real DICOM studies without real patients. The writer
takes a volume in nibabel's convention (array index (i, j, k), RAS affine), so a phantom
built for the NIfTI side can be written as DICOM and read back through the same pipeline
that clinical data takes. Patient-like dummy tags (``FAKE_PATIENT``) are filled in on
purpose: tests prove that none of them reaches any output.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from voxtell.io.rtstruct_write import RTSTRUCT_SOP_CLASS  # noqa: F401  (re-exported for tests and callers)

if TYPE_CHECKING:
    from pydicom import Dataset

#: Dummy identifiers written into every synthetic file; none may ever appear in an output.
FAKE_PATIENT: dict[str, str] = {
    "PatientName": "Fakename^Jane^Q",
    "PatientID": "FAKEPID-90210",
    "PatientBirthDate": "19410203",
    "AccessionNumber": "FAKEACC-4711",
    "InstitutionName": "Fake General Hospital",
    "ReferringPhysicianName": "Fakedoc^Hans",
    "OtherPatientIDs": "FAKEOTHER-1234",
}

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)

_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
BASIC_TEXT_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"


@dataclass(frozen=True)
class PetDose:
    """Radiopharmaceutical facts for synthetic PET (F-18 FDG defaults)."""

    injected_dose_bq: float = 350e6
    half_life_s: float = 6586.2
    injection_time: str = "100000.00"  # HHMMSS.FF, the same day as the acquisition
    patient_weight_kg: float = 75.0
    decay_correction: str = "START"
    units: str = "BQML"


@dataclass(frozen=True)
class WrittenSeries:
    """What ``write_dicom_series`` wrote: paths and UIDs, slice order as in ``volume[..., k]``."""

    files: tuple[Path, ...]
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: tuple[str, ...]
    modality: str
    affine_ras: np.ndarray = field(repr=False)


def affine_from_spacing(spacing: Sequence[float], origin_lps: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS affine of a plain axial DICOM series (rows run anterior->posterior, columns right->left)."""
    sx, sy, sz = (float(v) for v in spacing)
    lps = np.eye(4)
    lps[:3, :3] = np.diag([sx, sy, sz])
    lps[:3, 3] = origin_lps
    return _LPS @ lps


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def _new_instance(sop_class: str, charset: str | None = "ISO_IR 100") -> "Dataset":
    """A dataset with its file meta and a fresh SOP instance UID (explicit VR little endian)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop_uid = _new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def _ds_number(value: float) -> str:
    """DICOM DS (max 16 chars) with as many digits as fit."""
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot encode {value} as DS")


def write_dicom_series(
    volume: np.ndarray,
    affine_or_spacing: np.ndarray | Sequence[float],
    out_dir: str | os.PathLike,
    modality: str = "CT",
    *,
    rescale_slope: float = 1.0,
    rescale_intercept: float | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "Synthetic series",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    instance_numbers: Sequence[int] | None = None,
    acquisition_time: str = "120000.000000",
    pet: PetDose | None = None,
    tags: Mapping[str, Any] | None = None,
    file_prefix: str = "IM",
    patient: Mapping[str, str] | None = None,
) -> WrittenSeries:
    """Write ``volume`` (i, j, k) as one single-frame DICOM file per slice ``k``.

    ``affine_or_spacing`` is a 4x4 RAS affine (nibabel convention; any orientation, even a
    sheared one for gantry-tilt tests) or three voxel sizes in mm for a plain axial series.
    Stored values are ``round((volume - intercept) / slope)`` as int16, so the values read
    back after rescale equal ``volume`` when it is representable. The intercept defaults
    to -1024 for CT and 0 otherwise. ``tags`` overrides or adds any attribute by keyword
    on every slice. Returns paths and UIDs in slice order.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (i, j, k), got shape {volume.shape}")
    affine = np.asarray(affine_or_spacing, dtype=float)
    if affine.shape != (4, 4):
        affine = affine_from_spacing(affine)
    lps = _LPS @ affine
    col_step, row_step = lps[:3, 0], lps[:3, 1]  # moving along i = next column; along j = next row
    col_spacing, row_spacing = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    iop = np.concatenate([col_step / col_spacing, row_step / row_spacing])
    if rescale_intercept is None:
        rescale_intercept = -1024.0 if modality == "CT" else 0.0
    stored = np.rint((volume.astype(np.float64) - rescale_intercept) / rescale_slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("volume does not fit int16 after rescale; choose rescale_slope/intercept")
    stored = stored.astype(np.int16)

    n_slices = volume.shape[2]
    study_uid = study_uid or _new_uid()
    series_uid = series_uid if series_uid is not None else _new_uid()
    frame_uid = frame_of_reference_uid or _new_uid()
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, n_slices + 1))
    sop_class = _SOP_CLASS.get(modality, "1.2.840.10008.5.1.4.1.1.7")
    ident = dict(FAKE_PATIENT)
    ident.update(patient or {})
    today = _dt.date(2024, 1, 15).strftime("%Y%m%d")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    sops: list[str] = []
    for k in range(n_slices):
        ds = _new_instance(sop_class)
        sop_uid = ds.SOPInstanceUID
        ds.ImageType = list(image_type)
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = today
        ds.StudyTime = "115500.000000"
        ds.SeriesTime = acquisition_time
        ds.AcquisitionTime = ds.ContentTime = acquisition_time
        ds.Modality = modality
        ds.Manufacturer = "VoxTell synthetic"
        for key, value in ident.items():
            setattr(ds, key, value)
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = int(numbers[k])
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientPosition = "HFS"
        position = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]
        ds.ImagePositionPatient = [_ds_number(v) for v in position]
        ds.ImageOrientationPatient = [_ds_number(v) for v in iop]
        ds.PixelSpacing = [_ds_number(row_spacing), _ds_number(col_spacing)]
        slice_step = np.linalg.norm(lps[:3, 2])
        ds.SliceThickness = _ds_number(slice_step)
        ds.SliceLocation = _ds_number(float(position @ np.cross(iop[:3], iop[3:])))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = _ds_number(rescale_intercept)
        ds.RescaleSlope = _ds_number(rescale_slope)
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = "120"
        if pet is not None:
            _add_pet(ds, pet)
        for key, value in (tags or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = out / f"{file_prefix}{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        sops.append(sop_uid)
    return WrittenSeries(tuple(files), study_uid, series_uid, frame_uid, tuple(sops), modality, affine)


def _add_pet(ds: Any, pet: PetDose) -> None:
    import pydicom

    ds.Units = pet.units
    ds.DecayCorrection = pet.decay_correction
    ds.CorrectedImage = ["ATTN", "DECY"]
    ds.PatientWeight = _ds_number(pet.patient_weight_kg)
    item = pydicom.Dataset()
    item.Radiopharmaceutical = "Fluorodeoxyglucose"
    item.RadiopharmaceuticalStartTime = pet.injection_time
    item.RadionuclideTotalDose = _ds_number(pet.injected_dose_bq)
    item.RadionuclideHalfLife = _ds_number(pet.half_life_s)
    ds.RadiopharmaceuticalInformationSequence = pydicom.Sequence([item])


def write_rtstruct(
    path: str | os.PathLike,
    series: WrittenSeries,
    rois: Mapping[str, Sequence[np.ndarray]],
    *,
    patient: Mapping[str, str] | None = None,
) -> Path:
    """Write an RTSTRUCT whose ROIs are lists of closed planar contours (N x 3, LPS mm).

    Each contour must lie in one slice plane of ``series``; the contour references the
    nearest slice's SOP Instance UID, as treatment planning systems do.
    """
    from voxtell.io.rtstruct_write import RoiContours, add_structure_set

    lps = _LPS @ series.affine_ras
    inv = np.linalg.inv(lps)
    ds = _new_instance(RTSTRUCT_SOP_CLASS)
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = _new_uid()
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.StructureSetLabel = "Synthetic"
    ds.StructureSetDate = "20240115"
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ident = dict(FAKE_PATIENT)
    ident.update(patient or {})
    for key, value in ident.items():
        setattr(ds, key, value)

    roi_list = []
    for name, contours in rois.items():
        placed = []
        for points in contours:
            pts = np.asarray(points, dtype=float).reshape(-1, 3)
            k = int(round(float(np.mean((inv @ np.c_[pts, np.ones(len(pts))].T)[2]))))
            k = min(max(k, 0), len(series.sop_instance_uids) - 1)  # the nearest slice, as planning systems do
            placed.append((pts, series.sop_instance_uids[k]))
        roi_list.append(RoiContours(name, placed, algorithm="MANUAL", interpreted_type="ORGAN"))
    add_structure_set(
        ds, frame_uid=series.frame_of_reference_uid, study_uid=series.study_uid, series_uid=series.series_uid,
        sop_class=_SOP_CLASS.get(series.modality, "1.2.840.10008.5.1.4.1.1.7"), sop_uids=series.sop_instance_uids,
        rois=roi_list, number_format=_ds_number,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def write_text_sr(path: str | os.PathLike, text: str, study_uid: str | None = None) -> Path:
    """Write a minimal Basic Text SR (a dose report stand-in) that the indexer must skip."""
    import pydicom

    ds = _new_instance(BASIC_TEXT_SR_SOP_CLASS, charset=None)
    ds.Modality = "SR"
    ds.StudyInstanceUID = study_uid or _new_uid()
    ds.SeriesInstanceUID = _new_uid()
    for key, value in FAKE_PATIENT.items():
        setattr(ds, key, value)
    ds.ValueType = "CONTAINER"
    item = pydicom.Dataset()
    item.ValueType = "TEXT"
    item.TextValue = text
    ds.ContentSequence = pydicom.Sequence([item])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
