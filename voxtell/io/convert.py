"""Convert a DICOM study to ``image.nii.gz`` + ``series.json`` with dcm2niix.

One study in, one volume out: the study is indexed (headers only), one series is chosen
by ``SelectionPolicy``, only that series' files are linked into a scratch folder, and the
dcm2niix binary shipped by the PyPI ``dcm2niix`` package converts them with its
anonymising options. The result is checked against the geometry computed from the
headers, and ``series.json`` records what was chosen and why, without any patient
identifier. A bad study raises a typed ``DicomError`` and leaves a ``status.json`` saying
why, so a cohort run records it and goes on.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxtell.errors import VoxTellError
from voxtell.io.atomic import write_json_atomic
from voxtell.io.dicom_index import Instance, SeriesGeometry, check_study, index_study, orientation_code
from voxtell.io.errors import ConversionError, HeaderValueError, ImplausibleValuesError
from voxtell.io.selection import Selection, SelectionPolicy, select_series

log = logging.getLogger(__name__)

SERIES_JSON_VERSION = 2  # 2: warnings carry index/selection/value checks; study and frame UIDs
IMAGE_NAME = "image.nii.gz"
SERIES_NAME = "series.json"

#: dcm2niix sidecar fields that describe the acquisition and never the patient. Anything
#: else (institution, station, device serial, dates, names, IDs) is dropped.
SIDECAR_ALLOWLIST = frozenset(
    {
        "Modality", "Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "BodyPart",
        "PatientPosition", "SoftwareVersions", "SeriesDescription", "ProtocolName", "ImageType",
        "ConvolutionKernel", "SliceThickness", "SpacingBetweenSlices", "EchoTime", "RepetitionTime",
        "InversionTime", "FlipAngle", "ScanningSequence", "SequenceVariant", "ScanOptions", "SequenceName",
        "MRAcquisitionType", "PulseSequenceName", "Units", "DecayCorrection", "Radiopharmaceutical",
        "RadionuclideTotalDose", "RadionuclideHalfLife", "AttenuationCorrectionMethod", "ReconMethodName",
        "ImageOrientationPatientDICOM", "ConversionSoftware", "ConversionSoftwareVersion", "GantryDetectorTilt",
        "XRayTubeCurrent", "XRayExposure", "ExposureTime", "KVP", "CTDIvol", "RescaleSlope", "RescaleIntercept",
        "PhilipsRescaleSlope", "PhilipsRescaleIntercept", "PhilipsScaleSlope", "UsePhilipsFloatNotDisplayScaling",
    }
)

#: Output variants dcm2niix may write for one series; the rule picks the first match.
#: Equalised (variable spacing resampled) and tilt-corrected volumes lie on a regular
#: orthogonal grid, which is what the segmentation model and every NIfTI reader expect.
_VARIANT_RULE = (
    ("tilt+equalised", ("Tilt", "Eq")),
    ("equalised", ("Eq",)),
    ("tilt-corrected", ("Tilt",)),
    ("as acquired", ()),
)
_REJECTED_TAGS = ("ROI", "ph", "imaginary", "real", "Crop")

#: CT values after rescale. No scanner writes values outside HARD (extended scales reach
#: about +30700 HU, padding about -3024 HU), so a volume reaching beyond them has a wrong
#: rescale or pixel representation and is refused. The median of a CT volume lies between
#: air and dense bone (a slope or intercept error moves it out of MEDIAN); refused too. A CT
#: without any air (nothing below AIR_HU) is possible (a small field of view inside the body)
#: but is also what a lost intercept looks like, so it is converted with a warning.
CT_HU_HARD = (-10000.0, 40000.0)
CT_HU_MEDIAN = (-1100.0, 1500.0)
CT_AIR_HU = -500.0
#: PET units as written in series.json (DICOM Units -> what the voxels are).
PET_UNITS = {"BQML": "Bq/ml", "GML": "SUVbw (g/ml)", "CNTS": "counts", "PROPCNTS": "proportional counts"}


@dataclass(frozen=True)
class Dcm2niix:
    """The dcm2niix executable that the Python package ships, with its version string."""

    path: Path
    version: str


@functools.lru_cache(maxsize=1)
def find_dcm2niix() -> Dcm2niix:
    """Locate the binary inside the installed ``dcm2niix`` package (never via PATH)."""
    try:
        import dcm2niix as pkg
    except ImportError as exc:
        raise ConversionError(
            "the dcm2niix Python package is not installed; run `pip install dcm2niix` in this environment"
        ) from exc
    path = Path(getattr(pkg, "bin", "") or Path(pkg.__file__).parent / "dcm2niix")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise ConversionError(f"dcm2niix package found but its binary {path} is missing or not executable; reinstall it")
    proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60)
    match = re.search(r"v\d+\.\d+\.\d+\w*", proc.stdout + proc.stderr)
    version = match.group(0) if match else f"package {getattr(pkg, '__version__', 'unknown')}"
    return Dcm2niix(path=path, version=version)


@dataclass(frozen=True)
class ConversionResult:
    """What ``convert_study`` wrote and the facts recorded in ``series.json``."""

    image_path: Path
    series_json_path: Path
    series_uid: str
    modality: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    warnings: tuple[str, ...]
    selection_reason: str
    dcm2niix_version: str
    suv_factor: float | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    study_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None


def convert_study(
    study_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    policy: SelectionPolicy = SelectionPolicy(),
    pet_suv: bool = False,
) -> ConversionResult:
    """Convert the series that ``policy`` chooses in ``study_dir`` into ``out_dir``.

    Writes ``image.nii.gz`` (CT in HU; PET in Bq/ml, or body-weight SUV when ``pet_suv``) and
    ``series.json``, both atomically. On a bad study it removes stale outputs and re-raises
    the typed ``DicomError``. The study's status record (with ``warnings``) is the convert
    stage's: ``voxtell.cohort.stage_convert.run_convert``, which ``voxtell convert`` uses too.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".dcm2niix-*"):  # scratch of an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    try:
        result = _convert(Path(study_dir), out, policy, pet_suv)
    except VoxTellError:
        for name in (IMAGE_NAME, SERIES_NAME):
            (out / name).unlink(missing_ok=True)
        raise
    return result


