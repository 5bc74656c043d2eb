"""Convert stage, one study: DICOM folder -> ``image.nii.gz`` + ``series.json``, or check a
given NIfTI. Always ends with ``status.json`` (ok or failed) so the cohort goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from voxtell.cohort import status as st
from voxtell.cohort.hashing import file_sha256
from voxtell.errors import InputError, VoxTellError

log = logging.getLogger(__name__)

STAGE = "convert"
STATUS_NAME = "status.json"


class BadImageError(InputError):
    """A NIfTI given in the samples table is not a usable 3-D volume."""


def _check_nifti(path: str) -> dict:
    import numpy as np

    from voxtell.io.nifti import load_nifti

    img = load_nifti(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise BadImageError(f"{path} has shape {shape}; give one 3-D volume per study (split 4-D series first)")
    affine = np.asarray(img.affine, dtype=float)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise BadImageError(f"{path} has a non-invertible or non-finite affine; fix its header (qform/sform)")
    return {"shape": list(shape), "spacing": [float(z) for z in img.header.get_zooms()[:3]]}


def run_convert(
    study_id: str,
    out_dir: str | os.PathLike,
    *,
    dicom: str | None = None,
    image: str | None = None,
    modalities: Sequence[str] = ("CT", "MR", "PT"),
    min_slices: int = 10,
    pet_suv: bool = False,
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
            res = convert_study(dicom, out, policy, pet_suv=pet_suv, write_status=False)
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
                warnings=list(res.warnings),
                dcm2niix_version=res.dcm2niix_version,
            )
        elif image:
            facts = _check_nifti(image)
            record = st.ok(study_id, STAGE, image=str(image), series=None, image_sha256=file_sha256(image), **facts)
        else:
            raise BadImageError(f"study {study_id} has neither 'dicom' nor 'image' in the samples table")
    except VoxTellError as exc:
        record = st.failed(study_id, STAGE, exc)
    st.write(out / STATUS_NAME, record)
    return record
