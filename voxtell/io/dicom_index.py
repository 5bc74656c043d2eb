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
import errno
import hashlib
import logging
import math
import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from voxtell.io.errors import (
    CorruptDicomError,
    HeaderValueError,
    InconsistentSeriesError,
    MissingSlicesError,
    MixedStudyError,
    MultiFrameError,
    NoImageSeriesError,
)
from voxtell.io.volume import DEFAULT_LIMITS

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
#: Enhanced and legacy-converted enhanced CT/MR/PET storage: one file holds many frames.
MULTI_FRAME_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2",  # Enhanced / Legacy Converted Enhanced CT
        "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4",  # Enhanced / Legacy Converted Enhanced MR
        "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.128.1",  # Enhanced / Legacy Converted Enhanced PET
    }
)

#: Modalities whose objects must carry pixel data; without it the file is truncated.
IMAGE_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OT"})

#: Transfer syntaxes whose pixel data is stored natively (uncompressed), so its length is known.
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})

#: Plausible rescale of stored CT values to HU. Scanners use slope 1 (rarely 0.5-2) and an
#: intercept of 0, -1000, -1024 or -8192; a value outside these bounds is a header error that
#: would scale every HU (slope 1e6 gives 1e9 HU), so the series is refused.
CT_SLOPE_RANGE = (0.01, 100.0)
CT_INTERCEPT_RANGE = (-10000.0, 10000.0)
#: |ImagePositionPatient| beyond 100 m is a header error, not a patient position.
MAX_POSITION_MM = 1e5

_DICM_OFFSET = 128


@dataclass(frozen=True)
class Instance:
    """One image file's header facts needed for grouping, selection and geometry.

    ``problems`` lists header values the image needs that are missing, malformed or
    implausible; a series with problems is refused with ``HeaderValueError`` when chosen.
    """

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
    study_uid: str = ""
    patient_key: str | None = None  # salted digest of PatientID (or name); never written out
    acquisition_time: str = ""
    rescale_slope: float | None = None
    rescale_intercept: float | None = None
    problems: tuple[str, ...] = ()
    bits_stored: int | None = None
    pixel_signed: bool | None = None


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

    @property
    def is_multi_frame(self) -> bool:
        return any(i.number_of_frames > 1 or i.sop_class_uid in MULTI_FRAME_SOP_CLASSES for i in self.instances)

    @property
    def label(self) -> str:
        """How messages name the series: number and description, never a patient identifier."""
        number = self.first.series_number
        desc = self.first.series_description.strip()
        name = f"series {number if number is not None else '?'}"
        return f"{name} '{desc}'" if desc else name


