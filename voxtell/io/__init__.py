"""Input and output: DICOM discovery and conversion, NIfTI I/O, manifests, atomic writes.

Public API (imported lazily so that ``voxtell --help`` does not import pydicom or nibabel):
``convert_study``, ``ConversionResult`` (convert); ``index_study``, ``select_series``,
``SelectionPolicy`` (DICOM discovery); ``read_rtstruct``, ``rasterise_rtstruct``
(RTSTRUCT); ``export_study`` (DICOM SEG + RTSTRUCT export), ``write_dicom_reference``
(``dicom_ref.json``), ``draw_rt_references`` (RT objects of a study folder),
``convert_companion_pet`` (PET/CT); ``load_nifti``, ``open_image``, ``read_voxels``, ``save_nifti_atomic``,
``nifti_stem`` (NIfTI); ``atomic_path``, ``write_json_atomic``, ``write_text_atomic``
(atomic writes); ``check_header``, ``check_voxels``, ``check_image``, ``check_image_file``
(the one usable-volume check, volume); typed errors (errors).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "convert_study": "convert", "ConversionResult": "convert",
    "index_study": "dicom_index", "StudyIndex": "dicom_index",
    "select_series": "selection", "SelectionPolicy": "selection",
    "read_rtstruct": "rtstruct", "rasterise_rtstruct": "rtstruct",
    "export_study": "dicom_export", "write_dicom_reference": "dicom_ref", "draw_rt_references": "rt_objects",
    "convert_companion_pet": "petct",
    "load_nifti": "nifti", "open_image": "nifti", "read_voxels": "nifti", "save_nifti_atomic": "nifti",
    "nifti_stem": "nifti",
    "atomic_path": "atomic", "write_json_atomic": "atomic", "write_text_atomic": "atomic",
    "DicomError": "errors", "NoImageSeriesError": "errors", "NoUsableSeriesError": "errors",
    "CorruptDicomError": "errors", "InconsistentSeriesError": "errors", "MissingSlicesError": "errors",
    "ConversionError": "errors", "SuvError": "errors", "RTStructError": "errors", "NiftiError": "errors",
    "HeaderValueError": "errors", "MultiFrameError": "errors", "MixedStudyError": "errors",
    "ImplausibleValuesError": "errors", "VolumeError": "errors", "VolumeShapeError": "errors",
    "VolumeGeometryError": "errors", "NonFiniteVolumeError": "errors", "EmptyVolumeError": "errors",
    "check_study": "dicom_index",
    "check_header": "volume", "check_voxels": "volume", "check_image": "volume", "check_image_file": "volume",
    "VolumeLimits": "volume",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"voxtell.io.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'voxtell.io' has no attribute {name!r}")