def _convert(study_dir: Path, out: Path, policy: SelectionPolicy, pet_suv: bool) -> ConversionResult:
    t0 = time.perf_counter()
    tool = find_dcm2niix()
    index = index_study(study_dir)
    check_study(index)
    t_index = time.perf_counter()
    selection = select_series(index, policy)
    chosen = selection.chosen
    geom = chosen.geometry
    assert geom is not None
    t_select = time.perf_counter()
    warnings = [*index.warnings, *selection.warnings, *geom.warnings]
    scratch = Path(tempfile.mkdtemp(prefix=".dcm2niix-", dir=out))
    try:
        src = scratch / "in"
        dst = scratch / "out"
        src.mkdir()
        dst.mkdir()
        for k, inst in enumerate(geom.instances):
            os.symlink(os.path.abspath(inst.path), src / f"{k:05d}.dcm")
        t_link = time.perf_counter()
        stdout = _run_dcm2niix(tool, src, dst)
        t_d2n = time.perf_counter()
        warnings += [f"dcm2niix: {line.strip()}" for line in stdout.splitlines() if line.lstrip().lower().startswith("warning")]
        nifti, variant, outputs = _choose_output(dst, geom)
        sidecar = _read_sidecar(nifti)
        suv = None
        image_path = out / IMAGE_NAME
        if pet_suv and chosen.modality == "PT":
            from voxtell.io.suv import suv_factor

            suv = suv_factor([i.path for i in geom.instances])
            warnings += list(suv.warnings)  # unusual weight, dose or timing (helper RT, issue 19)
            _write_scaled(nifti, image_path, suv.factor)
        else:
            if pet_suv:
                warnings.append(f"--suv ignored: chosen series is {chosen.modality}, not PT")
            os.replace(nifti, image_path)  # same file system: atomic
        img_header = _read_header(image_path)
        warnings += _check_values(image_path, chosen.modality, bool(suv), geom.instances[0])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    shape = tuple(int(v) for v in img_header.shape)
    zooms = tuple(round(float(v), 6) for v in img_header.zooms[:3])
    orient = orientation_code(img_header.affine)
    record = _series_record(
        selection, geom, tool, variant, outputs, shape, zooms, orient, warnings, sidecar, suv, img_header.affine
    )
    series_json = out / SERIES_NAME
    write_json_atomic(series_json, record)
    t_end = time.perf_counter()
    timings = {
        "index_s": t_index - t0,
        "select_s": t_select - t_index,
        "link_s": t_link - t_select,
        "dcm2niix_s": t_d2n - t_link,
        "output_s": t_end - t_d2n,
        "total_s": t_end - t0,
    }
    log.info("converted %s: %s %s %s (%.2f s)", study_dir.name, chosen.modality, shape, orient, timings["total_s"])
    return ConversionResult(
        image_path=image_path,
        series_json_path=series_json,
        series_uid=chosen.series_uid,
        modality=chosen.modality,
        shape=shape,
        spacing=zooms,
        orientation=orient,
        warnings=tuple(warnings),
        selection_reason=selection.reason,
        dcm2niix_version=tool.version,
        suv_factor=suv.factor if suv else None,
        timings_s=timings,
        study_instance_uid=record["study_instance_uid"],
        frame_of_reference_uid=record["frame_of_reference_uid"],
    )