@dataclass
class StudyIndex:
    """All files of a study folder, sorted into image series and everything else.

    ``unreadable`` holds (path, reason) of files that exist but could not be read or parsed
    as DICOM although they look like it (permission, I/O error, dangling link, damaged
    header); ``skipped`` holds (path, reason) of entries never opened (fifos, sockets,
    devices, link loops, second links to one file); ``warnings`` says both in words.
    """

    study_dir: Path
    series: list[Series]
    non_image: dict[str, int] = field(default_factory=dict)  # modality/kind -> file count
    non_dicom: int = 0
    unreadable: list[Path] = field(default_factory=list)
    unreadable_reasons: dict[str, str] = field(default_factory=dict)  # file name -> reason
    non_dicom_files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    patients: dict[str | None, list[Instance]] = field(default_factory=dict, repr=False)  # any DICOM object

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
    """Read every regular file below ``study_dir`` once (headers only) and group image series.

    Raises ``NoImageSeriesError`` for a missing or empty folder. Files that look like DICOM
    but cannot be read are kept in ``unreadable``; ``check_study`` decides that they are
    fatal. Fifos, sockets and devices are never opened (a fifo would block), link loops are
    not followed and a file reached twice through links is read once.
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise NoImageSeriesError(f"study folder {root} does not exist or is not a folder; check the samples table")
    walk = _walk(root)
    paths = walk.files
    if not paths and not walk.unreadable:
        extra = f" ({len(walk.skipped)} non-regular entries skipped)" if walk.skipped else ""
        raise NoImageSeriesError(f"study folder {root} is empty{extra}; export the DICOM study into it")
    iterator: Iterable[Path] = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="index DICOM", unit="file", leave=False)
    index = StudyIndex(study_dir=root, series=[], skipped=walk.skipped, warnings=list(walk.warnings))
    for path, reason in walk.unreadable:
        index.unreadable.append(path)
        index.unreadable_reasons[str(path)] = reason
    groups: dict[str, list[Instance]] = defaultdict(list)
    inferred: dict[str, bool] = {}
    salt = os.urandom(16)
    with _lenient_values():
        classified = [(path, *_read_instance(path, salt)) for path in iterator]
    for path, kind, inst, patient in classified:
        if kind == "image":
            assert inst is not None
            key, is_inferred = _series_key(inst)
            groups[key].append(inst)
            inferred[key] = is_inferred
        elif kind == "non_dicom":
            index.non_dicom += 1
            index.non_dicom_files.append(path)
        elif kind.startswith("unreadable"):
            index.unreadable.append(path)
            index.unreadable_reasons[str(path)] = kind.partition(":")[2].strip() or "cannot be parsed"
        else:
            index.non_image[kind] = index.non_image.get(kind, 0) + 1
        if kind == "image" or (kind not in ("non_dicom",) and not kind.startswith("unreadable")):
            index.patients.setdefault(patient, []).append(inst or _placeholder(path, kind))
    for key, instances in groups.items():
        instances.sort(key=lambda i: (i.instance_number if i.instance_number is not None else 0, str(i.path)))
        index.series.append(Series(key=key, series_uid=instances[0].series_uid, instances=instances, uid_inferred=inferred[key]))
    index.series.sort(key=lambda s: (s.first.series_number or 0, s.key))
    if index.non_dicom_files:
        names = ", ".join(p.name for p in index.non_dicom_files[:5])
        index.warnings.append(f"{len(index.non_dicom_files)} non-DICOM file(s) ignored (e.g. {names})")
    log.info(
        "indexed %d files: %d image series, non-image %s, %d non-DICOM, %d unreadable, %d skipped",
        len(paths), len(index.series), index.non_image, index.non_dicom, len(index.unreadable), len(index.skipped),
    )
    return index


def _placeholder(path: Path, kind: str) -> Instance:
    """A non-image object in the patient tally (only its path and kind matter there)."""
    return Instance(path, kind, "", "", "", None, None, None, "", (), 0, 0, None, None, None, None, 0.0, 1)


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


@dataclass
class _Walk:
    files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_KINDS = ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def _walk(root: Path) -> _Walk:
    """Regular files below ``root`` (links followed once), plus what was skipped and why.

    Folders are identified by (device, inode), so a link back to a parent is a loop that is
    not entered; files likewise, so two links to one file are one file. Entries are
    ``stat``-ed (which never blocks) and only regular files are returned to be opened.
    """
    walk = _Walk()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: dict[tuple[int, int], Path] = {}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            walk.unreadable.append((folder, f"folder cannot be listed ({exc.strerror or exc})"))
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            walk.skipped.append((folder, "link loop (folder already visited)"))
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                est = os.stat(path)  # follows links; never opens the file
            except OSError as exc:
                what = "link loop" if exc.errno == errno.ELOOP else (
                    "dangling link" if path.is_symlink() else (exc.strerror or type(exc).__name__))
                walk.unreadable.append((path, what))
                continue
            if stat.S_ISDIR(est.st_mode):
                subdirs.append(path)
                continue
            if entry.name.upper() == "DICOMDIR":
                continue
            if not stat.S_ISREG(est.st_mode):
                kind = next((name for test, name in _KINDS if test(est.st_mode)), "special file")
                walk.skipped.append((path, kind))
                continue
            key = (est.st_dev, est.st_ino)
            if key in seen_files:
                walk.skipped.append((path, f"second link to {seen_files[key].name}"))
                continue
            seen_files[key] = path
            walk.files.append(path)
        stack.extend(reversed(subdirs))
    walk.files.sort()
    for path, why in walk.skipped:
        rel = path.relative_to(root) if path.is_relative_to(root) else path
        walk.warnings.append(f"skipped {rel} ({why}); never opened")
    return walk


def _has_dicm_magic(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(_DICM_OFFSET)
        return fh.read(4) == b"DICM"


def _read_instance(path: Path, salt: bytes = b"") -> tuple[str, Instance | None, str | None]:
    """Classify one file: 'image', 'non_dicom', 'unreadable: why' or a non-image modality name.

    The third item is a salted digest of the patient (to count patients, never to name one).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        magic = _has_dicm_magic(path)
    except OSError as exc:  # permission denied, I/O error: the file exists but cannot be read
        return f"unreadable: {exc.strerror or type(exc).__name__}", None, None
    try:
        # defer_size keeps the pixel data on disk but records where it starts and how long it is.
        ds = pydicom.dcmread(path, defer_size=1024, force=not magic)
    except InvalidDicomError as exc:
        if magic:  # the DICM marker says DICOM: a damaged file, not a foreign one
            return f"unreadable: cannot be parsed ({exc})", None, None
        return "non_dicom", None, None
    except OSError as exc:
        return f"unreadable: {exc.strerror or type(exc).__name__}", None, None
    except Exception as exc:  # pydicom raises many types on broken input
        if magic:
            log.warning("cannot parse %s: %s", path.name, exc)
            return f"unreadable: cannot be parsed ({type(exc).__name__})", None, None
        return "non_dicom", None, None
    try:
        looks_dicom = magic or "SOPClassUID" in ds or "Modality" in ds
    except Exception:
        looks_dicom = False
    if not looks_dicom:
        return "non_dicom", None, None
    try:
        patient = _patient_key(ds, salt)
        kind, inst = _instance_from_dataset(path, ds, patient)
        return kind, inst, patient
    except Exception as exc:
        log.warning("malformed header in %s: %s", path.name, exc)
        return f"unreadable: malformed header ({type(exc).__name__}: {exc})", None, None


