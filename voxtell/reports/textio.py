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


class BinaryReportError(ReportReadError):
    """A file given as a report is not text (an image, a PDF, a DICOM file ...)."""


#: Byte-order marks, longest first (the UTF-32-LE mark starts with the UTF-16-LE one).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
#: Signatures of common binary formats that end up in report folders.
_MAGIC = (b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"PK\x03\x04", b"\x1f\x8b", b"II*\x00", b"MM\x00*",
          b"{\\rtf", b"\xd0\xcf\x11\xe0")
#: Share of control characters (other than white space) above which decoded text is not a report.
_MAX_CONTROL_SHARE = 0.02


def read_report(path: str | os.PathLike) -> str:
    """Read a report as text in any Unicode encoding, with or without byte-order mark.

    UTF-8/16/32 are recognised by their BOM or, without one, by the pattern of NUL bytes
    (ASCII text in UTF-16-LE has a NUL after every letter); text that is not valid UTF-8
    is decoded as Latin-1 with a warning. Binary files raise :class:`BinaryReportError`.
    Line endings are not changed, so offsets into the returned string are stable.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ReportReadError(f"cannot read report {path}: {exc.strerror}; check the path in the samples table") from exc
    return decode_report(data, source=str(path))


def detect_encoding(data: bytes) -> tuple[str, int]:
    """(codec, number of BOM bytes) of report bytes; raises BinaryReportError for non-text."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return codec, len(bom)
    if data.startswith(_MAGIC) or data[128:132] == b"DICM":
        raise BinaryReportError("is a binary file (PDF, image, archive, DICOM or office document), not report text")
    if b"\x00" in data[:4096]:
        head = data[: 4096 - 4096 % 4]
        n = max(len(head), 1)
        # NUL pattern of mostly-ASCII text: UTF-32 has 3 NULs in 4 bytes, UTF-16 one in 2
        zeros = [head[i::4].count(0) / max(len(head[i::4]), 1) for i in range(4)]
        if len(head) >= 4 and zeros[1] > 0.9 and zeros[2] > 0.9:
            return ("utf-32-le" if zeros[3] > 0.9 else "utf-32-be"), 0
        even, odd = head[0::2].count(0) / (n / 2), head[1::2].count(0) / (n / 2)
        if odd > 0.6 and even < 0.1:
            return "utf-16-le", 0
        if even > 0.6 and odd < 0.1:
            return "utf-16-be", 0
        if head.count(0) / n <= _MAX_CONTROL_SHARE:
            # a few stray NULs in 8-bit text: decoded as such; the control-character share
            # of the decoded text (``_refuse_binary``) still decides whether it is text
            return "utf-8", 0
        raise BinaryReportError("contains NUL bytes in no Unicode text pattern: it is a binary file, not report text")
    return "utf-8", 0


def decode_report(data: bytes, source: str = "<bytes>") -> str:
    """Decode report bytes (see :func:`read_report`)."""
    try:
        codec, skip = detect_encoding(data)
    except BinaryReportError as exc:
        raise BinaryReportError(f"report {source} {exc}; give the report as a text file") from None
    if codec == "utf-8":
        try:
            text = data[skip:].decode("utf-8")
        except UnicodeDecodeError as exc:
            log.warning(
                "report %s is not valid UTF-8 (byte 0x%02x at offset %d); decoded as Latin-1 - "
                "save reports as UTF-8 to avoid this",
                source, data[exc.start], exc.start,
            )
            text = data.decode("latin-1")
    else:
        try:
            text = data[skip:].decode(codec)
        except UnicodeDecodeError as exc:
            raise BinaryReportError(
                f"report {source} looks like {codec.upper()} but is not valid {codec.upper()} "
                f"(offset {exc.start}); save it as UTF-8 text"
            ) from None
    _refuse_binary(text, source)
    return text


def _refuse_binary(text: str, source: str) -> None:
    sample = text[:20_000]
    if not sample:
        return
    controls = sum(1 for c in sample if (ord(c) < 32 and c not in "\t\n\r\x0b\x0c") or 0x7F <= ord(c) < 0xA0)
    if controls / len(sample) > _MAX_CONTROL_SHARE:
        raise BinaryReportError(
            f"report {source} is not text ({controls} control characters in its first {len(sample)}); "
            "give the report as a text file"
        )


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