def _check_values(image_path: Path, modality: str, is_suv: bool, first: Instance) -> list[str]:
    """The shared volume check on the written image, then the modality's value plausibility.

    Raises a ``VolumeError`` (not a usable volume: the segment stage would refuse it too) or
    ``ImplausibleValuesError``; returns warnings. Voxels are read once, as stored.
    """
    from voxtell.io.nifti import open_image
    from voxtell.io.volume import read_checked

    img = open_image(image_path, "converted image", ConversionError)
    facts, raw, slope, inter = read_checked(img, "converted image", error=ConversionError)
    _check_bits_stored(raw, slope, inter, *facts.value_range, first)  # type: ignore[misc]
    if modality == "PT" and is_suv:
        from voxtell.io.suv import suv_range_warnings

        return suv_range_warnings(facts.value_range[1])  # type: ignore[index]
    if modality != "CT" or is_suv:
        return []
    return _ct_plausibility(raw, slope, inter, *facts.value_range)  # type: ignore[misc]


def _ct_plausibility(raw: np.ndarray, slope: float, inter: float, lo: float, hi: float) -> list[str]:
    """Refuse HU no scanner writes (see ``CT_HU_HARD``/``CT_HU_MEDIAN``); warn about a CT without air.

    Scanners fill the corners outside the reconstructed circle with one padding value, some
    far below -10000 HU (-32768 stored): a minimum held by a single value, with every other
    voxel in range, is that padding; it is reported and left out of the checks.
    """
    from voxtell.io.volume import iter_slabs

    warnings: list[str] = []
    (hard_lo, hard_hi), (med_lo, med_hi) = CT_HU_HARD, CT_HU_MEDIAN
    flat = raw.reshape(-1, order="A")
    sample = flat[:: max(1, flat.size // 1_000_000)].astype(np.float64) * slope + inter
    if lo < hard_lo and slope > 0:
        pad = raw.dtype.type(round((lo - inter) / slope))
        top = np.iinfo(raw.dtype).max if raw.dtype.kind in "iu" else np.inf
        above = min(float(np.min(s, where=s > pad, initial=top)) for s in iter_slabs(raw))
        if above < top and above * slope + inter >= hard_lo:
            share = float(np.mean(sample == lo))
            warnings.append(f"padding: {share:.0%} of voxels hold {lo:.6g} HU (outside the field of view); left out of the HU checks")
            lo = above * slope + inter
            sample = sample[sample != (float(pad) * slope + inter)]
    median = float(np.median(sample)) if sample.size else lo
    low_pct = float(np.percentile(sample, 0.1)) if sample.size else lo
    if lo < hard_lo or hi > hard_hi or not med_lo <= median <= med_hi:
        raise ImplausibleValuesError(
            f"the CT's values after rescale run from {lo:.6g} to {hi:.6g} HU with median {median:.6g} HU; no scanner "
            f"writes values outside [{hard_lo:g}, {hard_hi:g}] HU and a CT's median lies in [{med_lo:g}, {med_hi:g}] HU. "
            "RescaleSlope/RescaleIntercept or PixelRepresentation are wrong in the headers: fix the export"
        )
    if low_pct > CT_AIR_HU:
        warnings.append(
            f"CT has no air: 99.9% of voxels are above {low_pct:.0f} HU (median {median:.0f} HU); a small field of view "
            "can do this, a lost RescaleIntercept too: check the HU values"
        )
    return warnings


def _check_bits_stored(raw: np.ndarray, slope: float, inter: float, lo: float, hi: float, first: Instance) -> None:
    """Refuse stored values that BitsStored cannot hold: the header and the pixels disagree.

    dcm2niix uses every bit of the container while DICOM readers that follow the standard
    mask to BitsStored, so such a series gives different HU in different tools. Checked when
    the image keeps the stored integers (its scaling equals the DICOM rescale).
    """
    bits, signed = first.bits_stored, first.pixel_signed
    if raw.dtype.kind not in "iu" or not bits or signed is None or bits >= 32:
        return
    if abs(slope - (first.rescale_slope or 1.0)) > 1e-6 or abs(inter - (first.rescale_intercept or 0.0)) > 1e-3:
        return
    stored_lo, stored_hi = sorted(((lo - inter) / slope, (hi - inter) / slope))
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if stored_lo < low - 0.5 or stored_hi > high + 0.5:
        raise HeaderValueError(
            f"stored pixel values run from {stored_lo:.0f} to {stored_hi:.0f}, beyond what BitsStored {bits} "
            f"({'signed' if signed else 'unsigned'}) allows [{low}, {high}]; the header and the pixel data disagree "
            "(tools would read different values): fix BitsStored/PixelRepresentation in the export"
        )


def _units(modality: str, sidecar: dict[str, Any], suv: Any) -> str:
    if suv:
        return "SUVbw"
    if modality == "PT":
        units = str(sidecar.get("Units", "") or "").upper()
        return PET_UNITS.get(units, units or "unknown PET units")
    return {"CT": "HU"}.get(modality, "scanner units")


def _run_dcm2niix(tool: Dcm2niix, src: Path, dst: Path) -> str:
    cmd = [
        str(tool.path),
        "-g", "i",  # ignore the user's ~/.dcm2nii.ini: same result on every node
        "-b", "y", "-ba", "y",  # sidecar, anonymised (no dates, no identifiers)
        "-c", "",  # empty comment: nothing from 0020,4000 in the NIfTI header
        "-f", "image",
        "-z", "y",
        "-d", "0",
        "-i", "n", "-x", "n", "-l", "o", "-w", "1",
        "-o", str(dst),
        str(src),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError("dcm2niix ran for more than an hour on one series; check the files") from exc
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise ConversionError(f"dcm2niix failed (exit {proc.returncode}): {' | '.join(tail)}")
    return proc.stdout + proc.stderr


def _variant_tags(path: Path) -> tuple[str, ...]:
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    return tuple(t for t in stem.split("_")[1:] if t)


def _choose_output(dst: Path, geom: SeriesGeometry) -> tuple[Path, str, list[str]]:
    """Pick one of dcm2niix's NIfTI outputs by ``_VARIANT_RULE``; rejects ROI/phase/cropped variants."""
    import nibabel as nib

    outputs = sorted(dst.glob("*.nii*"))
    names = [p.name for p in outputs]
    if not outputs:
        raise ConversionError("dcm2niix wrote no NIfTI for the chosen series; the files may use an unsupported encoding")
    usable = []
    for p in outputs:
        tags = _variant_tags(p)
        if any(t.startswith(r) for t in tags for r in _REJECTED_TAGS):
            continue
        try:
            shape = nib.load(str(p)).shape
        except Exception as exc:  # dcm2niix wrote something nibabel cannot read
            raise ConversionError(f"dcm2niix wrote {p.name}, which cannot be read ({type(exc).__name__}: {exc})") from exc
        if len(shape) != 3 or shape[2] < 2:
            continue
        usable.append((p, tags))
    for label, wanted in _VARIANT_RULE:
        for p, tags in usable:
            base = {t.rstrip("0123456789") for t in tags}
            if set(wanted) <= base and (wanted or not base & {"Tilt", "Eq"}):
                return p, label, names
    raise ConversionError(
        f"dcm2niix wrote {names} for the chosen series but none is a single 3-D volume; "
        "the series is probably 4-D (dynamic, diffusion, multi-echo): export one 3-D volume"
    )


def _read_sidecar(nifti: Path) -> dict[str, Any]:
    """dcm2niix's JSON sidecar, filtered to ``SIDECAR_ALLOWLIST`` (tolerates its bad escapes)."""
    name = nifti.name[: -len(".nii.gz")] if nifti.name.endswith(".nii.gz") else nifti.stem
    path = nifti.with_name(name + ".json")
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # dcm2niix writes a lone backslash before the closing quote for some values ("Br38f\").
        fixed = re.sub(r'(?<!\\)\\(",?\s*)$', r'\\\\\1', text, flags=re.M)
        try:
            data = json.loads(fixed)
        except json.JSONDecodeError:
            log.warning("dcm2niix sidecar %s is not valid JSON; it is left out", path.name)
            return {}
    return {k: v for k, v in data.items() if k in SIDECAR_ALLOWLIST}


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    zooms: tuple[float, ...]
    affine: np.ndarray


def _read_header(path: Path) -> _Header:
    import nibabel as nib

    img = nib.load(str(path))
    return _Header(tuple(img.shape), tuple(img.header.get_zooms()), img.affine)


def _grid_corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    idx = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)], float)
    world = (affine[:3, :3] @ idx.T).T + affine[:3, 3]
    return world[np.lexsort(np.round(world, 2).T[::-1])]


