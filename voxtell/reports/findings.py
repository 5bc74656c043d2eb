"""Report text -> finding sentences, the prompts that VoxTell segments.

A finding is a sentence (or list item) in a findings-like section that names a lesion or
radiotherapy target from the vocabulary. It is *present* (``negated=False``) when at least
one such concept is asserted present; otherwise it is kept with ``negated=True`` (and its
``assertion``: negated, normal, resolved, historical or hypothetical) so that a research
table can count what was ruled out - set ``keep_negated=False`` to omit those. Sentences
that only name anatomy ("The liver is normal in size") are not findings; a recommendation
clause is cut off a finding sentence ("4 mm nodule; ultrasound is recommended"), and a
sentence that is only a recommendation is dropped. A bare size under a subheading
("Axillary right: 58 x 32 mm") is a finding; a short question before any header
("Metastasis?") is the request, not a finding.

Organ-system subheadings ("Mediastinum and lymph nodes:", "LIVER:") are never findings;
the sentences under them are. A prompt starts with the subheading ("Liver: There is a 2 cm
lesion") only when its sentence names no anatomy of its own - otherwise the sentence says
where, and the subheading could only mislead ("aortocaval node" under "Mediastinum and
lymph nodes:"). Its finding concepts carry over to the sentences below only for a list lead
("Pulmonary nodules:" above "- RUL 11 mm") or a subheading that names nothing but findings
("Lymph nodes: subcarinal 15 mm"), and then only to a sentence with a concept or a size.
Which findings get a mask is decided by :func:`gets_mask` alone (present, not a duplicate).
``finding_id`` hashes the normalised sentence (see :func:`finding_ids`), so an unchanged
sentence keeps its id when the rest of the report changes.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from voxtell.reports.config import FindingsConfig
from voxtell.reports.context import NEGATED, PRE, UNCERTAIN, assert_spans, find_triggers
from voxtell.reports.measurements import parse_measurements_mm
from voxtell.reports.pipeline import ConceptMatch, ReportPipeline, build_pipeline, defined_abbreviations, split_sentences
from voxtell.reports.sections import split_blocks
from voxtell.reports.textio import analysis_text
from voxtell.reports.vocabulary import Concept

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
    assertion: str  # present | negated | normal | resolved | historical | hypothetical
    concepts: tuple[str, ...]
    laterality: str | None
    measurements_mm: tuple[float, ...]
    duplicate_of: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["concepts"] = list(self.concepts)
        d["measurements_mm"] = list(self.measurements_mm)
        return d


def gets_mask(finding: Finding | dict[str, Any]) -> tuple[bool, str | None]:
    """The one rule for which findings are segmented: (True, None) or (False, reason).

    A finding gets a mask when it is asserted present (not negated, normal, resolved,
    historical or hypothetical), is not a duplicate of an earlier finding, and has a prompt.
    Accepts a :class:`Finding` or a findings.jsonl record.
    """
    get = finding.get if isinstance(finding, dict) else (lambda k, d=None: getattr(finding, k, d))
    if get("negated", False):
        return False, f"not asserted present ({get('assertion') or 'negated'})"
    assertion = get("assertion") or "present"
    if assertion != "present":
        return False, f"not asserted present ({assertion})"
    if get("duplicate_of") is not None:
        return False, f"duplicate of {get('duplicate_of')}"
    if not " ".join(str(get("prompt") or "").split()):
        return False, "empty prompt"
    return True, None


def finding_key(sentence: str) -> str:
    """Hash of a sentence after Unicode/white-space/case normalisation (the stable part of finding_id)."""
    norm = " ".join(unicodedata.normalize("NFC", sentence).lower().split())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:10]


def finding_ids(study_id: str, sentences: list[str]) -> list[str]:
    """``{study}-f{hash}`` per sentence, ``-2``, ``-3`` ... for repeats of an identical sentence.

    The id depends only on the sentence (and how often the same sentence came before), so
    an unchanged sentence keeps its id when other parts of the report change.
    """
    seen: dict[str, int] = {}
    out = []
    for sentence in sentences:
        key = finding_key(sentence)
        seen[key] = seen.get(key, 0) + 1
        out.append(f"{study_id}-f{key}" + (f"-{seen[key]}" if seen[key] > 1 else ""))
    return out


_RECOMMENDATION = re.compile(
    r"\b(?:recommend\w*|advis(?:ed|able)|suggest(?:ed)? (?:that|a|an|further|follow|repeat|biopsy|correlation)|"
    r"consider |correlat\w+|could be (?:obtained|performed)|further (?:evaluation|assessment|"
    r"characteri[sz]ation|work-?up|imaging)|follow[- ]?up (?:is|in|with|ct|mri|mr|imaging|pet|scan|study|examination)|"
    r"(?:repeat|short[- ]interval) (?:ct|mri|imaging|scan|pet))\b",
    re.IGNORECASE,
)
#: Where a clause starts: after ";", ":", " - ", a full stop or a comma.
_CLAUSE_START = re.compile(r"[;:.]\s|,\s|\s[-\u2013]\s")
_LEADING_MARKER = re.compile(r"^\s*(?:[-*\u2022\u00b7\u2013>]|\(?\d{1,2}[.)]|\(?[a-h][.)])\s+")
_TARGET_LABEL = re.compile(r"^\s*(?:[GCPI]TV[\w\-]*|IGTV[\w\-]*|boost)\s*[:=\-]\s+", re.IGNORECASE)
_TRAILING = re.compile(r"[\s.,;:]+$")
_WS = re.compile(r"\s+")
_LATERAL = re.compile(r"\b(left|right|bilateral|bilaterally|both)\b")
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_STOP = frozenset("a an the of in at on to and or with is are was were there this that which by as for from be has have".split())


def recommendation_start(sentence: str) -> int | None:
    """Start of the recommendation clause of a sentence, or None when it has none.

    0 means the whole sentence is a recommendation ("Follow-up CT in 3 months is
    recommended for the nodule"); a later offset means a finding comes first ("A 4 mm
    nodule in the right lobe; ultrasound correlation is recommended").
    """
    m = _RECOMMENDATION.search(sentence)
    if m is None:
        return None
    starts = [c.start() for c in _CLAUSE_START.finditer(sentence, 0, m.start())]
    return starts[-1] if starts else 0


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
    size_concept = next((c for c in pipe.vocabulary.concepts if c.name == "lesion"), None)
    for block_no, block in enumerate(split_blocks(work, config.max_block_chars)):
        if block.section not in config.keep_sections:
            continue
        # wrapped lines are one paragraph: newline -> space (same length, offsets kept)
        block_text = work[block.start : block.end].replace("\n", " ")
        if lead is not None and (block.kind != "item" or lead[0] != block.section or block.label is not None):
            lead = None
        matches = pipe.match_concepts(block_text)
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
        if not lead_findings and (context is None or not context.inherit) and not (
                context is not None and _SIZE_HINT.search(block_text)):
            continue  # nothing segmentable: skip sentence splitting
        if "(" in block_text:
            abbreviations.update(defined_abbreviations(block_text))
        previous: tuple[ConceptMatch, ...] = ()  # findings of the last present sentence of this paragraph
        for s0, s1 in split_sentences(block_text):
            item = _analyse_sentence(s0, s1, matches, work, block.start, block.section, config, context, size_concept,
                                     previous)
            if item is not None:
                named = item.pop("named")
                if not item["negated"]:
                    previous = named
                item["block"] = block_no
                raw.append(item)
    findings: list[Finding] = []
    where: list[tuple[frozenset[str], int]] = []  # concepts plus the subheading's anatomy, and block
    expand = _expander(pipe, tuple(sorted(abbreviations.items()))) if config.expand_abbreviations else (lambda s: s)
    kept = []
    for item in raw:
        # target labels go before abbreviations are expanded ("GTV:" would become "gross tumor volume:")
        item["prompt"] = _clean_prompt(expand(_TARGET_LABEL.sub("", _LEADING_MARKER.sub("", item.pop("prompt_text")))))
        item["sentence"] = text[item["char_start"] : item["char_end"]]
        if item["prompt"]:
            kept.append(item)
    ids = finding_ids(study_id, [item["sentence"] for item in kept])
    for fid, item in zip(ids, kept):
        where.append((item.pop("context"), item.pop("block")))
        findings.append(Finding(finding_id=fid, laterality=_laterality(item["prompt"]), **item))
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
    matches = pipe.match_concepts(label)
    if label.isupper() and len(label) > 4:  # "HEAD AND NECK" -> "Head and neck"
        label = label[0] + label[1:].lower()
    return _Context(
        label,
        tuple(m for m in matches if not m.concept.is_finding),
        tuple(m for m in matches if m.concept.is_finding),
    )


_SIZE_HINT = re.compile(r"\d\s*(?:mm|cm)\b", re.IGNORECASE)
_PAREN = re.compile(r"\([^()]*\)")
_NON_WORD = re.compile(r"[^a-z]+")
_UNITS = frozenset("mm cm x by and diameter axis short long".split())


_SINGLE_CM = re.compile(r"^\s*\d+(?:[.,]\d+)?\s*cm\b", re.IGNORECASE)


def _measurement_only(sentence: str) -> bool:
    """"58 x 32 mm (IMA 3-38)", "9 mm": a lesion size and nothing else (parentheses, units,
    numbers); a single length in cm ("Spleen: 11 cm") is an organ's size, not a lesion's."""
    bare = _PAREN.sub(" ", sentence)
    words = [w for w in _NON_WORD.split(bare.lower()) if w and w not in _UNITS]
    return not words and not (_SINGLE_CM.match(bare) and len(parse_measurements_mm(bare)) == 1)


def _is_question(sentence: str, section: str) -> bool:
    """"Metastasis?", "Adhesions?" in text before any header: the request's clinical question."""
    return section == "body" and sentence.rstrip().endswith("?") and len(sentence.split()) <= 4


_ANAPHOR = re.compile(r"^\s*(?:this|it|these|they|which|the (?:mass|lesion|nodule|tumou?r|collection|cyst))\b",
                      re.IGNORECASE)


def _analyse_sentence(s0: int, s1: int, matches: list[ConceptMatch], work: str, offset: int, section: str,
                      config: FindingsConfig, context: _Context | None = None,
                      size_concept: Concept | None = None, previous: tuple[ConceptMatch, ...] = ()) -> dict | None:
    """A finding dict for the sentence ``[s0, s1)`` of a block, or None; ``context`` is the
    subheading or list lead above the sentence ("Liver:" / "Pulmonary nodules:" above "- RUL 11 mm");
    a bare size under a subheading ("Axillary right: 58 x 32 mm") is a finding of ``size_concept``;
    ``previous`` holds the findings of the paragraph's last present sentence, which "the
    lesion" and "This measured 5 x 4 cm" refer back to."""
    if s1 <= s0:
        return None
    sentence = work[offset + s0 : offset + s1].replace("\n", " ")
    if _is_question(sentence, section):
        return None
    rec = recommendation_start(sentence)
    if rec == 0:
        return None  # only a recommendation
    end = len(sentence) if rec is None else rec  # "...; ultrasound correlation is recommended" is cut off
    inside = [m for m in matches if m.start >= s0 and m.end <= s0 + end]
    sizes = parse_measurements_mm(sentence[:end])
    # a bare ambiguous word ("the primary service", "the lesion") counts only next to a site,
    # a size or another finding
    anchored = bool(sizes) or bool(previous) or any(not m.ambiguous for m in inside)
    inside = [m for m in inside if anchored or not m.ambiguous]
    assertions = assert_spans(sentence[:end], [(m.start - s0, m.end - s0) for m in inside])
    pairs = list(zip(inside, assertions))
    own_finding = any(m.concept.is_finding for m in inside)
    inherited: list = []
    if context is not None and context.inherit and (inside or sizes):
        # "- RUL 11 mm" under "Pulmonary nodules:": the lead's findings take the item's assertion
        if pairs:
            present_own = [a for _m, a in pairs if a.present]
            assertion = present_own[0] if present_own else pairs[0][1]
        else:
            assertion = assert_spans(sentence[:end], [(0, end)])[0]
        inherited = [(ConceptMatch(s0, s0, m.concept, m.abbreviation), assertion) for m in context.findings]
    if not own_finding and not inherited and context is not None and size_concept is not None and sizes \
            and _measurement_only(sentence[:end]):
        inherited = [(ConceptMatch(s0, s0, size_concept, False), assert_spans(sentence[:end], [(0, end)])[0])]
    if not own_finding and not inherited and previous and sizes and _ANAPHOR.match(sentence):
        assertion = assert_spans(sentence[:end], [(0, end)])[0]
        inherited = [(ConceptMatch(s0, s0, m.concept, m.abbreviation), assertion) for m in previous]
    if not own_finding and not inherited:
        return None
    prefix = ""
    # the subheading goes in front of the prompt only when the sentence names no anatomy
    # itself, or relies on the lead's finding ("LIVER: There is a 2 cm lesion." -> "Liver:
    # There is a 2 cm lesion"); otherwise the sentence says where ("aortocaval lymph node"
    # under "Mediastinum and lymph nodes:") and the subheading would only mislead the model
    context_anatomy = [m.concept.name for m in context.anatomy] if context is not None else []
    extra: list[str] = []
    if context is not None and (inherited or (context_anatomy and not any(not m.concept.is_finding for m in inside))):
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
        cut = _negated_tail(sentence[:end], own_present) if own_present else end
    else:
        if not config.keep_negated:
            return None
        negated, label = True, finding_pairs[0][1].label
        named = [m for m, _a in finding_pairs]
        cut = end
    # uncertainty is a property of the statement: "mass, likely renal cell carcinoma"
    uncertain = any(t.category == UNCERTAIN and t.start < cut for t in find_triggers(sentence[:end]))
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
        "named": tuple(m for m in named if m.concept.is_finding),  # for the sentences after it
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


def _link_duplicates(findings: list[Finding], where: list[tuple[frozenset[str], int]], threshold: float) -> list[Finding]:
    """Link a present finding to the earlier present one that says the same thing most closely
    (the best match, preferring one not linked yet, so that two impression lines about two
    lesions link to two findings). ``where`` holds each finding's concepts plus those of the
    subheading it stands under, and its block number."""
    out: list[Finding] = []
    linked: set[str] = set()
    for i, f in enumerate(findings):
        dup, best = None, (-1, -1.0)
        if gets_mask(f)[0]:
            for j, g in enumerate(out):
                if not gets_mask(g)[0] or not _same_finding(f, g, threshold, where[i], where[j]):
                    continue
                score = (g.finding_id not in linked, _jaccard(_tokens(f.prompt), _tokens(g.prompt)))
                if score > best:
                    dup, best = g.finding_id, score
        if dup is not None:
            linked.add(dup)
        out.append(f if dup is None else _replace(f, duplicate_of=dup))
    return out


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


#: Two sentences of one section are one finding only when they say nearly the same words:
#: "A 12 mm nodule in the LUL." and "There is a 12 mm solid nodule in the LUL." are two nodules.
SAME_SECTION_SIMILARITY = 0.9


def _same_finding(a: Finding, b: Finding, threshold: float, wa: tuple[frozenset[str], int],
                  wb: tuple[frozenset[str], int]) -> bool:
    """Near-duplicate test, guarded by size: two lesions of different size are two lesions."""
    (ca, block_a), (cb, block_b) = wa, wb
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
    if a.laterality and b.laterality and a.laterality != b.laterality:
        return False
    if a.section == b.section:
        # a report without headers: a later paragraph that names the same concepts, site,
        # side and size is its summary line ("Right lower lobe mass, 3 cm" after the findings)
        return a.section == "body" and block_a != block_b and ca == cb and len(ca) >= 2 and (
            a.laterality == b.laterality) and bool(a.measurements_mm) == bool(b.measurements_mm)
    # link an IMPRESSION/CONCLUSION line to the FINDINGS sentence it summarises
    shared = len(ca & cb)
    if shared and a.measurements_mm and b.measurements_mm:
        return True  # same size (checked above) and a shared concept
    return shared >= 2 and shared / min(len(ca), len(cb)) >= 0.6


def _replace(f: Finding, **changes) -> Finding:
    from dataclasses import replace

    return replace(f, **changes)
