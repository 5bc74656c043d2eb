"""Report text -> finding sentences, the prompts that VoxTell segments.

A finding is a sentence (or list item) in a findings-like section that names a lesion or
radiotherapy target from the vocabulary. It is *present* (``negated=False``) when at least
one such concept is asserted present; otherwise it is kept with ``negated=True`` (and its
``assertion``: negated, normal, resolved or historical) so that a research table can
count what was ruled out - set ``keep_negated=False`` to omit those. Sentences that only
name anatomy ("The liver is normal in size") and recommendations are not findings.
The workflow segments findings with ``negated == False`` and ``duplicate_of is None``.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import asdict, dataclass

from voxtell.reports.config import FindingsConfig
from voxtell.reports.context import NEGATED, PRE, UNCERTAIN, assert_spans, find_triggers
from voxtell.reports.measurements import parse_measurements_mm
from voxtell.reports.pipeline import ConceptMatch, ReportPipeline, build_pipeline
from voxtell.reports.sections import split_blocks
from voxtell.reports.textio import analysis_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    """One finding sentence; ``text[char_start:char_end] == sentence`` for the report text."""

    finding_id: str
    sentence: str
    prompt: str
    section: str
    char_start: int
    char_end: int
    negated: bool
    uncertain: bool
    assertion: str  # present | negated | normal | resolved | historical
    concepts: tuple[str, ...]
    laterality: str | None
    measurements_mm: tuple[float, ...]
    duplicate_of: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["concepts"] = list(self.concepts)
        d["measurements_mm"] = list(self.measurements_mm)
        return d


_RECOMMENDATION = re.compile(
    r"\b(?:recommend\w*|advis(?:ed|able)|suggest(?:ed)? (?:that|a|an|further|follow|repeat|biopsy|correlation)|"
    r"consider |correlat\w+|could be (?:obtained|performed)|further (?:evaluation|assessment|"
    r"characteri[sz]ation|work-?up|imaging)|follow[- ]?up (?:is|in|with|ct|mri|mr|imaging|pet|scan|study|examination)|"
    r"(?:repeat|short[- ]interval) (?:ct|mri|imaging|scan|pet))\b",
    re.IGNORECASE,
)
_LEADING_MARKER = re.compile(r"^\s*(?:[-*\u2022\u00b7\u2013>]|\(?\d{1,2}[.)]|\(?[a-h][.)])\s+")
_TARGET_LABEL = re.compile(r"^\s*(?:[GCPI]TV[\w\-]*|IGTV[\w\-]*|boost)\s*[:=\-]\s+", re.IGNORECASE)
_TRAILING = re.compile(r"[\s.,;:]+$")
_WS = re.compile(r"\s+")
_LATERAL = re.compile(r"\b(left|right|bilateral|bilaterally|both)\b")
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_STOP = frozenset("a an the of in at on to and or with is are was were there this that which by as for from be has have".split())


def extract_findings(text: str, study_id: str, config: FindingsConfig | None = None) -> list[Finding]:
    """Findings of one report text (offsets index ``text`` exactly as given)."""
    config = config or FindingsConfig()
    if not text.strip():
        return []
    pipe = build_pipeline(config)
    if len(text) > config.max_chars:
        log.warning(
            "report %s has %d characters; only the first %d are analysed (raise max_chars to change this)",
            study_id, len(text), config.max_chars,
        )
    work = analysis_text(text[: config.max_chars])
    raw: list[dict] = []
    abbreviations: dict[str, str] = {}
    lead: tuple[str, str, tuple] | None = None  # "Multiple pulmonary nodules:" before a list
    for block in split_blocks(work, config.max_block_chars):
        if block.section not in config.keep_sections:
            continue
        block_text = work[block.start : block.end]
        if lead is not None and (block.kind != "item" or lead[0] != block.section):
            lead = None
        # wrapped lines are one paragraph: newline -> space (same length, offsets kept)
        doc = pipe.make_doc(block_text.replace("\n", " "))
        matches = pipe.match_concepts(doc)
        lead_findings = [m for m in matches if m.concept.is_finding]
        if block.kind == "paragraph" and block_text.rstrip().endswith(":") and lead_findings:
            lead = (block.section, block_text.rstrip()[:-1].strip(), tuple(lead_findings))
        inherited = lead if (block.kind == "item" and lead is not None) else None
        if not lead_findings and inherited is None:
            continue  # nothing segmentable: skip sentence splitting (most of the cost)
        doc = pipe.process(doc)
        for abbr in getattr(doc._, "abbreviations", []):
            if abbr._.long_form is not None:
                abbreviations[abbr.text] = abbr._.long_form.text
        for sent in doc.sents:
            item = _analyse_sentence(sent, matches, work, block.start, block.section, config, inherited)
            if item is not None:
                raw.append(item)
    findings: list[Finding] = []
    expand = _expander(pipe, tuple(sorted(abbreviations.items()))) if config.expand_abbreviations else (lambda s: s)
    for item in raw:
        prompt = _clean_prompt(expand(item.pop("prompt_text")))
        item["sentence"] = text[item["char_start"] : item["char_end"]]
        if not prompt:
            continue
        findings.append(
            Finding(
                finding_id=f"{study_id}-f{len(findings):03d}",
                prompt=prompt,
                laterality=_laterality(prompt),
                **item,
            )
        )
    return _link_duplicates(findings, config.duplicate_similarity)


def _analyse_sentence(sent, matches, work: str, offset: int, section: str, config: FindingsConfig, inherited=None) -> dict | None:
    """A finding dict for one sentence, or None; ``inherited`` = (section, lead text, lead concepts)
    of the line that introduced a list ("Pulmonary nodules:" / "- RUL 11 mm")."""
    s0, s1 = sent.start_char, sent.end_char
    text = sent.text
    lead = len(text) - len(text.lstrip())
    s0 += lead
    s1 = s0 + len(text.strip())
    if s1 <= s0:
        return None
    sentence = work[offset + s0 : offset + s1].replace("\n", " ")
    inside = [m for m in matches if m.start >= s0 and m.end <= s1]
    if _RECOMMENDATION.search(sentence):
        return None
    prefix = ""
    if inherited is not None:
        # a list item under "Multiple pulmonary nodules:": the lead's concepts apply to it
        prefix = inherited[1] + ": "
        inside = [ConceptMatch(s0, s0, m.concept, m.abbreviation) for m in inherited[2]] + inside
    elif not any(m.concept.is_finding for m in inside):
        return None
    assertions = assert_spans(sentence, [(m.start - s0, m.end - s0) for m in inside])
    present = [(m, a) for m, a in zip(inside, assertions) if a.present]
    present_findings = [(m, a) for m, a in present if m.concept.is_finding]
    finding_pairs = [(m, a) for m, a in zip(inside, assertions) if m.concept.is_finding]
    if present_findings:
        negated, label = False, "present"
        named = [m for m, _a in present]
        cut = _negated_tail(sentence, [(m.start - s0, m.end - s0) for m, _a in present])
    else:
        if not config.keep_negated:
            return None
        negated, label = True, finding_pairs[0][1].label
        named = [m for m, _a in finding_pairs]
        cut = len(sentence)
    # uncertainty is a property of the statement: "mass, likely renal cell carcinoma"
    uncertain = any(t.category == UNCERTAIN and t.start < cut for t in find_triggers(sentence))
    concepts = tuple(dict.fromkeys(m.concept.name for m in named))
    prompt_text = prefix + sentence[:cut]
    return {
        "sentence": sentence,  # replaced by the original characters in extract_findings
        "prompt_text": prompt_text,
        "section": section,
        "char_start": offset + s0,
        "char_end": offset + s1,
        "negated": negated,
        "uncertain": uncertain,
        "assertion": label,
        "concepts": concepts,
        "measurements_mm": tuple(parse_measurements_mm(prompt_text)),
    }


def _negated_tail(sentence: str, present_spans: list[tuple[int, int]]) -> int:
    """Where a trailing negated clause starts ("mass in the RUL without pleural effusion")."""
    last = max(e for _s, e in present_spans)
    for t in find_triggers(sentence):
        if t.category == NEGATED and t.direction == PRE and t.start >= last:
            return t.start
    return len(sentence)


def _clean_prompt(text: str) -> str:
    text = _LEADING_MARKER.sub("", text)
    text = _TARGET_LABEL.sub("", text)
    text = _WS.sub(" ", text).strip()
    text = _TRAILING.sub("", text)
    return re.sub(r"\s+(?:and|or|with|,)$", "", text).strip(" ,")


def _laterality(prompt: str) -> str | None:
    sides = {m.group(1) for m in _LATERAL.finditer(prompt.lower())}
    if sides & {"bilateral", "bilaterally", "both"} or {"left", "right"} <= sides:
        return "bilateral"
    return next(iter(sides), None)


@functools.lru_cache(maxsize=256)
def _expander(pipe: ReportPipeline, defined: tuple[tuple[str, str], ...]):
    """A function that expands vocabulary abbreviations and those defined in the report."""
    mapping = pipe.vocabulary.abbreviation_map()
    mapping.update(dict(defined))
    keys = sorted(mapping, key=len, reverse=True)
    if not keys:
        return lambda s: s
    pattern = re.compile(r"(?<![\w\-])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w\-])")
    definitions = [
        re.compile(re.escape(long) + r"\s*\(\s*" + re.escape(short) + r"\s*\)", re.IGNORECASE)
        for short, long in defined
    ]

    def expand(text: str) -> str:
        for d in definitions:  # "right upper lobe (RUL)" -> "right upper lobe"
            text = d.sub(lambda m: m.group(0)[: m.group(0).index("(")].rstrip(), text)
        return pattern.sub(lambda m: mapping[m.group(1)], text)

    return expand


def _tokens(prompt: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(prompt.lower()) if w not in _STOP)


def _link_duplicates(findings: list[Finding], threshold: float) -> list[Finding]:
    """Link a present finding to an earlier present one that says the same thing."""
    out: list[Finding] = []
    for f in findings:
        dup = None
        if not f.negated:
            for g in out:
                if g.negated or g.duplicate_of is not None:
                    continue
                if _same_finding(f, g, threshold):
                    dup = g.finding_id
                    break
        out.append(f if dup is None else _replace(f, duplicate_of=dup))
    return out


def _same_finding(a: Finding, b: Finding, threshold: float) -> bool:
    """Near-duplicate test, guarded by size: two lesions of different size are two lesions."""
    if a.measurements_mm and b.measurements_mm and abs(a.measurements_mm[0] - b.measurements_mm[0]) > 1.0:
        return False
    ta, tb = _tokens(a.prompt), _tokens(b.prompt)
    if ta and tb:
        shared = len(ta & tb)
        if shared / len(ta | tb) >= threshold:
            return True
        # an impression line contained in a findings sentence ("Acute right MCA infarct")
        if a.section != b.section and min(len(ta), len(tb)) >= 3 and shared / min(len(ta), len(tb)) >= 0.75:
            return True
    if a.section == b.section:
        return False  # sentences of one section describe different aspects; the rules below
    # link an IMPRESSION/CONCLUSION line to the FINDINGS sentence it summarises
    if a.laterality and b.laterality and a.laterality != b.laterality:
        return False
    ca, cb = set(a.concepts), set(b.concepts)
    shared = len(ca & cb)
    if shared and a.measurements_mm and b.measurements_mm:
        return True  # same size (checked above) and a shared concept
    return shared >= 2 and shared / min(len(ca), len(cb)) >= 0.6


def _replace(f: Finding, **changes) -> Finding:
    from dataclasses import replace

    return replace(f, **changes)
