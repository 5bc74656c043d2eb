"""Index a study folder: find DICOM image instances and group them into series.

Only headers are read (``stop_before_pixels``), plus the position and length of the pixel
data element so that truncated files are caught before dcm2niix sees them. Non-image
objects (SR, RTSTRUCT, SEG, RTPLAN, RTDOSE, presentation states, key objects) and
non-DICOM files are listed but never become series. When SeriesInstanceUID is blank (some
anonymisers strip it), instances are grouped by what a series shares: modality, frame of
reference, orientation, pixel spacing, matrix size and acquisition/series numbers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from voxtell.io.errors import CorruptDicomError, InconsistentSeriesError, MissingSlicesError, NoImageSeriesError

log = logging.getLogger(__name__)

#: Modalities that are never image volumes for segmentation.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "RTSTRUCT", "SEG", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "PR", "KO", "REG", "DOC", "PLAN", "FID", "RWV"}
)
#: SOP class UID prefixes of non-volume objects (SR family, presentation states, RT objects,
#: secondary capture, encapsulated documents, segmentation, registration).
NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects (dose, structure set, plan, ...)
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture (and its multi-frame variants)
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, spatial registration, segmentation
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms
)

#: Modalities whose objects must carry pixel data; without it the file is truncated.
IMAGE_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OT"})

_DICM_OFFSET = 128


@dataclass(frozen=True)
class Instance:
    """One image file's header facts needed for grouping, selection and geometry."""

    path: Path
    modality: str
    sop_class_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int | None
    acquisition_number: int | None
    instance_number: int | None
    series_description: str
    image_type: tuple[str, ...]
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    orientation: tuple[float, ...] | None  # 6 direction cosines (LPS)
    position: tuple[float, ...] | None  # ImagePositionPatient (LPS, mm)
    slice_thickness: float | None
    gantry_tilt: float
    number_of_frames: int
    truncated: bool = False


@dataclass
class Series:
    """Image instances that form one series, with their geometry once checked."""

    key: str
    series_uid: str
    instances: list[Instance]
    uid_inferred: bool = False

    @property
    def first(self) -> Instance:
        return self.instances[0]

    @property
    def modality(self) -> str:
        return self.first.modality

    @property
    def n_files(self) -> int:
        return len(self.instances)

    @property
    def is_localizer(self) -> bool:
        return any("LOCALIZER" in inst.image_type or "SCOUT" in inst.image_type for inst in self.instances)

    @property
    def is_derived(self) -> bool:
        return bool(self.first.image_type) and self.first.image_type[0] == "DERIVED"


@dataclass
class StudyIndex:
    """All files of a study folder, sorted into image series and everything else."""

    study_dir: Path
    series: list[Series]
    non_image: dict[str, int] = field(default_factory=dict)  # modality/kind -> file count
    non_dicom: int = 0
    unreadable: list[Path] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return sum(s.n_files for s in self.series) + sum(self.non_image.values()) + self.non_dicom + len(self.unreadable)


@dataclass(frozen=True)
class SeriesGeometry:
    """Slice-sorted geometry of a single-frame series, computed from the headers alone."""

    instances: tuple[Instance, ...]  # sorted along the slice normal
    affine_ras: np.ndarray  # 4x4, nibabel convention: (column, row, slice) -> RAS mm
    spacing: tuple[float, float, float]  # column, row, slice (mm)
    slice_gaps: tuple[float, ...]
    warnings: tuple[str, ...]
    shape: tuple[int, int, int]


