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


class HeaderValueError(DicomError):
    """A header value the image needs is missing, malformed or implausible (spacing 0, slope 0, ...)."""


class MultiFrameError(DicomError):
    """The image series is stored as enhanced multi-frame objects, which this stage does not convert."""


class MixedStudyError(DicomError):
    """The study folder holds images of several patients or several studies."""


class ImplausibleValuesError(DicomError):
    """The converted voxel values lie outside what the modality can produce (e.g. HU of 1e9)."""


class ConversionError(DicomError):
    """dcm2niix failed or wrote nothing usable for the chosen series."""


class SuvError(DicomError):
    """A PET series lacks what body-weight SUV needs (units, weight, dose, times)."""


class RTStructError(DicomError):
    """An RTSTRUCT is unreadable, empty, or does not belong to the given image."""


class NiftiError(InputError):
    """A NIfTI file is missing, unreadable or malformed."""


class VolumeError(InputError):
    """An image is not a usable 3-D volume (see ``voxtell.io.volume``); one check for every stage."""


class VolumeShapeError(VolumeError):
    """The image is not a single 3-D volume of at least the minimum size (2-D slice, 4-D, vector)."""


class VolumeGeometryError(VolumeError):
    """The voxel-to-world affine is not finite or not invertible, or a voxel size is zero/absurd."""


class NonFiniteVolumeError(VolumeError):
    """The image holds NaN or infinite voxels."""


class EmptyVolumeError(VolumeError):
    """Every voxel has the same value (all zero): nothing to crop to or normalise."""
