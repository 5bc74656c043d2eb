"""Reading report files and making a same-length working copy of their text.

Offsets in ``findings.jsonl`` index the report text *as returned by* :func:`read_report`:
decoded, with a leading byte-order mark removed and line endings left as they were (CRLF
stays CRLF). Analysis runs on :func:`analysis_text`, which replaces carriage returns,
control characters and stray BOMs by white space **one character for one**, so every
offset found in the working copy is also an offset into the original.
"""

from __future__ import annotations

import codecs
import logging
import os
import re

from voxtell.errors import InputError

log = logging.getLogger(__name__)


class ReportReadError(InputError):
    """A report file is missing or cannot be read."""


def read_report(path: str | os.PathLike) -> str:
    """Read a report as text: UTF-8 (BOM stripped), UTF-16 with BOM, else Latin-1 with a warning.

    Line endings are not changed, so offsets into the returned string are stable.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ReportReadError(f"cannot read report {path}: {exc.strerror}; check the path in the samples table") from exc
    return decode_report(data, source=str(path))


def decode_report(data: bytes, source: str = "<bytes>") -> str:
    """Decode report bytes (see :func:`read_report`)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning(
            "report %s is not valid UTF-8 (byte 0x%02x at offset %d); decoded as Latin-1 - "
            "save reports as UTF-8 to avoid this",
            source,
            data[exc.start],
            exc.start,
        )
        return data.decode("latin-1")


_CR_LF = re.compile(r"\r(?=\n)")
_VERTICAL = re.compile(r"[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\ufeff\u200b\xa0]")


def analysis_text(text: str) -> str:
    """Same-length working copy: CR of CRLF -> space, other line breaks -> LF, controls -> space."""
    work = _CR_LF.sub(" ", text)
    work = _VERTICAL.sub("\n", work)
    work = _CONTROL.sub(" ", work)
    assert len(work) == len(text)
    return work