def index_study(study_dir: str | os.PathLike, progress: bool = False) -> StudyIndex:
    """Read every file below ``study_dir`` once (headers only) and group image series.

    Raises ``NoImageSeriesError`` for a missing or empty folder. Unparseable files that
    look like DICOM are kept in ``unreadable``; the caller decides whether they are fatal.
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise NoImageSeriesError(f"study folder {root} does not exist or is not a folder; check the samples table")
    paths = sorted(p for p in _walk(root))
    if not paths:
        raise NoImageSeriesError(f"study folder {root} is empty; export the DICOM study into it")
    iterator: Iterable[Path] = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="index DICOM", unit="file", leave=False)
    index = StudyIndex(study_dir=root, series=[])
    groups: dict[str, list[Instance]] = defaultdict(list)
    inferred: dict[str, bool] = {}
    with _lenient_values():
        classified = [(path, *_read_instance(path)) for path in iterator]
    for path, kind, inst in classified:
        if kind == "image":
            assert inst is not None
            key, is_inferred = _series_key(inst)
            groups[key].append(inst)
            inferred[key] = is_inferred
        elif kind == "non_dicom":
            index.non_dicom += 1
        elif kind == "unreadable":
            index.unreadable.append(path)
        else:
            index.non_image[kind] = index.non_image.get(kind, 0) + 1
    for key, instances in groups.items():
        instances.sort(key=lambda i: (i.instance_number if i.instance_number is not None else 0, str(i.path)))
        index.series.append(Series(key=key, series_uid=instances[0].series_uid, instances=instances, uid_inferred=inferred[key]))
    index.series.sort(key=lambda s: (s.first.series_number or 0, s.key))
    log.info(
        "indexed %d files: %d image series, non-image %s, %d non-DICOM, %d unreadable",
        len(paths), len(index.series), index.non_image, index.non_dicom, len(index.unreadable),
    )
    return index


@contextlib.contextmanager
def _lenient_values() -> Iterator[None]:
    """Skip pydicom's per-value validation while indexing (a third faster; values are checked here)."""
    from pydicom import config

    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        yield
    finally:
        config.settings.reading_validation_mode = previous


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            yield Path(dirpath) / name


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(_DICM_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_instance(path: Path) -> tuple[str, Instance | None]:
    """Classify one file: 'image', 'non_dicom', 'unreadable' or a non-image modality name."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    magic = _has_dicm_magic(path)
    try:
        # defer_size keeps the pixel data on disk but records where it starts and how long it is.
        ds = pydicom.dcmread(path, defer_size=1024, force=not magic)
    except InvalidDicomError:
        return "non_dicom", None
    except Exception as exc:  # pydicom raises many types on broken input
        if magic:
            log.warning("cannot parse %s: %s", path.name, exc)
            return "unreadable", None
        return "non_dicom", None
    if not magic and not ("SOPClassUID" in ds or "Modality" in ds) :
        return "non_dicom", None
    try:
        return _instance_from_dataset(path, ds)
    except Exception as exc:
        if magic:
            log.warning("malformed header in %s: %s", path.name, exc)
            return "unreadable", None
        return "non_dicom", None


def _instance_from_dataset(path: Path, ds) -> tuple[str, Instance | None]:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES or any(sop_class.startswith(p) for p in NON_IMAGE_SOP_PREFIXES):
        return (modality or "non_image"), None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        if modality in IMAGE_MODALITIES or "Rows" in ds or _is_image_storage(sop_class):
            # An image object without pixel data: the file was cut short (headers end early).
            raise ValueError("image object without pixel data (truncated file)")
        return (modality or "non_image"), None
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError("image object without Rows/Columns")
    truncated = _pixel_data_truncated(path, ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or []))
    spacing = ds.get("PixelSpacing")
    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    return "image", Instance(
        path=path,
        modality=modality or "OT",
        sop_class_uid=sop_class,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "").strip(),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or "").strip(),
        series_number=_int_or_none(ds.get("SeriesNumber")),
        acquisition_number=_int_or_none(ds.get("AcquisitionNumber")),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        series_description=str(ds.get("SeriesDescription", "") or ""),
        image_type=image_type,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing and len(spacing) == 2 else None,
        orientation=tuple(float(v) for v in iop) if iop and len(iop) == 6 else None,
        position=tuple(float(v) for v in ipp) if ipp and len(ipp) == 3 else None,
        slice_thickness=_float_or_none(ds.get("SliceThickness")),
        gantry_tilt=_float_or_none(ds.get("GantryDetectorTilt")) or 0.0,
        number_of_frames=frames,
        truncated=truncated,
    )


def _is_image_storage(sop_class: str) -> bool:
    from pydicom.uid import UID

    return bool(sop_class) and "Image Storage" in UID(sop_class).name


def _pixel_data_truncated(path: Path, ds) -> bool:
    """True when the pixel data element claims more bytes than the file holds."""
    elem = ds.get_item("PixelData") if "PixelData" in ds else None
    if elem is None:
        return False
    length = getattr(elem, "length", None)
    tell = getattr(elem, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        # Encapsulated pixel data: pydicom already scanned to the sequence delimiter.
        return False
    return tell + length > path.stat().st_size


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float_or_none(value) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _series_key(inst: Instance) -> tuple[str, bool]:
    """SeriesInstanceUID, or a key built from what one series shares when the UID is blank."""
    if inst.series_uid:
        return inst.series_uid, False
    iop = tuple(round(v, 3) for v in inst.orientation) if inst.orientation else None
    spacing = tuple(round(v, 4) for v in inst.pixel_spacing) if inst.pixel_spacing else None
    parts = (
        inst.modality, inst.frame_of_reference_uid, inst.series_number, inst.acquisition_number,
        inst.series_description, iop, spacing, inst.rows, inst.columns, inst.image_type,
    )
    return "inferred:" + "|".join(str(p) for p in parts), True


# --------------------------------------------------------------------------- geometry


def check_readable(index: StudyIndex) -> None:
    """Raise ``CorruptDicomError`` if any DICOM-looking file could not be parsed."""
    if index.unreadable:
        names = ", ".join(p.name for p in index.unreadable[:5])
        raise CorruptDicomError(
            f"{len(index.unreadable)} DICOM file(s) cannot be parsed (e.g. {names}); "
            "re-export the study or remove the damaged files"
        )


def series_geometry(series: Series, rel_tol: float = 0.01) -> SeriesGeometry:
    """Sort slices along the normal and check that they form one regular 3-D grid.

    Raises ``CorruptDicomError`` (truncated pixel data), ``InconsistentSeriesError`` (mixed
    orientation, size or pixel spacing; repeated positions; missing geometry) or
    ``MissingSlicesError`` (gaps that are whole multiples of the spacing). Gantry tilt and
    small spacing irregularities become warnings.
    """
    insts = series.instances
    truncated = [i.path.name for i in insts if i.truncated]
    if truncated:
        raise CorruptDicomError(
            f"{len(truncated)} file(s) of series {series.series_uid or series.key} have truncated pixel data "
            f"(e.g. {truncated[0]}); re-export the study"
        )
    if any(i.number_of_frames > 1 for i in insts):
        raise InconsistentSeriesError(
            "multi-frame (enhanced) image objects are not supported by the geometry check; "
            "export the series as single-frame images"
        )
    if any(i.orientation is None or i.position is None or i.pixel_spacing is None for i in insts):
        raise InconsistentSeriesError(
            f"series {series.series_uid or series.key} lacks ImageOrientationPatient, ImagePositionPatient "
            "or PixelSpacing; it cannot be placed in patient space"
        )
    iops = np.array([i.orientation for i in insts])
    if np.abs(iops - iops[0]).max() > 1e-3:
        raise InconsistentSeriesError(
            f"series {series.series_uid or series.key} mixes image orientations; "
            "it is a multi-plane localizer or a merged export, split it into one series per orientation"
        )
    sizes = {(i.rows, i.columns) for i in insts}
    spacings = {tuple(round(v, 4) for v in i.pixel_spacing) for i in insts}  # type: ignore[union-attr]
    if len(sizes) > 1 or len(spacings) > 1:
        raise InconsistentSeriesError(
            f"series {series.series_uid or series.key} mixes image sizes {sorted(sizes)} or pixel spacings "
            f"{sorted(spacings)}; export each reconstruction as its own series"
        )
    row_dir, col_dir = iops[0][:3], iops[0][3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([i.position for i in insts])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    positions = positions[order]
    sorted_insts = tuple(insts[i] for i in order)
    n = len(insts)
    warnings: list[str] = []
    row_spacing, col_spacing = insts[0].pixel_spacing  # type: ignore[misc]
    gaps = np.diff(dist)
    if n > 1 and gaps.min() < 1e-3 * max(1.0, abs(float(np.median(gaps)))):
        raise InconsistentSeriesError(
            f"series {series.series_uid or series.key} has several images at the same position "
            "(multi-echo, dynamic or duplicated export); select or export a single 3-D volume"
        )
    if n > 1:
        step = float(np.median(gaps))
        multiples = gaps / step
        missing = np.flatnonzero(multiples > 1.5)
        if missing.size:
            n_missing = int(np.round(multiples[missing]).sum() - missing.size)
            raise MissingSlicesError(
                f"series {series.series_uid or series.key} has {n_missing} missing slice(s) "
                f"(gaps of {', '.join(f'{g:.2f}' for g in gaps[missing][:3])} mm with spacing {step:.3f} mm); "
                "re-export the complete series"
            )
        if np.abs(gaps - step).max() > max(rel_tol * step, 1e-3):
            warnings.append(
                f"variable slice spacing: {gaps.min():.3f} to {gaps.max():.3f} mm (median {step:.3f} mm)"
            )
        slice_vec = (positions[-1] - positions[0]) / (n - 1)
    else:
        slice_vec = normal * (insts[0].slice_thickness or 1.0)
    along = slice_vec / np.linalg.norm(slice_vec)
    tilt_deg = float(np.degrees(np.arccos(np.clip(abs(along @ normal), -1.0, 1.0))))
    if tilt_deg > 0.01 or any(abs(i.gantry_tilt) > 0.01 for i in insts):
        warnings.append(f"gantry tilt: slices are sheared by {tilt_deg:.2f} degrees (header tilt {insts[0].gantry_tilt:g})")
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = slice_vec
    lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    spacing = (float(col_spacing), float(row_spacing), float(np.linalg.norm(slice_vec)))
    return SeriesGeometry(
        instances=sorted_insts,
        affine_ras=affine,
        spacing=spacing,
        slice_gaps=tuple(float(g) for g in gaps),
        warnings=tuple(warnings),
        shape=(insts[0].columns, insts[0].rows, n),
    )


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter nibabel axis code (e.g. 'LPS', 'RAS') of an affine."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))