def _patient_key(ds, salt: bytes) -> str | None:
    """Salted digest of PatientID (PatientName when the ID is blank); None when both are blank."""
    for keyword in ("PatientID", "PatientName"):
        try:
            value = str(ds.get(keyword, "") or "").strip()
        except Exception:
            value = ""
        if value:
            return hashlib.sha256(salt + keyword.encode() + value.encode("utf-8", "replace")).hexdigest()[:12]
    return None


class _Fields:
    """Reads header values defensively: malformed values become ``problems``, never exceptions."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.problems: list[str] = []

    def _value(self, keyword: str) -> Any:
        if keyword not in self.ds:
            return None
        try:
            return self.ds[keyword].value
        except Exception as exc:
            self.problems.append(f"{keyword} cannot be decoded ({type(exc).__name__})")
            return None

    def text(self, keyword: str) -> str:
        value = self._value(keyword)
        if value is None:
            return ""
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        try:
            if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
                return "\\".join(str(v) for v in value).strip()
            return str(value).strip().strip("\x00").strip()
        except Exception:
            return ""

    def uid(self, keyword: str) -> str:
        """A UID, or "" (as if blank) when it holds what no UID can: a binary VR, control characters, spaces, a second value."""
        if isinstance(self._value(keyword), bytes):
            return ""
        text = self.text(keyword)
        if len(text) > 64 or not all(33 <= ord(c) <= 126 and c != "\\" for c in text):
            return ""
        return text

    def strings(self, keyword: str) -> tuple[str, ...]:
        value = self._value(keyword)
        if value is None or value == "":
            return ()
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace").split("\\")
        if isinstance(value, str):
            value = value.split("\\")
        try:
            return tuple(str(v).strip().upper() for v in value)
        except TypeError:
            return (str(value).strip().upper(),)

    def numbers(self, keyword: str, count: int | None = None, required: bool = False) -> tuple[float, ...] | None:
        """Finite numbers of ``keyword`` (``count`` of them when given), or None plus a problem."""
        value = self._value(keyword)
        if value is None or value == "" or value == b"":
            if required:
                self.problems.append(f"{keyword} is missing")
            return None
        if isinstance(value, bytes):  # stored with a binary VR (OB, UN) where a number belongs
            self.problems.append(f"{keyword} is stored as bytes {_short(value)} (wrong VR), not as a number")
            return None
        items = value.split("\\") if isinstance(value, str) else (
            list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value])
        out = []
        for item in items:
            try:
                number = float(str(item.decode("ascii", "replace") if isinstance(item, bytes) else item).strip(" \x00"))
            except (TypeError, ValueError):
                self.problems.append(f"{keyword} value {_short(value)} is not a number")
                return None
            if not math.isfinite(number):
                self.problems.append(f"{keyword} value {_short(value)} is not finite")
                return None
            out.append(number)
        if count is not None and len(out) != count:
            self.problems.append(f"{keyword} has {len(out)} value(s) {_short(value)}, {count} expected")
            return None
        return tuple(out)

    def number(self, keyword: str, required: bool = False) -> float | None:
        values = self.numbers(keyword, 1, required)
        return values[0] if values else None

    def integer(self, keyword: str, low: int | None = None, high: int | None = None, required: bool = False) -> int | None:
        value = self.number(keyword, required)
        if value is None:
            return None
        if value != int(value) or (low is not None and value < low) or (high is not None and value > high):
            bounds = f" (expected an integer in [{low}, {high}])" if low is not None or high is not None else ""
            self.problems.append(f"{keyword} is {value:g}{bounds}")
            return None
        return int(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _instance_from_dataset(path: Path, ds, patient: str | None = None) -> tuple[str, Instance | None]:
    f = _Fields(ds)
    meta = getattr(ds, "file_meta", None)
    sop_class = f.text("SOPClassUID")
    if not sop_class and meta is not None:
        with contextlib.suppress(Exception):
            sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "").strip()
    modality = f.text("Modality").upper()
    if modality in NON_IMAGE_MODALITIES or any(sop_class.startswith(p) for p in NON_IMAGE_SOP_PREFIXES):
        return (modality or "non_image"), None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if modality in IMAGE_MODALITIES or "Rows" in ds or _is_image_storage(sop_class):
            return "unreadable: image object without pixel data (file cut short or pixel data stripped)", None
        return (modality or "non_image"), None
    multi = sop_class in MULTI_FRAME_SOP_CLASSES
    rows = f.integer("Rows", 1, 65535, required=True)
    columns = f.integer("Columns", 1, 65535, required=True)
    frames = f.integer("NumberOfFrames", 1, 1 << 20) if "NumberOfFrames" in ds else 1
    frames = frames or 1
    if frames > 1 or multi:
        f.problems.clear()  # a multi-frame object is refused as such, whatever else it carries
    else:
        _check_pixel_layout(f, ds, path, rows, columns, frames)
    spacing = f.numbers("PixelSpacing", 2, required=not multi)
    iop = f.numbers("ImageOrientationPatient", 6, required=not multi)
    ipp = f.numbers("ImagePositionPatient", 3, required=not multi)
    if not multi and frames == 1:
        _check_geometry_values(f, spacing, iop, ipp)
    slope = f.number("RescaleSlope")
    intercept = f.number("RescaleIntercept")
    if not multi and frames == 1:
        _check_rescale(f, modality, slope, intercept)
    truncated = _pixel_data_truncated(path, ds)
    time = f.text("AcquisitionTime") or f.text("SeriesTime") or f.text("ContentTime")
    return "image", Instance(
        path=path,
        modality=modality or "OT",
        sop_class_uid=sop_class,
        series_uid=f.uid("SeriesInstanceUID"),
        frame_of_reference_uid=f.uid("FrameOfReferenceUID"),
        series_number=_int_or_none(f.text("SeriesNumber")),
        acquisition_number=_int_or_none(f.text("AcquisitionNumber")),
        instance_number=_int_or_none(f.text("InstanceNumber")),
        series_description=f.text("SeriesDescription"),
        image_type=f.strings("ImageType"),
        rows=rows or 0,
        columns=columns or 0,
        pixel_spacing=(spacing[0], spacing[1]) if spacing else None,
        orientation=iop,
        position=ipp,
        slice_thickness=_float_or_none(f.text("SliceThickness")),
        gantry_tilt=_float_or_none(f.text("GantryDetectorTilt")) or 0.0,
        number_of_frames=frames,
        truncated=truncated,
        study_uid=f.uid("StudyInstanceUID"),
        patient_key=patient,
        acquisition_time=time,
        rescale_slope=slope,
        rescale_intercept=intercept,
        problems=tuple(dict.fromkeys(f.problems)),
        bits_stored=f.integer("BitsStored"),
        pixel_signed={0: False, 1: True}.get(f.integer("PixelRepresentation")),  # type: ignore[arg-type]
    )


def _check_pixel_layout(f: _Fields, ds: Any, path: Path, rows: int | None, columns: int | None, frames: int) -> None:
    """Pixel module values that decide how bytes become numbers, and the data length they imply."""
    # All type 1 in the Image Pixel module: without them the bytes have no meaning.
    bits = f.integer("BitsAllocated", required=True)
    stored = f.integer("BitsStored", required=True)
    samples = f.integer("SamplesPerPixel", required=True) or 1
    representation = f.integer("PixelRepresentation", required="PixelData" in ds)
    if bits is not None and bits not in (8, 16, 32, 64):
        f.problems.append(f"BitsAllocated is {bits} (8, 16, 32 or 64 expected)")
        bits = None
    if stored is not None and bits is not None and not 1 <= stored <= bits:
        f.problems.append(f"BitsStored is {stored} with BitsAllocated {bits}")
    if representation is not None and representation not in (0, 1):
        f.problems.append(f"PixelRepresentation is {representation} (0 or 1 expected)")
    if samples != 1:
        f.problems.append(f"SamplesPerPixel is {samples}: a colour image is not a grey-value volume")
    photometric = f.text("PhotometricInterpretation").upper()
    if not photometric:
        f.problems.append("PhotometricInterpretation is missing")
    elif photometric not in ("MONOCHROME1", "MONOCHROME2"):
        f.problems.append(f"PhotometricInterpretation is {photometric}: not a grey-value image")
    syntax = ""
    with contextlib.suppress(Exception):
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    if "PixelData" not in ds or syntax not in NATIVE_SYNTAXES or None in (rows, columns, bits):
        return
    elem = ds.get_item("PixelData", keep_deferred=True)
    length = getattr(elem, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return
    expected = int(rows) * int(columns) * samples * frames * (int(bits) // 8)  # type: ignore[arg-type]
    if length not in (expected, expected + 1):
        f.problems.append(
            f"pixel data holds {length} bytes but Rows {rows} x Columns {columns} x {bits} bits claim {expected}"
        )


def _check_geometry_values(f: _Fields, spacing, iop, ipp) -> None:
    lim = DEFAULT_LIMITS
    if spacing is not None and not all(lim.min_spacing_mm <= s <= lim.max_spacing_mm for s in spacing):
        f.problems.append(
            f"PixelSpacing is {spacing[0]:g}\\{spacing[1]:g} mm (each must lie in "
            f"[{lim.min_spacing_mm:g}, {lim.max_spacing_mm:g}] mm)"
        )
    if iop is not None:
        row, col = np.array(iop[:3]), np.array(iop[3:])
        if abs(np.linalg.norm(row) - 1) > 0.01 or abs(np.linalg.norm(col) - 1) > 0.01 or abs(row @ col) > 0.01:
            f.problems.append(
                f"ImageOrientationPatient {list(iop)} is not two orthogonal unit vectors"
            )
    if ipp is not None and max(abs(v) for v in ipp) > MAX_POSITION_MM:
        f.problems.append(f"ImagePositionPatient {list(ipp)} lies more than {MAX_POSITION_MM / 1000:g} m from the origin")


def _check_rescale(f: _Fields, modality: str, slope: float | None, intercept: float | None) -> None:
    """Rescale values that would scale every voxel wrongly; CT needs both (DICOM type 1)."""
    if slope is not None and slope <= 0:
        f.problems.append(f"RescaleSlope is {slope:g}; it must be positive")
    if modality != "CT":
        return
    if slope is None or intercept is None:
        missing = " and ".join(k for k, v in (("RescaleSlope", slope), ("RescaleIntercept", intercept)) if v is None)
        if not any(p.startswith(("RescaleSlope", "RescaleIntercept")) for p in f.problems):
            f.problems.append(f"{missing} missing: a CT needs both to give HU")
        return
    lo, hi = CT_SLOPE_RANGE
    if slope > 0 and not lo <= slope <= hi:
        f.problems.append(f"RescaleSlope is {slope:g}; a CT's lies in [{lo:g}, {hi:g}] (HU would be scaled {slope:g}-fold)")
    lo, hi = CT_INTERCEPT_RANGE
    if not lo <= intercept <= hi:
        f.problems.append(f"RescaleIntercept is {intercept:g}; a CT's lies in [{lo:g}, {hi:g}] HU")


def _is_image_storage(sop_class: str) -> bool:
    from pydicom.uid import UID

    try:
        return bool(sop_class) and "Image Storage" in UID(sop_class).name
    except Exception:
        return False


def _pixel_data_truncated(path: Path, ds) -> bool:
    """True when the pixel data element claims more bytes than the file holds."""
    elem = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    if elem is None:
        return False
    length = getattr(elem, "length", None)
    tell = getattr(elem, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        # Encapsulated pixel data: pydicom already scanned to the sequence delimiter.
        return False
    return tell + length > path.stat().st_size


def _int_or_none(value) -> int | None:
    """An IS value (series, acquisition, instance number); None when blank, malformed or beyond IS's range."""
    try:
        number = int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is None or abs(number) < 2**31 else None


