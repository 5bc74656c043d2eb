"""The one file checksum of the project: sha256 of a file's bytes, streamed.

Model checkpoints (GBs), converted images, reports and vocabularies are all identified by
this digest, so a model's sha256 recorded at training, checked at loading and compared by
the workflow is the same number everywhere. Kept free of heavy imports: the workflow calls
it while it builds the DAG.
"""

from __future__ import annotations

import hashlib
import os

#: Read size: large enough for fast hashing of multi-GB checkpoints, small enough for memory.
BLOCK_SIZE = 8 * 1024 * 1024


def file_sha256(path: str | os.PathLike) -> str:
    """Full hex sha256 of the file at ``path`` (``OSError`` if it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()
