"""PET/CT studies: the PET series beside the segmented CT, converted to body-weight SUV.

Masks are made on the CT (anatomy, finer grid); uptake is measured in the PET of the same
Frame of Reference (same patient position, scanner-registered), resampled onto each mask by
the stats stage. This module finds that PET series, converts it (dcm2niix, SUVbw) into
``<convert dir>/pet/`` (``image.nii.gz`` + ``series.json``) and says what happened. A PET
that cannot give SUV (no weight, dose, injection time; implausible header values) does not
fail the CT study: it is left out with a recorded warning naming the cause, so the SUV
columns stay empty rather than wrong.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voxtell.io.errors import DicomError

log = logging.getLogger(__name__)

PET_DIR = "pet"


@dataclass(frozen=True)
class PetCompanion:
    """The converted PET (None when there is none or it cannot give SUV) and the warnings."""

    image_path: Path | None
    series_uid: str | None
    warnings: tuple[str, ...]


def _chosen_frame(dicom_dir: Path, convert_dir: Path, index) -> str:
    record = json.loads((convert_dir / "series.json").read_text(encoding="utf-8"))
    frame = str(record.get("frame_of_reference_uid") or "")
    if frame:
        return frame
    for series in index.series:  # series.json of an older convert: read the frame from the headers
        if series.series_uid == record.get("series_uid") or series.key == record.get("series_uid"):
            return series.first.frame_of_reference_uid
    return ""


def _attenuation_corrected(series_list: list) -> tuple[list, list[str]]:
    """Keep PET series whose CorrectedImage names ATTN: SUV of non-attenuation-corrected
    images is not quantitative. A series without CorrectedImage is kept, with a warning."""
    import pydicom

    kept, unknown, dropped = [], [], []
    for series in series_list:
        try:
            ds = pydicom.dcmread(series.first.path, stop_before_pixels=True, specific_tags=["CorrectedImage"])
            corrected = {str(v).upper() for v in (ds.get("CorrectedImage") or [])}
        except (OSError, ValueError, TypeError, AttributeError):
            corrected = set()
        if "ATTN" in corrected:
            kept.append(series)
        elif corrected:
            dropped.append(series)
        else:
            unknown.append(series)
    warnings = []
    if dropped:
        warnings.append(f"{len(dropped)} PET series without attenuation correction (CorrectedImage lacks ATTN) not used for SUV")
    if not kept and unknown:
        warnings.append("the PET series does not say whether it is attenuation-corrected (no CorrectedImage); SUV assumes it is")
        kept = unknown
    return kept, warnings


def convert_companion_pet(dicom_dir: str | os.PathLike, convert_dir: str | os.PathLike) -> PetCompanion:
    """Convert the PET series that shares the converted CT's Frame of Reference (see module docstring)."""
    from voxtell.io.convert import convert_study
    from voxtell.io.dicom_index import index_study
    from voxtell.io.selection import SelectionPolicy

    src, conv = Path(dicom_dir), Path(convert_dir)
    out = conv / PET_DIR
    shutil.rmtree(out, ignore_errors=True)  # never keep the PET of an earlier run
    index = index_study(src)
    frame = _chosen_frame(src, conv, index)
    pets = [s for s in index.series if s.modality == "PT"]
    if not pets:
        return PetCompanion(None, None, ())
    same = [s for s in pets if frame and s.first.frame_of_reference_uid == frame]
    if not same:
        return PetCompanion(None, None, (
            f"{len(pets)} PET series in the study, none in the CT's frame of reference "
            f"{frame or '(unknown)'}; no SUV statistics (register the PET to the CT first)",
        ))
    same, ac_warnings = _attenuation_corrected(same)
    if not same:
        return PetCompanion(None, None, tuple(ac_warnings))
    scratch = Path(tempfile.mkdtemp(prefix=".pet-", dir=conv))
    try:
        for series in same:  # only the PET series of this frame take part in the selection
            for n, inst in enumerate(series.instances):
                target = scratch / f"{series.key.replace('/', '_')[-40:]}_{n:05d}.dcm"
                try:
                    os.link(inst.path, target)
                except OSError:
                    shutil.copy2(inst.path, target)
        try:
            res = convert_study(scratch, out, SelectionPolicy(modalities=("PT",), min_slices=2), pet_suv=True)
        except DicomError as exc:
            shutil.rmtree(out, ignore_errors=True)
            return PetCompanion(None, None, (f"PET series not used for SUV statistics: {type(exc).__name__}: {exc}",))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = json.loads(res.series_json_path.read_text(encoding="utf-8"))
    warnings = ac_warnings + [f"PET: {w}" for w in (record.get("suv") or {}).get("warnings", [])]
    if len(same) > 1:
        warnings.append(f"{len(same)} PET series share the CT's frame of reference; used {res.series_uid} ({res.selection_reason})")
    log.info("PET %s converted to SUVbw beside the CT (factor %.6g)", res.series_uid, res.suv_factor or 1.0)
    return PetCompanion(res.image_path, res.series_uid, tuple(warnings))
