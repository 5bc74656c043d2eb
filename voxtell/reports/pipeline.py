"""The spaCy pipeline, built once per process and vocabulary.

Offline by construction: ``spacy.blank("en")`` with scispaCy's rule tokenizer, its pysbd
sentence splitter and its abbreviation detector (Schwartz & Hearst). A scispaCy model
(``en_core_sci_sm`` ...) replaces the blank pipeline when it is configured and installed;
when it is configured but missing, a warning says so and the blank pipeline is used.
Concepts are found with two PhraseMatchers: terms on LOWER, abbreviations on ORTH (so
"RUL" matches but the word "rul" does not).
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxtell.reports.config import FindingsConfig
from voxtell.reports.vocabulary import Concept, Vocabulary, load_vocabulary

log = logging.getLogger(__name__)

#: Sentence-final punctuation followed by more text: pysbd is needed to split the paragraph.
_INNER_BOUNDARY = re.compile(r"[.!?;]\S*\s+\S")


@dataclass(frozen=True)
class ConceptMatch:
    """A concept found in a Doc: character offsets into the Doc text."""

    start: int
    end: int
    concept: Concept
    abbreviation: bool


@dataclass(eq=False)
class ReportPipeline:
    """A built spaCy pipeline plus the concept matchers of one vocabulary."""

    nlp: Any
    vocabulary: Vocabulary
    model: str  # "blank" or the loaded model's name
    components: tuple[str, ...]
    _term_matcher: Any
    _abbr_matcher: Any
    _concepts: dict[int, Concept]

    def make_doc(self, text: str) -> Any:
        return self.nlp.make_doc(text)

    def process(self, doc: Any) -> Any:
        """Run sentence splitting and abbreviation detection on a tokenised Doc.

        A paragraph with no sentence-final punctuation before its end (a list item, a single
        sentence) is one sentence; it skips pysbd, which is most of the cost per report.
        """
        single = self.model == "blank" and not _INNER_BOUNDARY.search(doc.text)
        for name, proc in self.nlp.pipeline:
            if single and name == "pysbd_sentencizer":
                for token in doc:
                    token.is_sent_start = token.i == 0
                continue
            if name == "abbreviation_detector":
                if "(" not in doc.text:
                    continue  # definitions are "long form (SF)": nothing to find
                with warnings.catch_warnings():
                    # scispaCy runs an empty matcher when the definitions are new
                    warnings.filterwarnings("ignore", message=r"\[W036\]", category=UserWarning)
                    doc = proc(doc)
                continue
            doc = proc(doc)
        return doc

    def match_concepts(self, doc: Any) -> list[ConceptMatch]:
        """Longest non-overlapping concept matches in ``doc``, in text order."""
        from spacy.util import filter_spans

        spans = []
        for matcher, abbr in ((self._term_matcher, False), (self._abbr_matcher, True)):
            for key, start, end in matcher(doc):
                span = doc[start:end]
                span.label_ = "A" if abbr else "T"
                spans.append((span, key))
        keys = {(s.start, s.end): k for s, k in spans}
        result = []
        for span in filter_spans([s for s, _k in spans]):
            concept = self._concepts[keys[(span.start, span.end)]]
            result.append(ConceptMatch(span.start_char, span.end_char, concept, span.label_ == "A"))
        return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("spacy", "scispacy", "pysbd"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _blank_pipeline() -> tuple[Any, str]:
    import spacy

    nlp = spacy.blank("en")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scispaCy's tokenizer regex
        from scispacy.custom_tokenizer import combined_rule_tokenizer

        nlp.tokenizer = combined_rule_tokenizer(nlp)
    import scispacy.custom_sentence_segmenter  # noqa: F401  (registers "pysbd_sentencizer")

    nlp.add_pipe("pysbd_sentencizer")
    return nlp, "blank"


def _model_pipeline(name: str) -> tuple[Any, str] | None:
    import spacy

    try:
        nlp = spacy.load(name, exclude=["ner", "lemmatizer"])
    except (OSError, ImportError) as exc:
        log.warning(
            "spaCy model %r is not installed (%s); using spacy.blank('en') with scispaCy's "
            "tokenizer and sentence splitter instead - install the model or unset spacy_model",
            name,
            str(exc).splitlines()[0][:200],
        )
        return None
    if not (nlp.has_pipe("parser") or nlp.has_pipe("senter") or nlp.has_pipe("sentencizer")):
        import scispacy.custom_sentence_segmenter  # noqa: F401

        nlp.add_pipe("pysbd_sentencizer")
    return nlp, str(nlp.meta.get("name", name))


@functools.lru_cache(maxsize=4)
def _build(vocabulary_path: str, spacy_model: str | None, vocab_sha: str) -> ReportPipeline:
    from spacy.matcher import PhraseMatcher

    vocabulary = load_vocabulary(vocabulary_path)
    built = _model_pipeline(spacy_model) if spacy_model else None
    nlp, model = built if built is not None else _blank_pipeline()
    import scispacy.abbreviation  # noqa: F401  (registers "abbreviation_detector")

    nlp.add_pipe("abbreviation_detector")
    term_matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
    abbr_matcher = PhraseMatcher(nlp.vocab, attr="ORTH")
    concepts: dict[int, Concept] = {}
    for concept in vocabulary.concepts:
        key = f"concept:{concept.name}"
        concepts[nlp.vocab.strings.add(key)] = concept
        term_matcher.add(key, list(nlp.tokenizer.pipe(concept.terms)))
        if concept.abbreviations:
            abbr_matcher.add(key, list(nlp.tokenizer.pipe(concept.abbreviations)))
    log.info("built report pipeline: model=%s, components=%s, %d concepts", model, nlp.pipe_names, len(concepts))
    return ReportPipeline(nlp, vocabulary, model, tuple(nlp.pipe_names), term_matcher, abbr_matcher, concepts)


def build_pipeline(config: FindingsConfig) -> ReportPipeline:
    """The pipeline for ``config``, built once per process (cached on vocabulary and model)."""
    path = Path(config.vocabulary_path)
    vocabulary = load_vocabulary(path)
    return _build(str(path.resolve()), config.spacy_model, vocabulary.sha256)


def pipeline_versions(config: FindingsConfig) -> dict[str, str]:
    """Versions and checksums that identify how findings were made (for manifests)."""
    pipe = build_pipeline(config)
    return {
        **_versions(),
        "model": pipe.model,
        "components": ",".join(pipe.components),
        "vocabulary": pipe.vocabulary.path,
        "vocabulary_sha256": pipe.vocabulary.sha256,
    }
