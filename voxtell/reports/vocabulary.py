"""The findings vocabulary: anatomical and pathological concepts with synonyms.

The vocabulary is data (``config/concepts.tsv``), so a research group adapts it to its
cohort without touching code. Its SHA-256 is recorded with the outputs: a changed
vocabulary changes which sentences are findings.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from voxtell.errors import ConfigError

CATEGORIES = ("anatomy", "finding", "target")


class VocabularyError(ConfigError):
    """The vocabulary file is missing or malformed."""


@dataclass(frozen=True)
class Concept:
    """One canonical concept; ``terms`` are matched case-insensitively, ``abbreviations`` exactly."""

    name: str
    category: str
    terms: tuple[str, ...]
    abbreviations: tuple[str, ...]
    #: terms written "~word" in the vocabulary: bare ambiguous words ("primary", "lesion")
    #: that make a finding only next to a site, a size or another finding
    ambiguous: frozenset[str] = frozenset()

    @property
    def is_finding(self) -> bool:
        """Findings and radiotherapy targets make a sentence a finding; anatomy alone does not."""
        return self.category != "anatomy"


@dataclass(frozen=True)
class Vocabulary:
    concepts: tuple[Concept, ...]
    sha256: str
    path: str

    def abbreviation_map(self) -> dict[str, str]:
        """Abbreviation -> long form (the concept name), for prompt expansion."""
        return {abbr: c.name for c in self.concepts for abbr in c.abbreviations}


def plural_forms(term: str) -> list[str]:
    """English plurals of the last word ("metastasis" -> "metastases", "lobe" -> "lobes")."""
    head, _, last = term.rpartition(" ")
    prefix = f"{head} " if head else ""
    low = last.lower()
    if not last or not last[-1].isalpha() or len(last) < 3:
        return []
    if low.endswith("sis"):
        forms = [last[:-2] + "es"]
    elif low.endswith(("s", "x", "sh", "ch")):
        forms = [last + "es"] if not low.endswith("us") else [last[:-2] + "i", last + "es"]
    elif low.endswith("y") and low[-2:-1] not in "aeiou":
        forms = [last[:-1] + "ies"]
    elif low.endswith("um"):
        forms = [last[:-2] + "a", last + "s"]
    elif low.endswith(("ed", "ing", "al", "ic", "ar", "ous", "ive", "ent")):
        forms = []  # adjectives and participles have no plural
    else:
        forms = [last + "s"]
    return [prefix + f for f in forms]


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, size: int) -> Vocabulary:
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = list(reader)
    if not rows or [c.strip() for c in rows[0][:2]] != ["concept", "category"]:
        raise VocabularyError(f"{path}: the first non-comment line must be the header 'concept<TAB>category<TAB>synonyms<TAB>abbreviations'")
    concepts: list[Concept] = []
    seen: dict[str, str] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        row = [c.strip() for c in row] + ["", ""]
        name, category, synonyms, abbrevs = row[:4]
        if not name or category not in CATEGORIES:
            raise VocabularyError(
                f"{path}: row {lineno} ({row[:2]}) needs a concept name and a category out of {CATEGORIES}"
            )
        terms: list[str] = []
        ambiguous: set[str] = set()
        for term in [name, *synonyms.split("|")]:
            term = " ".join(term.split())
            if term.startswith("~"):
                term = term[1:].strip()
                ambiguous.add(term)
            for form in [term, *plural_forms(term)]:
                key = form.lower()
                if not form or key in seen:
                    continue
                seen[key] = name
                terms.append(form)
        abbreviations = tuple(a.strip() for a in abbrevs.split("|") if a.strip())
        concepts.append(Concept(name, category, tuple(terms), abbreviations, frozenset(ambiguous)))
    if not concepts:
        raise VocabularyError(f"{path}: the vocabulary has no concepts")
    return Vocabulary(tuple(concepts), digest, path)


def load_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """Load (and cache per process) a vocabulary TSV; raises VocabularyError with the fix."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise VocabularyError(f"vocabulary {p} not found; pass --vocabulary FILE or use config/concepts.tsv") from exc
    return _load_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)
