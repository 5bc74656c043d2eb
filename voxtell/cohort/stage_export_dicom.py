"""Export stage, one study: its masks -> DICOM SEG + RTSTRUCT (``voxtell.io.dicom_export``).

Like every stage it ends with ``status.json`` (ok, failed or skipped), so one study that
cannot be exported (a NIfTI study, a source without UIDs, a failed segmentation) never stops
the others.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from voxtell.cohort import layout
from voxtell.cohort import status as st

log = logging.getLogger(__name__)

STAGE = "export_dicom"
STATUS_NAME = layout.STATUS


def run_export_dicom(study_id: str, segment_dir: str | os.PathLike, dicom: str | None,
                     out_dir: str | os.PathLike) -> st.Record:
    """Write ``out_dir/seg.dcm``, ``rtstruct.dcm``, ``export.json`` and ``status.json``."""
    from voxtell.io.dicom_export import export_study

    out, seg_dir = Path(out_dir), Path(segment_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg = st.read(seg_dir / STATUS_NAME)
    if seg is None or not st.is_ok(seg):
        record = st.skipped(study_id, STAGE, seg, None if seg else "the segment step has not run for this study")
    elif not dicom:
        record = st.skipped(study_id, STAGE, None, "not a DICOM study (NIfTI input): nothing to reference")
    else:
        try:
            result = export_study(seg_dir, dicom, out)
        except Exception as exc:  # the stage boundary: a study's error is its row (job errors re-raise)
            record = st.study_error(study_id, STAGE, exc)
        else:
            record = st.ok(study_id, STAGE, warnings=result.warnings, seg=str(result.seg_path),
                           rtstruct=str(result.rtstruct_path), n_segments=result.n_segments, n_contours=result.n_contours)
    if not st.is_ok(record):
        for name in ("seg.dcm", "rtstruct.dcm", "export.json"):
            (out / name).unlink(missing_ok=True)
    st.write(out / STATUS_NAME, record)
    return record
