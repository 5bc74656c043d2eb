"""Typed errors of the statistics stage; each becomes a status row, never a traceback."""

from __future__ import annotations

from voxtell.errors import InputError


class MissingImageError(InputError):
    """The image (or a mask or reference file) does not exist or cannot be read."""


class GridMismatchError(InputError):
    """A mask and its image are not on the same voxel grid (shape or affine differ)."""


class NonBinaryMaskError(InputError):
    """A mask holds values other than 0 and 1."""


class ManifestError(InputError):
    """The mask folder's manifest.json is missing fields or unreadable."""


class ReferenceMapError(InputError):
    """The reference mapping (prompt -> reference mask) is malformed."""


class SchemaMismatchError(InputError):
    """A Parquet part cannot be converted to the statistics or status schema."""


class DuplicateRowError(InputError):
    """Two parts hold a row for the same (study_id, prompt_id, finding_id)."""
