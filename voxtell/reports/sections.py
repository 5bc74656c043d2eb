"""Report layout: section headers, paragraphs and list items, as character spans.

Radiology and radiotherapy reports are semi-structured: a header ("FINDINGS:",
"Impression", "GTV description -") starts a section, possibly with text on the same line;
organ labels ("Liver: ...") and numbered or bulleted items start new paragraphs inside a
section; fixed-width exports wrap sentences over several lines. This module turns the
working text (see :func:`voxtell.reports.textio.analysis_text`) into :class:`Block` spans
without changing a character, so sentence offsets stay offsets into the original report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Header phrase (lower case, single spaces) -> canonical section name.
HEADERS: dict[str, str] = {}
_SECTION_WORDS = {
    "findings": (
        "findings", "finding", "report", "results", "observations", "description",
        "ct findings", "mr findings", "mri findings", "pet findings", "pet/ct findings",
        "pet-ct findings", "ct chest findings", "detailed findings",
    ),
    "impression": (
        "impression", "impressions", "summary", "opinion", "interpretation", "assessment",
    ),
    "conclusion": ("conclusion", "conclusions", "final conclusion"),
    "target": (
        "target", "targets", "target volume", "target volumes", "target description",
        "target definition", "target delineation", "target volume description",
        "target volume definition", "gtv description", "gtv definition", "ctv description",
        "radiotherapy target", "radiotherapy targets", "treatment volumes", "contouring",
        "contours", "volumes", "gross tumor volume", "gross tumour volume",
        "clinical target volume", "planning target volume", "tumor description",
        "tumour description",
    ),
    "history": (
        "history", "clinical history", "indication", "indications", "clinical indication",
        "clinical indications", "clinical information", "clinical details", "clinical",
        "reason for exam", "reason for examination", "reason for study", "reason for referral",
        "clinical question", "hx", "background", "diagnosis", "diagnoses", "patient history",
    ),
    "technique": (
        "technique", "techniques", "protocol", "procedure", "exam", "examination", "study",
        "contrast", "radiopharmaceutical", "acquisition", "method", "methods",
        "dose", "prescription", "fractionation", "imaging technique", "scan",
        "organs at risk", "oars", "oar",
    ),
    "comparison": ("comparison", "comparisons", "prior", "priors", "prior studies", "previous studies", "compared with", "compared to"),
    "recommendation": (
        "recommendation", "recommendations", "recommended", "follow-up", "follow up",
        "advice", "plan", "suggestion", "suggestions",
    ),
    "addendum": ("addendum",),
    "signature": ("signed", "electronically signed", "dictated by", "reported by", "signed by", "verified by"),
}
for _section, _words in _SECTION_WORDS.items():
    for _word in _words:
        HEADERS[_word] = _section

_LIST_MARKER = re.compile(r"[ \t]*(?:[-*\u2022\u00b7\u2023\u25aa\u2013\u25cf>]|\(?\d{1,2}[.)]|\(?[a-hA-H][.)])[ \t]+")
_HEADER = re.compile(r"(?P<h>[A-Za-z][A-Za-z /&()\-]{0,48}?)[ \t]*(?::|[ \t][-\u2013][ \t]|$)")
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9 /&()_\-]{0,38}:[ \t]")
_TERMINAL = re.compile(r"[.!?:;][\"')\]]*[ \t]*$")
_JOINERS = {
    "the", "a", "an", "of", "in", "at", "on", "to", "and", "or", "with", "without", "by",
    "from", "for", "is", "are", "was", "were", "measuring", "into", "which", "within", "as",
}


@dataclass(frozen=True)
class Block:
    """A paragraph or list item: text[start:end] of one section (header and list marker excluded)."""

    start: int
    end: int
    section: str
    kind: str  # "paragraph" or "item"


def header_section(phrase: str) -> str | None:
    """Canonical section of a header phrase, or None if it is not a known header."""
    key = re.sub(r"\s+", " ", phrase.strip().lower()).strip(" -")
    if key in HEADERS:
        return HEADERS[key]
    for part in re.split(r"\s*(?:/|&|\band\b)\s*", key):  # "Clinical history/indication"
        if part in HEADERS:
            return HEADERS[part]
    return None


def _is_title(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return bool(letters) and not any(c.islower() for c in letters) and not _TERMINAL.search(line) and len(line) <= 100


def split_blocks(work: str, max_block_chars: int = 4_000) -> list[Block]:
    """Split the working text into blocks with their section (see module docstring)."""
    blocks: list[Block] = []
    section = "body"
    cur: list[int] | None = None  # [start, end, kind]
    cur_kind = "paragraph"
    prev_line = ""
    title: Block | None = None  # first line without final punctuation, before any header

    def flush() -> None:
        nonlocal cur
        if cur is not None and cur[1] > cur[0]:
            blocks.extend(_cut(work, Block(cur[0], cur[1], section, cur_kind), max_block_chars))
        cur = None

    pos = 0
    n = len(work)
    while pos < n:
        nl = work.find("\n", pos)
        line_end = n if nl < 0 else nl
        line = work[pos:line_end]
        start = pos
        pos = line_end + 1
        stripped = line.strip()
        if not stripped:
            flush()
            prev_line = ""
            continue
        offset = start + (len(line) - len(line.lstrip()))
        kind = "paragraph"
        marker = _LIST_MARKER.match(work, offset, line_end)
        if marker:
            offset = marker.end()
            kind = "item"
        header = _HEADER.match(work, offset, line_end)
        new_section = header_section(header.group("h")) if header else None
        if header and new_section is not None:
            flush()
            if title is not None and title in blocks:
                blocks.remove(title)  # "MRI brain tumour protocol" was the report's title
            title = None
            section = new_section
            offset = header.end()
            while offset < line_end and work[offset] in " \t":
                offset += 1
            if offset >= line_end:
                prev_line = ""
                continue
            kind = "paragraph"
        elif section == "body" and kind == "paragraph" and not blocks and cur is None and _is_title(stripped):
            prev_line = ""  # report title ("CT CHEST WITH CONTRAST"): not a finding
            continue
        content_end = start + len(line.rstrip())
        continues = (
            cur is not None
            and kind == "paragraph"
            and not _LABEL.match(work, offset, line_end)
            and not _TERMINAL.search(prev_line)
            and (work[offset].islower() or prev_line.rstrip().endswith((",", "-")) or prev_line.split()[-1].lower() in _JOINERS)
        )
        if continues:
            cur[1] = content_end
        else:
            flush()
            if not blocks and cur is None and section == "body" and not _TERMINAL.search(stripped) and len(stripped) <= 80:
                title = Block(offset, content_end, section, kind)
            cur = [offset, content_end]
            cur_kind = kind
        prev_line = line
    flush()
    return blocks


def _cut(work: str, block: Block, limit: int) -> list[Block]:
    """Cut an over-long block at sentence ends or white space so each piece is <= limit chars."""
    if block.end - block.start <= limit:
        return [block]
    pieces = []
    start = block.start
    while block.end - start > limit:
        window = work[start : start + limit]
        cut = max(window.rfind(". "), window.rfind("; "))
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit - 1
        pieces.append(Block(start, start + cut + 1, block.section, block.kind))
        start += cut + 1
        while start < block.end and work[start].isspace():
            start += 1
    if start < block.end:
        pieces.append(Block(start, block.end, block.section, block.kind))
    return pieces
