"""The RT Structure Set modules both RTSTRUCT writers share (export and synthetic studies).

``voxtell.io.dicom_export`` writes the pipeline's masks, ``voxtell.io.dicom_write`` writes
test and demo studies; both describe ROIs as closed planar contours that each name the
source slice they lie on, and both reference the whole source series.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Detached Study Management SOP Class: what RTReferencedStudySequence items reference.
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"


@dataclass(frozen=True)
class RoiContours:
    """One ROI: closed planar contours as (N x 3 LPS points, SOP instance UID of their slice)."""

    name: str
    contours: Sequence[tuple[np.ndarray, str]]
    description: str | None = None
    algorithm: str = "AUTOMATIC"  # ROIGenerationAlgorithm: AUTOMATIC, SEMIAUTOMATIC or MANUAL
    algorithm_description: str | None = None
    interpreted_type: str = ""  # RTROIInterpretedType (type 2: may be empty)
    colour: tuple[int, int, int] = (255, 0, 0)


def _image_ref(sop_class: str, sop: str) -> Any:
    import pydicom

    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop
    return item


def add_structure_set(
    ds: Any, *, frame_uid: str, study_uid: str, series_uid: str, sop_class: str, sop_uids: Sequence[str],
    rois: Sequence[RoiContours], number_format: Any = str,
) -> int:
    """Fill the referenced frame/series, ROI, ROI contour and RT ROI observation sequences of
    ``ds``; ``number_format`` turns a coordinate into a DS string. Returns the contour count."""
    import pydicom
    from pydicom.sequence import Sequence as Seq

    rt_series = pydicom.Dataset()
    rt_series.SeriesInstanceUID = series_uid
    rt_series.ContourImageSequence = Seq([_image_ref(sop_class, s) for s in sop_uids])
    rt_study = pydicom.Dataset()
    rt_study.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    rt_study.ReferencedSOPInstanceUID = study_uid
    rt_study.RTReferencedSeriesSequence = Seq([rt_series])
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = Seq([rt_study])
    ds.ReferencedFrameOfReferenceSequence = Seq([frame])

    roi_seq, contour_seq, obs_seq = Seq(), Seq(), Seq()
    n_contours = 0
    for number, r in enumerate(rois, start=1):
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = r.name
        if r.description:
            roi.ROIDescription = r.description
        roi.ROIGenerationAlgorithm = r.algorithm
        if r.algorithm_description:
            roi.ROIGenerationDescription = r.algorithm_description
        roi_seq.append(roi)
        item = pydicom.Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = list(r.colour)
        contours = Seq()
        for points, sop in r.contours:
            pts = np.asarray(points, dtype=float).reshape(-1, 3)
            c = pydicom.Dataset()
            c.ContourImageSequence = Seq([_image_ref(sop_class, sop)])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourNumber = len(contours) + 1
            c.ContourData = [number_format(float(v)) for v in pts.ravel()]
            contours.append(c)
        if len(contours):
            item.ContourSequence = contours
        n_contours += len(contours)
        contour_seq.append(item)
        obs = pydicom.Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = r.interpreted_type
        obs.ROIInterpreter = ""
        obs_seq.append(obs)
    ds.StructureSetROISequence = roi_seq
    ds.ROIContourSequence = contour_seq
    ds.RTROIObservationsSequence = obs_seq
    return n_contours
