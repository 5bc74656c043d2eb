"""Report text -> finding sentences, the prompts that VoxTell segments.

A finding is a sentence (or list item) in a findings-like section that names a lesion or
radiotherapy target from the vocabulary. It is *present* (``negated=False``) when at least
one such concept is asserted present; otherwise it is kept with ``negated=True`` (and its
``assertion``: negated, normal, resolved or historical) so that a research table can
count what was ruled out - set ``keep_negated=False`` to omit those. Sentences that only
name anatomy ("The liver is normal in size") and recommendations are not findings.

Organ-system subheadings ("Mediastinum and lymph nodes:", "LIVER:") are never findings;
the sentences under them are. A prompt starts with the subheading ("Liver: There is a 2 cm
lesion") only when its sentence names no anatomy of its own - otherwise the sentence says
where, and the subheading could only mislead ("aortocaval node" under "Mediastinum and
lymph nodes:"). Its finding concepts carry over to the sentences below only for a list lead
("Pulmonary nodules:" above "- RUL 11 mm") or a subheading that names nothing but findings
("Lymph nodes: subcarinal 15 mm"), and then only to a sentence with a concept or a size.
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
    lead: tuple[str, _Context] | None = None  # "Multiple pulmonary nodules, as follows:" before a list
    labels: dict[tuple[int, int], _Context] = {}
    for block in split_blocks(work, config.max_block_chars):
        if block.section not in config.keep_sections:
            continue
        block_text = work[block.start : block.end]
        if lead is not None and (block.kind != "item" or lead[0] != block.section or block.label is not None):
            lead = None
        # wrapped lines are one paragraph: newline -> space (same length, offsets kept)
        doc = pipe.make_doc(block_text.replace("\n", " "))
        matches = pipe.match_concepts(doc)
        lead_findings = [m for m in matches if m.concept.is_finding]
        if block.kind == "paragraph" and block_text.rstrip().endswith(":") and lead_findings:
            lead = (block.section, _Context(block_text.rstrip()[:-1].strip(), (), tuple(lead_findings), True))
        context = None
        if block.label is not None:
            context = labels.get(block.label)
            if context is None:
                context = labels[block.label] = _label_context(pipe, work, block.label)
            # a subheading's finding concepts apply below it only when it is a list lead
            # ("Pulmonary nodules:" above "- RUL 11 mm") or names nothing but findings
            # ("Lymph nodes: subcarinal 15 mm"); "Mediastinum and lymph nodes:" is an organ system
            inherit = bool(context.findings) and (
                (block.label_above and block.kind == "item") or not context.anatomy
            )
            context = _replace(context, inherit=inherit)
        elif block.kind == "item" and lead is not None:
            context = lead[1]
        if not lead_findings and (context is None or not context.inherit):
            continue  # nothing segmentable: skip sentence splitting (most of the cost)
        doc = pipe.process(doc)
        for abbr in getattr(doc._, "abbreviations", []):
            if abbr._.long_form is not None:
                abbreviations[abbr.text] = abbr._.long_form.text
        for sent in doc.sents:
            item = _analyse_sentence(sent, matches, work, block.start, block.section, config, context)
            if item is not None:
                raw.append(item)
    findings: list[Finding] = []
    where: list[frozenset[str]] = []  # concepts plus the subheading's anatomy, per finding
    expand = _expander(pipe, tuple(sorted(abbreviations.items()))) if config.expand_abbreviations else (lambda s: s)
    for item in raw:
        # target labels go before abbreviations are expanded ("GTV:" would become "gross tumor volume:")
        prompt = _clean_prompt(expand(_TARGET_LABEL.sub("", _LEADING_MARKER.sub("", item.pop("prompt_text")))))
        context = item.pop("context")
        item["sentence"] = text[item["char_start"] : item["char_end"]]
        if not prompt:
            continue
        where.append(context)
        findings.append(
            Finding(
                finding_id=f"{study_id}-f{len(findings):03d}",
                prompt=prompt,
                laterality=_laterality(prompt),
                **item,
            )
        )
    return _link_duplicates(findings, where, config.duplicate_similarity)


@dataclass(frozen=True)
class _Context:
    """What a subheading or list lead contributes to the sentences under it.

    ``text`` prefixes the prompt when the sentence needs it; ``anatomy`` says where (used
    when the sentence itself names no anatomy: "Right breast: Irregular mass ..."); the
    ``findings`` concepts count for the sentence only when ``inherit`` is set.
    """

    text: str
    anatomy: tuple[ConceptMatch, ...]
    findings: tuple[ConceptMatch, ...]
    inherit: bool = False


def _label_context(pipe: ReportPipeline, work: str, span: tuple[int, int]) -> _Context:
    """The concepts of a subheading ("Mediastinum and lymph nodes") and its prompt text."""
    label = work[span[0] : span[1]].replace("\n", " ")
    matches = pipe.match_concepts(pipe.make_doc(label))
    if label.isupper() and len(label) > 4:  # "HEAD AND NECK" -> "Head and neck"
        label = label[0] + label[1:].lower()
    return _Context(
        label,
        tuple(m for m in matches if not m.concept.is_finding),
        tuple(m for m in matches if m.concept.is_finding),
    )


def _analyse_sentence(sent, matches, work: str, offset: int, section: str, config: FindingsConfig,
                      context: _Context | None = None) -> dict | None:
    """A finding dict for one sentence, or None; ``context`` is the subheading or list lead
    above the sentence ("Liver:" / "Pulmonary nodules:" above "- RUL 11 mm")."""
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
    assertions = assert_spans(sentence, [(m.start - s0, m.end - s0) for m in inside])
    pairs = list(zip(inside, assertions))
    own_finding = any(m.concept.is_finding for m in inside)
    inherited: list = []
    if context is not None and context.inherit and (inside or parse_measurements_mm(sentence)):
        # "- RUL 11 mm" under "Pulmonary nodules:": the lead's findings take the item's assertion
        if pairs:
            present_own = [a for _m, a in pairs if a.present]
            assertion = present_own[0] if present_own else pairs[0][1]
        else:
            assertion = assert_spans(sentence, [(0, len(sentence))])[0]
        inherited = [(ConceptMatch(s0, s0, m.concept, m.abbreviation), assertion) for m in context.findings]
    if not own_finding and not inherited:
        return None
    prefix = ""
    # the subheading goes in front of the prompt only when the sentence names no anatomy
    # itself, or relies on the lead's finding ("LIVER: There is a 2 cm lesion." -> "Liver:
    # There is a 2 cm lesion"); otherwise the sentence says where ("aortocaval lymph node"
    # under "Mediastinum and lymph nodes:") and the subheading would only mislead the model
    context_anatomy = [m.concept.name for m in context.anatomy] if context is not None else []
    extra: list[str] = []
    if inherited or (context_anatomy and not any(not m.concept.is_finding for m in inside)):
        prefix = context.text + ": "
        extra = context_anatomy
    pairs = inherited + pairs
    present = [(m, a) for m, a in pairs if a.present]
    present_findings = [(m, a) for m, a in present if m.concept.is_finding]
    finding_pairs = [(m, a) for m, a in pairs if m.concept.is_finding]
    if present_findings:
        negated, label = False, "present"
        named = [m for m, _a in present]
        own_present = [(m.start - s0, m.end - s0) for m, _a in present if m.end > s0]
        cut = _negated_tail(sentence, own_present) if own_present else len(sentence)
    else:
        if not config.keep_negated:
            return None
        negated, label = True, finding_pairs[0][1].label
        named = [m for m, _a in finding_pairs]
        cut = len(sentence)
    # uncertainty is a property of the statement: "mass, likely renal cell carcinoma"
    uncertain = any(t.category == UNCERTAIN and t.start < cut for t in find_triggers(sentence))
    concepts = tuple(dict.fromkeys([m.concept.name for m in named] + extra))
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
        "context": frozenset(concepts).union(context_anatomy),  # for duplicate links only
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


def _link_duplicates(findings: list[Finding], where: list[frozenset[str]], threshold: float) -> list[Finding]:
    """Link a present finding to the earlier present one that says the same thing most closely
    (the best match, so that two impression lines about two lesions link to two findings).
    ``where`` holds each finding's concepts plus those of the subheading it stands under."""
    out: list[Finding] = []
    for i, f in enumerate(findings):
        dup, best = None, -1.0
        if not f.negated:
            for j, g in enumerate(out):
                if g.negated or g.duplicate_of is not None or not _same_finding(f, g, threshold, where[i], where[j]):
                    continue
                score = _jaccard(_tokens(f.prompt), _tokens(g.prompt))
                if score > best:
                    dup, best = g.finding_id, score
        out.append(f if dup is None else _replace(f, duplicate_of=dup))
    return out


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