def same_grid(affine_a: np.ndarray, shape_a: tuple[int, ...], affine_b: np.ndarray, shape_b: tuple[int, ...], atol: float = 1e-3) -> bool:
    """True when two voxel grids cover the same points (any axis order/flip), within ``atol`` mm."""
    if sorted(shape_a[:3]) != sorted(shape_b[:3]):
        return False
    a, b = _grid_corners(affine_a, shape_a), _grid_corners(affine_b, shape_b)
    return bool(np.allclose(a, b, atol=atol))


def _one_uid(values) -> str | None:
    """The UID the series' files share; None when blank or not shared."""
    uids = set(values)
    return uids.pop() or None if len(uids) == 1 else None


def _write_scaled(src: Path, dst: Path, factor: float) -> None:
    import nibabel as nib

    from voxtell.io.nifti import save_nifti_atomic

    img = nib.load(str(src))
    data = (np.asanyarray(img.dataobj, dtype=np.float64) * factor).astype(np.float32)
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.header.set_data_dtype(np.float32)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["descrip"] = b"SUVbw"
    save_nifti_atomic(out, dst)


def _series_record(
    selection: Selection,
    geom: SeriesGeometry,
    tool: Dcm2niix,
    variant: str,
    outputs: list[str],
    shape: tuple[int, ...],
    zooms: tuple[float, ...],
    orient: str,
    warnings: list[str],
    sidecar: dict[str, Any],
    suv: Any,
    affine: np.ndarray,
) -> dict[str, Any]:
    chosen = selection.chosen
    matches = same_grid(affine, shape, geom.affine_ras, geom.shape)
    if variant == "as acquired" and not matches:
        raise ConversionError(
            "dcm2niix's output grid does not match the geometry in the DICOM headers; "
            "the series is unusual (check orientation and positions) and was not converted"
        )
    if variant != "as acquired":
        warnings.append(f"dcm2niix output '{variant}' chosen: its grid is resampled from the acquired slices")
    return {
        "schema_version": SERIES_JSON_VERSION,
        "series_uid": chosen.series_uid,
        "series_uid_inferred": chosen.uid_inferred,
        "study_instance_uid": _one_uid(i.study_uid for i in geom.instances),
        "frame_of_reference_uid": _one_uid(i.frame_of_reference_uid for i in geom.instances),
        "modality": chosen.modality,
        "series_description": chosen.description,
        "image_type": chosen.image_type,
        "slice_count": int(geom.shape[2]),
        "shape": list(shape),
        "spacing_mm": list(zooms),
        "orientation": orient,
        "affine": np.round(affine, 6).tolist(),
        "header_geometry_match": matches,
        "units": _units(chosen.modality, sidecar, suv),
        "suv": suv.to_json() if suv else None,
        "dcm2niix_version": tool.version,
        "dcm2niix_outputs": outputs,
        "dcm2niix_output_chosen": variant,
        "dcm2niix_output_rule": [label for label, _ in _VARIANT_RULE] + ["never ROI/phase/cropped/4-D"],
        "selection_reason": selection.reason,
        "candidates": [c.to_json() for c in selection.candidates],
        "warnings": warnings,
        "acquisition": sidecar,
    }