def _float_or_none(value) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is None or math.isfinite(number) else None


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
    """Raise ``CorruptDicomError`` naming the files that exist but could not be read or parsed.

    An unreadable file may be a slice: converting without it would shrink the volume
    without a word, so the study is refused until the file is fixed or removed.
    """
    if index.unreadable:
        named = ", ".join(
            f"{_rel(index, p)} ({index.unreadable_reasons.get(str(p), 'cannot be parsed')})" for p in index.unreadable[:5]
        )
        more = f" and {len(index.unreadable) - 5} more" if len(index.unreadable) > 5 else ""
        raise CorruptDicomError(
            f"{len(index.unreadable)} file(s) in the study folder cannot be read or parsed: {named}{more}; "
            "re-export the study, or fix the permissions, or remove the damaged files"
        )


def check_study(index: StudyIndex) -> None:
    """Refuse a folder that is not one readable study: unreadable files, several patients or studies.

    Messages name series (number and description) and counts, never a patient identifier.
    """
    check_readable(index)
    patients = {k: v for k, v in index.patients.items() if k is not None}
    if len(patients) > 1:
        labels_of = {i.path: s.label for s in index.series for i in s.instances}
        parts = []
        for n, insts in enumerate(sorted(patients.values(), key=lambda v: -len(v)), 1):
            labels = sorted({labels_of.get(i.path, f"{i.modality} object") for i in insts})
            parts.append(f"patient {n}: {len(insts)} file(s) ({', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''})")
        raise MixedStudyError(
            f"the study folder holds DICOM objects of {len(patients)} different patients (by PatientID/PatientName): "
            f"{'; '.join(parts)}; give each patient's study its own folder"
        )
    studies: dict[str, list[Series]] = defaultdict(list)
    for series in index.series:
        for uid in sorted({i.study_uid for i in series.instances if i.study_uid}):
            studies[uid].append(series)
    if len(studies) > 1:
        parts = [
            f"study {n}: {', '.join(s.label for s in group[:3])}{', ...' if len(group) > 3 else ''}"
            for n, group in enumerate(studies.values(), 1)
        ]
        raise MixedStudyError(
            f"the study folder holds image series of {len(studies)} studies (StudyInstanceUID): {'; '.join(parts)}; "
            "give each study its own folder (or its own row in the samples table)"
        )


