"""Tokens, word stems, concept matching, sentences and abbreviation definitions.

Pure Python and regular expressions, built once per process and vocabulary in a few
milliseconds (a spaCy/scispaCy pipeline took ~9 s to build and ran at ~25 reports/s).
Every function works on character offsets of the text it is given, so offsets stay
offsets into the original report.

Matching is by word form: each token is lower-cased and reduced by :func:`stem` (a small
suffix stripper: "consolidative", "consolidated", "consolidations" -> "consolid"), and
hyphens, slashes and spaces between words are equivalent ("free-fluid" = "free fluid").
Abbreviations match case-sensitively on the exact token ("RUL", not "rul").
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from voxtell.reports.config import FindingsConfig
from voxtell.reports.vocabulary import Concept, Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[^\W_]+")
#: What may stand between two words of one term: white space, hyphen, slash.
_JOIN = re.compile(r"[\s\-/\u2010\u2011\u2013]*")

#: Suffix -> replacement, tried in order; both vocabulary terms and report words go through it.
_SUFFIXES = (
    ("ations", ""), ("ation", ""), ("atives", ""), ("ative", ""), ("ated", ""), ("ating", ""),
    ("ings", ""), ("ing", ""), ("ied", "y"), ("ies", "y"), ("sses", "ss"), ("ases", "asis"),
    ("oses", "osis"), ("ed", ""), ("es", "e"), ("s", ""),
)
_KEEP_S = ("ss", "us", "is", "as", "os")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Lower-cased word without its inflection ("nodules" -> "nodul", "fractured" -> "fractur")."""
    w = word.lower()
    if len(w) <= 3 or not w.isalpha():
        return w
    for suffix, repl in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            if suffix == "s" and w.endswith(_KEEP_S):
                continue
            w = w[: -len(suffix)] + repl
            break
    if w.endswith("e") and len(w) > 4:
        w = w[:-1]
    return w


@dataclass(frozen=True)
class Token:
    start: int
    end: int
    text: str
    stem: str


def tokenize(text: str) -> list[Token]:
    """Word tokens (letters and digits; hyphen, slash and punctuation separate)."""
    return [Token(m.start(), m.end(), m.group(), stem(m.group())) for m in _TOKEN.finditer(text)]


@dataclass(frozen=True)
class ConceptMatch:
    """A concept found in a text: character offsets into that text."""

    start: int
    end: int
    concept: Concept
    abbreviation: bool
    #: the matched term is a bare ambiguous word ("primary", "lesion") that counts only in context
    ambiguous: bool = False


@dataclass(eq=False)
class ReportPipeline:
    """The matchers of one vocabulary (build with :func:`build_pipeline`)."""

    vocabulary: Vocabulary
    #: first stem -> [(stems, concept, ambiguous)], longest first
    _terms: dict[str, list[tuple[tuple[str, ...], Concept, bool]]]
    #: first token text -> [(texts, concept)], longest first
    _abbrs: dict[str, list[tuple[tuple[str, ...], Concept]]]
    #: concept for tumour names the vocabulary does not list ("liposarcoma", "schwannoma")
    _tumor: Concept | None = None
    model: str = "rules"

    def match_concepts(self, text: str, tokens: list[Token] | None = None) -> list[ConceptMatch]:
        """Longest non-overlapping concept matches in ``text``, in text order."""
        toks = tokenize(text) if tokens is None else tokens
        out: list[ConceptMatch] = []
        i, n = 0, len(toks)
        while i < n:
            found = self._match_at(text, toks, i)
            if found is None:
                if self._tumor is not None and _is_tumour_name(toks[i].text):
                    out.append(ConceptMatch(toks[i].start, toks[i].end, self._tumor, False))
                i += 1
                continue
            length, concept, abbr, ambiguous = found
            # only the form written "~word" is ambiguous: "lesions" (plural) names findings
            ambiguous = ambiguous and text[toks[i].start : toks[i + length - 1].end].lower() in concept.ambiguous
            out.append(ConceptMatch(toks[i].start, toks[i + length - 1].end, concept, abbr, ambiguous))
            i += length
        return out

    def _match_at(self, text: str, toks: list[Token], i: int):
        best = None
        for stems, concept, ambiguous in self._terms.get(toks[i].stem, ()):
            if _same_run(text, toks, i, len(stems), lambda t: t.stem, stems):
                best = (len(stems), concept, False, ambiguous)
                break
        for texts, concept in self._abbrs.get(toks[i].text, ()):
            if (best is None or len(texts) > best[0]) and _same_run(text, toks, i, len(texts), lambda t: t.text, texts):
                best = (len(texts), concept, True, False)
                break
        return best


