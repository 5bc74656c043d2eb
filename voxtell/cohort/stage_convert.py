"""Convert stage: DICOM folder -> ``image.nii.gz`` + ``series.json``, or check a given NIfTI.

One job per shard of studies (``run_convert_shard``), like the other stages, so a cohort of
100,000 studies is a few hundred jobs, not 100,000. Each study ends with ``status.json`` (ok
or failed, with convert's plausibility warnings) and a done marker that vouches for the
study's source files and outputs, so a rerun converts only what changed. Any error from one
study's input, even one the pipeline did not expect, is that study's failed row; the other
studies and the cohort go on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from voxtell.cohort import layout, markers
from voxtell.cohort import status as st
from voxtell.cohort.hashing import file_sha256, stable_hash
from voxtell.cohort.shards import ShardSummary
from voxtell.errors import InputError

log = logging.getLogger(__name__)

STAGE = "convert"
STATUS_NAME = layout.STATUS


class BadImageError(InputError):
    """A NIfTI given in the samples table is not a usable 3-D volume."""


def _check_nifti(path: str) -> dict:
    """The shared usable-volume check (voxtell.io.volume), voxels included: what segment would refuse fails here."""
    from voxtell.io.volume import check_image_file

    facts = check_image_file(path)
    return {"shape": list(facts.shape), "spacing": list(facts.spacing_mm)}


def run_convert(
    study_id: str,
    out_dir: str | os.PathLike,
    *,
    dicom: str | None = None,
    image: str | None = None,
    modalities: Sequence[str] = ("CT", "MR", "PT"),
    min_slices: int = 10,
    pet_suv: bool = False,
    dicom_export: bool = False,
    pet_ct: bool = False,
) -> st.Record:
    """Produce the study's image (or check the given one) and write ``out_dir/status.json``.

    The status details name the image to segment and its sha256, which the segmentation
    step uses to tell whether a study's result is still current.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if dicom:
            from voxtell.io.convert import convert_study
            from voxtell.io.selection import SelectionPolicy

            policy = SelectionPolicy(modalities=tuple(modalities), min_slices=min_slices)
            res = convert_study(dicom, out, policy, pet_suv=pet_suv)
            extra, extra_warnings = {}, []
            if dicom_export:  # the UIDs a DICOM SEG/RTSTRUCT of this study must reference
                from voxtell.io.dicom_ref import DicomReferenceError, write_dicom_reference

                try:
                    extra["dicom_ref"] = str(write_dicom_reference(dicom, out))
                except DicomReferenceError as exc:
                    extra_warnings.append(f"DICOM export will not be possible: {exc}")
            if pet_ct and res.modality != "PT":  # a PET of the same frame of reference: SUV statistics
                from voxtell.io.petct import convert_companion_pet

                pet = convert_companion_pet(dicom, out)
                extra_warnings += list(pet.warnings)
                if pet.image_path is not None:
                    extra["pet_image"] = str(pet.image_path)
            record = st.ok(
                study_id,
                STAGE,
                image=str(res.image_path),
                series=str(res.series_json_path),
                image_sha256=file_sha256(res.image_path),
                modality=res.modality,
                shape=list(res.shape),
                spacing=list(res.spacing),
                orientation=res.orientation,
                warnings=list(res.warnings) + extra_warnings,
                dcm2niix_version=res.dcm2niix_version,
                **extra,
            )
        elif image:
            facts = _check_nifti(image)
            record = st.ok(study_id, STAGE, image=str(image), series=None, image_sha256=file_sha256(image), **facts)
        else:
            raise BadImageError(f"study {study_id} has neither 'dicom' nor 'image' in the samples table")
    except Exception as exc:  # the stage boundary: a study's error is its row (job errors re-raise)
        for name in (layout.IMAGE, layout.SERIES):
            (out / name).unlink(missing_ok=True)
        record = st.study_error(study_id, STAGE, exc)
    st.write(out / STATUS_NAME, record)
    return record


@dataclass(frozen=True)
class ConvertTask:
    study_id: str
    dicom: str | None
    image: str | None
    out_dir: str


def source_fingerprint(path: str | None) -> Any:
    """What the study's source looks like on disk: a file's or every file's (name, size,
    mtime) in a folder, hashed; None when it does not exist (the study fails until it does)."""
    if not path:
        return None
    if os.path.isfile(path):
        return markers.file_stamp(path)
    if not os.path.isdir(path):
        return None
    entries = []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            entries.append((os.path.relpath(full, path), markers.file_stamp(full)))
    return stable_hash(entries, length=32)


def _outputs(out: Path, record: st.Record) -> list[Path]:
    """The files of a study's result that its done marker vouches for."""
    files = [out / STATUS_NAME]
    if st.is_ok(record):
        for key in ("image", "series", "dicom_ref", "pet_image"):
            value = st.details(record).get(key)
            if value and Path(value).is_file():
                files.append(Path(value))
    return files


def run_convert_shard(
    shard: str,
    tasks: Sequence[ConvertTask],
    summary_path: str | os.PathLike,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert every study of the shard whose source, settings or outputs changed."""
    settings = dict(settings or {})
    summary = ShardSummary(STAGE, shard)
    for task in tqdm(tasks, desc=f"convert shard {shard}", unit="study", disable=len(tasks) < 2):
        out = Path(task.out_dir)
        status_path, marker = out / STATUS_NAME, out / markers.MARKER_NAME
        inputs = {"source": task.dicom or task.image, "kind": "dicom" if task.dicom else "image",
                  "fingerprint": source_fingerprint(task.dicom or task.image), "settings": settings}
        previous = st.read(status_path)
        if markers.can_reuse(marker, inputs, previous):
            summary.add(previous, reused=True, study_dir=out)
            continue
        marker.unlink(missing_ok=True)
        record = run_convert(task.study_id, out, dicom=task.dicom, image=task.image, **settings)
        if not st.is_unexpected(record):
            markers.write_marker(marker, inputs, _outputs(out, record))
        summary.add(record, reused=False, study_dir=out)
    return summary.write(summary_path)
