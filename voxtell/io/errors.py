"""Typed errors of the DICOM stage.

Each one is an ``InputError``: a bad study becomes a status row (``status.json``) and the
cohort goes on. Messages say what was found and what the user can do about it.
"""

from __future__ import annotations

from voxtell.errors import InputError


class DicomError(InputError):
    """Base class of every error raised while reading or converting a DICOM study."""


class NoImageSeriesError(DicomError):
    """The folder holds no DICOM image series at all (empty, only SR/RTSTRUCT/other files)."""


class NoUsableSeriesError(DicomError):
    """Image series exist but none passes the selection policy (single slice, localizers, modality)."""


class CorruptDicomError(DicomError):
    """A DICOM file is truncated or cannot be parsed."""


class InconsistentSeriesError(DicomError):
    """A series mixes orientations, sizes or spacings, or repeats slice positions."""


class MissingSlicesError(InconsistentSeriesError):
    """Gaps in the slice positions that are whole multiples of the slice spacing."""


class ConversionError(DicomError):
    """dcm2niix failed or wrote nothing usable for the chosen series."""


class SuvError(DicomError):
    """A PET series lacks what body-weight SUV needs (units, weight, dose, times)."""


class RTStructError(DicomError):
    """An RTSTRUCT is unreadable, empty, or does not belong to the given image."""


class NiftiError(InputError):
    """A NIfTI file is missing, unreadable or malformed."""