def _rel(index: StudyIndex, path: Path) -> str:
    try:
        return str(path.relative_to(index.study_dir))
    except ValueError:
        return path.name


def series_geometry(series: Series, rel_tol: float = 0.01) -> SeriesGeometry:
    """Sort slices along the normal and check that they form one regular 3-D grid.

    Raises ``MultiFrameError`` (enhanced multi-frame objects), ``HeaderValueError`` (a
    value the geometry or the voxel values need is missing, malformed or implausible),
    ``CorruptDicomError`` (truncated pixel data), ``InconsistentSeriesError`` (mixed
    orientation, size or pixel spacing; repeated positions) or ``MissingSlicesError``
    (gaps that skip instance numbers and are whole multiples of the spacing). Gantry tilt
    and non-uniform slice spacing become warnings.
    """
    insts = series.instances
    name = series.series_uid or series.key
    if series.is_multi_frame:
        frames = sum(i.number_of_frames for i in insts)
        raise MultiFrameError(
            f"{series.label} ({series.modality}) is stored as enhanced multi-frame DICOM ({len(insts)} file(s), "
            f"{frames} frame(s)); this stage converts single-frame series only: export it as classic single-frame "
            "images (most PACS and scanners offer this; dcmtk's or highdicom's legacy conversion can split it)"
        )
    problems = [(i, p) for i in insts for p in i.problems]
    if problems:
        distinct = list(dict.fromkeys(p for _, p in problems))
        files = {i.path.name for i, _ in problems}
        raise HeaderValueError(
            f"{series.label} has header values that cannot be trusted in {len(files)} of {len(insts)} file(s) "
            f"(e.g. {next(iter(sorted(files)))}): {'; '.join(distinct[:4])}; fix the export (or choose another series)"
        )
    truncated = [i.path.name for i in insts if i.truncated]
    if truncated:
        raise CorruptDicomError(
            f"{len(truncated)} file(s) of series {name} have truncated pixel data "
            f"(e.g. {truncated[0]}); re-export the study"
        )
    if any(i.orientation is None or i.position is None or i.pixel_spacing is None for i in insts):
        raise InconsistentSeriesError(
            f"series {name} lacks ImageOrientationPatient, ImagePositionPatient "
            "or PixelSpacing; it cannot be placed in patient space"
        )
    iops = np.array([i.orientation for i in insts])
    if np.abs(iops - iops[0]).max() > 1e-3:
        raise InconsistentSeriesError(
            f"series {name} mixes image orientations; "
            "it is a multi-plane localizer or a merged export, split it into one series per orientation"
        )
    sizes = {(i.rows, i.columns) for i in insts}
    spacings = {tuple(round(v, 4) for v in i.pixel_spacing) for i in insts}  # type: ignore[union-attr]
    if len(sizes) > 1 or len(spacings) > 1:
        raise InconsistentSeriesError(
            f"series {name} mixes image sizes {sorted(sizes)} or pixel spacings "
            f"{sorted(spacings)}; export each reconstruction as its own series"
        )
    layouts = {(i.bits_stored, i.pixel_signed) for i in insts}
    if len(layouts) > 1:
        raise HeaderValueError(
            f"{series.label} changes BitsStored/PixelRepresentation from slice to slice ({sorted(layouts, key=str)}); "
            "the slices' bytes mean different numbers: re-export the series"
        )
    rescales = {(i.rescale_slope, i.rescale_intercept) for i in insts}
    if len(rescales) > 1 and series.modality not in ("PT", "NM"):
        raise HeaderValueError(
            f"{series.label} ({series.modality}) changes RescaleSlope/RescaleIntercept from slice to slice "
            f"({len(rescales)} different pairs); one volume needs one scaling: re-export the series"
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
            f"series {name} has several images at the same position "
            "(multi-echo, dynamic or duplicated export); select or export a single 3-D volume"
        )
    if n > 1:
        step = float(np.median(gaps))
        missing, uneven = _classify_gaps(gaps, step, [i.instance_number for i in sorted_insts])
        if missing.size:
            n_missing = int(np.round(gaps[missing] / step).sum() - missing.size)
            raise MissingSlicesError(
                f"series {name} has {n_missing} missing slice(s) "
                f"(gaps of {', '.join(f'{g:.2f}' for g in gaps[missing][:3])} mm with spacing {step:.3f} mm, "
                "and the instance numbers skip there too); re-export the complete series"
            )
        if uneven or np.abs(gaps - step).max() > max(rel_tol * step, 1e-3):
            warnings.append(
                f"non-uniform slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm (median {step:.3f} mm); "
                "the volume is resampled to a regular grid"
            )
        lim = DEFAULT_LIMITS
        if not lim.min_spacing_mm <= step <= lim.max_spacing_mm:
            raise HeaderValueError(
                f"series {name} has a slice spacing of {step:.4g} mm from ImagePositionPatient; spacings outside "
                f"[{lim.min_spacing_mm:g}, {lim.max_spacing_mm:g}] mm are header errors: fix the positions"
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


def _classify_gaps(gaps: np.ndarray, step: float, numbers: list[int | None]) -> tuple[np.ndarray, bool]:
    """Gaps that are missing slices, and whether the rest is a non-uniform spacing.

    A missing slice leaves a gap that is a whole multiple (>= 2) of the spacing. When the
    instance numbers run along the slices, the gap must also skip instance numbers: a
    wider gap between consecutive numbers is a change of spacing (e.g. 1 mm slices through
    the target, 3 mm elsewhere), which is resampled and reported, not refused.
    """
    multiples = gaps / step
    candidates = np.flatnonzero(multiples > 1.5)
    usable = all(v is not None for v in numbers) and len(set(numbers)) == len(numbers)
    if usable:
        diffs = np.diff(np.asarray(numbers, dtype=np.int64))
        usable = bool(np.all(diffs > 0) or np.all(diffs < 0))
    if usable:
        steps = np.abs(np.diff(np.asarray(numbers, dtype=np.int64)))
        usual = float(np.median(steps))
        missing = np.array([i for i in candidates if steps[i] > usual], dtype=np.int64)
    else:
        whole = np.abs(multiples[candidates] - np.round(multiples[candidates])) < 0.1
        missing = candidates[whole]
    return missing, bool(candidates.size > missing.size)


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter nibabel axis code (e.g. 'LPS', 'RAS') of an affine."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))