#: Words ending in -oma that are not tumours.
_NOT_TUMOUR = frozenset("diploma stoma stomas coma comas aroma glaucoma stroma trachoma soma chromosoma".split())


def _is_tumour_name(word: str) -> bool:
    """"liposarcoma", "schwannomas", "fibromata": a tumour by its suffix (-oma)."""
    w = word.lower()
    return len(w) >= 6 and w.isalpha() and w.endswith(("oma", "omas", "omata")) and w not in _NOT_TUMOUR


def _same_run(text: str, toks: list[Token], i: int, n: int, key, want: tuple[str, ...]) -> bool:
    if i + n > len(toks):
        return False
    for k in range(n):
        if key(toks[i + k]) != want[k]:
            return False
        if k and _JOIN.fullmatch(text, toks[i + k - 1].end, toks[i + k].start) is None:
            return False  # "lymph. Node" is not "lymph node"
    return True


# ---- sentences ---------------------------------------------------------------------------

#: Words after which a full stop does not end a sentence.
_NO_BREAK = frozenset(
    "dr mr mrs ms prof vs approx appr ca cf fig figs eg ie e.g i.e etc no nr st incl max min av resp "
    "sr jr inc ltd pt pts sec seg segs hr mo yr yrs wk wks".split()
)
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
#: Quoted impression items side by side: "Effusion." "Atelectasis."
_QUOTES = re.compile(r"(?<=[\"\u201d])\s+(?=[\"\u201c])")
#: Inline numbered items: "1. Mass ... 2. Nodule ..." (a run of at least two, in order)
_INLINE_NUMBER = re.compile(r"(?:(?<=\s)|^)\(?(\d{1,2})[.)](?=\s+[\"\u201c(]?[A-Za-z])")
#: Inline bullets: " - Effusion", " \u2022 Effusion"
_INLINE_BULLET = re.compile(r"(?<=\S)\s+(?=[\u2022\u00b7\u25cf\u25aa]\s)|(?<=[.;:])\s+(?=-\s+[A-Za-z])")
#: Run-on items without punctuation: "... lower lobe Pleural effusion ..." (capitalised common word)
_RUN_ON = re.compile(r"(?<=[a-z0-9%)])\s+(?=[A-Z][a-z]{2,}\b)")
_PROPER = frozenset(
    "hounsfield bosniak couinaud lugano deauville fleischner recist percist gleason pi-rads li-rads bi-rads "
    "january february march april may june july august september october november december monday tuesday "
    "wednesday thursday friday saturday sunday gy suv ct mri pet dr doctor hospital the of and with in".split()
)
_RUN_ON_BEFORE = frozenset(
    "the a an of in at on to and or with without by from for is are was were as into within than "
    "dr doctor seen noted".split()
)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of one paragraph, white space trimmed, offsets into ``text``."""
    cuts = {0, len(text)}
    numbers = [(int(m.group(1)), m.start(), m.end()) for m in _INLINE_NUMBER.finditer(text)]
    markers: set[int] = set()  # ends of inline list numbers ("2." of "... RUL 2. Nodule")
    for k in range(1, len(numbers)):
        if numbers[k][0] == numbers[k - 1][0] + 1:
            for num in (numbers[k - 1], numbers[k]):
                markers.add(num[2])
                if num[1] > 0:
                    cuts.add(num[1])
    for m in _END.finditer(text):
        if m.start() + 1 in markers:
            continue
        before = text[: m.start()].rsplit(None, 1)
        word = before[-1].lower().rstrip(".") if before else ""
        nxt = text[m.end() :].lstrip()[:1]
        if not nxt or word in _NO_BREAK or (len(word) == 1 and word.isalpha() and m.group().startswith(".")):
            continue
        if m.group()[0] == "." and word.isdigit() and len(word) <= 2 and text[: m.start()].strip() == word:
            continue  # "1. Mass": a list number, not an end
        if nxt.isalpha() or nxt.isdigit() or nxt in "\"'\u201c(-\u2022[":
            cuts.add(m.end())
    for m in _QUOTES.finditer(text):
        cuts.add(m.start())
    for m in _INLINE_BULLET.finditer(text):
        cuts.add(m.start())
    for m in _RUN_ON.finditer(text):
        nxt = text[m.end() :].split(None, 1)[0].strip(".,;:").lower()
        prev = text[: m.start()].rsplit(None, 1)[-1].lower()
        if nxt not in _PROPER and prev not in _RUN_ON_BEFORE and not prev.isdigit() and not text[m.end() :].startswith(("I ", "II")):
            cuts.add(m.start())
    spans = []
    bounds = sorted(cuts)
    for a, b in zip(bounds, bounds[1:]):
        seg = text[a:b]
        s = a + (len(seg) - len(seg.lstrip()))
        e = a + len(seg.rstrip())
        if e > s:
            spans.append((s, e))
    return spans


# ---- abbreviations defined in the report ("right upper lobe (RUL)") -----------------------

_DEFINITION = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9\-]{1,9})\s*\)")


def defined_abbreviations(text: str) -> dict[str, str]:
    """Short form -> long form for "long form (SF)" where the initials of the long form spell SF."""
    out: dict[str, str] = {}
    for m in _DEFINITION.finditer(text):
        short = m.group(1)
        letters = [c.lower() for c in short if c.isalpha()]
        if len(letters) < 2 or not any(c.isupper() for c in short):
            continue
        words = list(re.finditer(r"[^\W_]+", text[max(0, m.start() - 120) : m.start()]))
        base = max(0, m.start() - 120)
        for n in range(len(letters), min(len(letters) + 3, len(words)) + 1):
            cand = words[-n:]
            initials = [w.group()[0].lower() for w in cand if w.group().lower() not in ("of", "the", "and", "in")]
            if initials == letters:
                long = text[base + cand[0].start() : base + cand[-1].end()]
                out[short] = " ".join(long.split())
                break
    return out


# ---- building -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _build(vocabulary_path: str, vocab_sha: str) -> ReportPipeline:
    vocabulary = load_vocabulary(vocabulary_path)
    terms: dict[str, list] = {}
    abbrs: dict[str, list] = {}
    for concept in vocabulary.concepts:
        for term in concept.terms:
            stems = tuple(t.stem for t in tokenize(term))
            if stems:
                ambiguous = term in concept.ambiguous
                terms.setdefault(stems[0], []).append((stems, concept, ambiguous))
        for abbr in concept.abbreviations:
            texts = tuple(t.text for t in tokenize(abbr))
            if texts:
                abbrs.setdefault(texts[0], []).append((texts, concept))
    for table in (terms, abbrs):
        for key, items in table.items():
            # longest first; among equals the first concept listed wins
            table[key] = _dedupe(sorted(items, key=lambda it: -len(it[0])))
    log.info("built report pipeline: %d concepts, %d term heads", len(vocabulary.concepts), len(terms))
    tumor = next((c for c in vocabulary.concepts if c.name == "tumor"), None)
    return ReportPipeline(vocabulary, terms, abbrs, tumor)


def _dedupe(items: list) -> list:
    seen, out = set(), []
    for it in items:
        if it[0] not in seen:
            seen.add(it[0])
            out.append(it)
    return out


def build_pipeline(config: FindingsConfig) -> ReportPipeline:
    """The pipeline for ``config``, built once per process (cached on the vocabulary's hash)."""
    if config.spacy_model:
        _warn_spacy_model(config.spacy_model)
    path = Path(config.vocabulary_path)
    vocabulary = load_vocabulary(path)
    return _build(str(path.resolve()), vocabulary.sha256)


@functools.lru_cache(maxsize=8)
def _warn_spacy_model(name: str) -> None:
    log.warning(
        "findings.spacy_model=%r is no longer used: finding extraction has its own tokenizer, "
        "stemmer and sentence splitter (remove the setting to silence this)", name,
    )


def pipeline_versions(config: FindingsConfig) -> dict[str, str]:
    """Versions and checksums that identify how findings were made (for manifests)."""
    from importlib.metadata import PackageNotFoundError, version

    pipe = build_pipeline(config)
    try:
        own = version("voxtell")
    except PackageNotFoundError:
        own = "unknown"
    return {
        "voxtell": own,
        "model": pipe.model,
        "vocabulary": pipe.vocabulary.path,
        "vocabulary_sha256": pipe.vocabulary.sha256,
    }