#: Two sentences of one section are one finding only when they say nearly the same words:
#: "A 12 mm nodule in the LUL." and "There is a 12 mm solid nodule in the LUL." are two nodules.
SAME_SECTION_SIMILARITY = 0.9


def _same_finding(a: Finding, b: Finding, threshold: float, ca: frozenset[str], cb: frozenset[str]) -> bool:
    """Near-duplicate test, guarded by size: two lesions of different size are two lesions."""
    if a.measurements_mm and b.measurements_mm and abs(a.measurements_mm[0] - b.measurements_mm[0]) > 1.0:
        return False
    ta, tb = _tokens(a.prompt), _tokens(b.prompt)
    if ta and tb:
        shared = len(ta & tb)
        if shared / len(ta | tb) >= (threshold if a.section != b.section else max(threshold, SAME_SECTION_SIMILARITY)):
            return True
        # an impression line contained in a findings sentence ("Acute right MCA infarct")
        if a.section != b.section and min(len(ta), len(tb)) >= 3 and shared / min(len(ta), len(tb)) >= 0.75:
            return True
    if a.section == b.section:
        return False  # sentences of one section describe different aspects; the rules below
    # link an IMPRESSION/CONCLUSION line to the FINDINGS sentence it summarises
    if a.laterality and b.laterality and a.laterality != b.laterality:
        return False
    shared = len(ca & cb)
    if shared and a.measurements_mm and b.measurements_mm:
        return True  # same size (checked above) and a shared concept
    return shared >= 2 and shared / min(len(ca), len(cb)) >= 0.6


def _replace(f: Finding, **changes) -> Finding:
    from dataclasses import replace

    return replace(f, **changes)
