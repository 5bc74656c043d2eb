"""Settings of finding extraction, as one frozen dataclass.

A cohort run uses one config for every study, so the config (with the vocabulary's hash)
is what makes two runs comparable; it is hashable so that the pipeline built for it can be
cached per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The vocabulary shipped with the project (``config/concepts.tsv`` at the repository root).
DEFAULT_VOCABULARY = Path(__file__).resolve().parents[2] / "config" / "concepts.tsv"

#: Sections whose sentences become findings. Text before the first header is "body".
DEFAULT_KEEP_SECTIONS = ("findings", "impression", "conclusion", "target", "addendum", "body")


@dataclass(frozen=True)
class FindingsConfig:
    """How reports are turned into findings.

    vocabulary: TSV of concepts (see ``config/concepts.tsv``); None = the shipped one.
    spacy_model: no longer used (kept so that existing configurations load); a value is
        ignored with a warning - findings have their own tokenizer, stemmer and splitter.
    keep_sections: canonical section names whose sentences are analysed.
    keep_negated: keep negated/normal/resolved/historical statements (``negated=True``);
        False omits them from the output.
    expand_abbreviations: replace abbreviations (vocabulary and those defined in the
        report, e.g. "right upper lobe (RUL)") by their long form in prompts.
    max_chars: only the first ``max_chars`` characters of a report are analysed (a warning
        is logged beyond that) so that a pathological input finishes in bounded time.
    max_block_chars: paragraphs longer than this are cut at sentence ends or white space
        before sentence splitting, so that one pathological paragraph stays bounded.
    duplicate_similarity: token-set similarity (0-1) above which a later finding is linked
        to an earlier one as its near-duplicate.
    """

    vocabulary: Path | None = None
    spacy_model: str | None = None
    keep_sections: tuple[str, ...] = DEFAULT_KEEP_SECTIONS
    keep_negated: bool = True
    expand_abbreviations: bool = True
    max_chars: int = 200_000
    max_block_chars: int = 4_000
    duplicate_similarity: float = 0.6

    @property
    def vocabulary_path(self) -> Path:
        return Path(self.vocabulary) if self.vocabulary is not None else DEFAULT_VOCABULARY
