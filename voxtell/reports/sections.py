"""Report layout: section headers, paragraphs and list items, as character spans.

Radiology and radiotherapy reports are semi-structured: a header ("FINDINGS:",
"Impression", "GTV description -") starts a section, possibly with text on the same line;
organ labels ("Liver: ...") and numbered or bulleted items start new paragraphs inside a
section; fixed-width exports wrap sentences over several lines. This module turns the
working text (see :func:`voxtell.reports.textio.analysis_text`) into :class:`Block` spans
without changing a character, so sentence offsets stay offsets into the original report.

Organ-system subheadings inside a section ("Mediastinum and lymph nodes:", "LIVER:",
"Lungs and pleura: ...") are labels, not text: the block starts after the colon and keeps
the label's span in :attr:`Block.label`, so a subheading that names a concept ("lymph
nodes") can never become a finding by itself. A label on its own line applies to the
blocks below it until the next label, section header or blank line, or a paragraph after
the list items it introduced; a label followed by
text on the same line applies to that paragraph only. Radiotherapy target labels ("GTV:",
"CTV-HR:") are not subheadings: they name the target the sentence describes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

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
        "request", "question", "clinical data", "referral", "reason",
    ),
    "technique": (
        "technique", "techniques", "protocol", "procedure", "exam", "examination", "study",
        "contrast", "radiopharmaceutical", "acquisition", "method", "methods",
        "dose", "prescription", "fractionation", "imaging technique", "scan",
        "organs at risk", "oars", "oar", "examination performed", "exam performed",
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
#: "Lungs and pleura:", "LIVER:", "Head and neck:" at the start of a line (after a list marker).
_SUBHEADING = re.compile(r"(?P<label>[A-Za-z][A-Za-z0-9 ,/&()'\-]{0,44}?)[ \t]*:(?=[ \t]|$)")
#: Radiotherapy target labels stay part of the sentence ("GTV: 1.9 cm nodule", "CTV-HR: ...").
_TARGET_LABEL = re.compile(r"(?:[GCPI]TV|IGTV|boost)\w*(?:[ _\-]\w+){0,3}", re.IGNORECASE)
#: Words that make a "label:" a clause ("There are two lesions:"), not a subheading.
_CLAUSE_WORDS = frozenset(
    "there here is are was were be been the a an this these those it its has have had with without "
    "measuring measures shows show showed demonstrates demonstrate seen noted no not note which that "
    "following follows including include includes see".split()
)
_MAX_LABEL_WORDS = 6
#: Sections that an organ subheading after a blank line ends (the findings follow without a header).
_PREAMBLE = frozenset({"history", "technique", "comparison"})
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
    #: (start, end) of the organ-system subheading that applies to this block, without its
    #: colon ("Liver" of "Liver: 2 cm lesion." or of a "LIVER:" line above), else None.
    label: tuple[int, int] | None = None
    #: True when the label stands on its own line above the block (a list lead such as
    #: "Pulmonary nodules:" above "- RUL 11 mm"), False when it starts the block's line.
    label_above: bool = False


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


def subheading_span(work: str, offset: int, line_end: int) -> tuple[int, int] | None:
    """Span of an organ-system subheading at ``offset`` ("Lungs and pleura" of "Lungs and
    pleura: ..."), or None when the text there is a clause, a target label or a section header."""
    m = _SUBHEADING.match(work, offset, line_end)
    if not m:
        return None
    label = m.group("label").strip()
    words = re.findall(r"[A-Za-z']+", label.lower())
    if not words or len(words) > _MAX_LABEL_WORDS or _CLAUSE_WORDS.intersection(words):
        return None
    if _TARGET_LABEL.fullmatch(label) or header_section(label) is not None:
        return None
    return m.start("label"), m.start("label") + len(label)


#: A header inside a line: after 2+ spaces (fixed-width exports) or after a sentence end.
_INLINE_HEADER = re.compile(r"(?:(?<=\S)[ \t]{2,}|(?<=[.!?])[ \t]+)(?P<h>[A-Za-z][A-Za-z /&()\-]{2,40}?)[ \t]*:(?=[ \t])")


def break_inline_headers(work: str) -> str:
    """Same-length copy where a known section header inside a line starts a new line.

    "HISTORY: pain.  FINDINGS: 2 cm mass." and "... weight loss. Findings: ..." are two
    sections; the space before the header becomes a line break (offsets do not move).
    """
    chars = None
    for m in _INLINE_HEADER.finditer(work):
        phrase = m.group("h")
        if header_section(phrase) is None or not (phrase[0].isupper()):
            continue
        if chars is None:
            chars = list(work)
        chars[m.start("h") - 1] = "\n"
    return work if chars is None else "".join(chars)


def split_blocks(work: str, max_block_chars: int = 4_000) -> list[Block]:
    """Split the working text into blocks with their section (see module docstring)."""
    original, work = work, break_inline_headers(work)
    blocks: list[Block] = []
    section = "body"
    inline_preamble = False  # "... CLINICAL HISTORY: pain." inside a line: ends with that line
    cur: list | None = None  # [start, end, label, label_above]
    cur_kind = "paragraph"
    prev_line = ""
    title: Block | None = None  # first line without final punctuation, before any header
    above: tuple[int, int] | None = None  # a subheading on its own line ("LIVER:")
    above_used: str | bool = False  # kind of the last block under ``above`` (False: none yet)

    def flush() -> None:
        nonlocal cur
        if cur is not None and cur[1] > cur[0]:
            block = Block(cur[0], cur[1], section, cur_kind, cur[2], cur[3])
            blocks.extend(_cut(work, block, max_block_chars))
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
        joined = start > 0 and original[start - 1] != "\n"  # a line break made by break_inline_headers
        if inline_preamble and not joined:
            flush()
            section, inline_preamble = "body", False
        if not stripped:
            flush()
            if above_used:
                above = None
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
        label: tuple[int, int] | None = None
        if header and new_section is not None:
            flush()
            if title is not None and title in blocks:
                blocks.remove(title)  # "MRI brain tumour protocol" was the report's title
            title = None
            section = new_section
            inline_preamble = joined and section in _PREAMBLE
            above = None
            offset = header.end()
            while offset < line_end and work[offset] in " \t":
                offset += 1
            if offset >= line_end:
                prev_line = ""
                continue
            kind = "paragraph"
        else:
            label = subheading_span(work, offset, line_end)
            if label is not None:
                flush()
                offset = label[1] + 1  # past the colon
                while offset < line_end and work[offset] in " \t":
                    offset += 1
                if offset >= line_end:  # "LIVER:" alone: labels the blocks below
                    if section in _PREAMBLE and not prev_line.strip():
                        section = "body"  # "Request: ...\n\nThorax:": the findings start without a header
                    above, above_used = label, False
                    prev_line = line
                    continue
                above = None  # "Spleen: normal." ends the scope of a "LIVER:" line above
            elif section == "body" and kind == "paragraph" and not blocks and cur is None and _is_title(stripped):
                prev_line = ""  # report title ("CT CHEST WITH CONTRAST"): not a finding
                continue
        content_end = start + len(line.rstrip())
        continues = (
            cur is not None
            and label is None
            and kind == "paragraph"
            and not _LABEL.match(work, offset, line_end)
            and not _TERMINAL.search(prev_line)
            and (work[offset].islower() or prev_line.rstrip().endswith((",", "-")) or prev_line.split()[-1].lower() in _JOINERS)
        )
        if continues:
            cur[1] = content_end
        else:
            flush()
            if not blocks and cur is None and section == "body" and label is None and above is None \
                    and not _TERMINAL.search(stripped) and len(stripped) <= 80:
                title = Block(offset, content_end, section, kind)
            if label is not None:
                cur = [offset, content_end, label, False]
            elif above is not None and not (kind == "paragraph" and above_used == "item"):
                cur = [offset, content_end, above, True]
                above_used = kind  # truthy: a blank line now ends the scope
            elif above is not None:
                # a paragraph after the list under "Pulmonary nodules:" is outside the list
                above = None
                cur = [offset, content_end, None, False]
            else:
                cur = [offset, content_end, None, False]
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
        pieces.append(replace(block, start=start, end=start + cut + 1))
        start += cut + 1
        while start < block.end and work[start].isspace():
            start += 1
    if start < block.end:
        pieces.append(replace(block, start=start))
    return pieces
