"""Assertion of concepts (ConText): negation, normality, resolution, history, hypothesis, uncertainty.

The algorithm of NegEx/ConText (Chapman et al. 2001; Harkema et al. 2009), written for
radiology. A *trigger* phrase modifies the concepts in its *scope*:

- **pre-triggers** ("no", "without", "suspicious for", "history of") reach forward to the
  end of the sentence; **post-triggers** ("is not seen", "is unremarkable", "has resolved",
  "cannot be excluded") reach backward to its start;
- a scope ends at a **terminator** ("but", "however", "which", ";", "(") and a backward
  scope also at a comma, "and", "with" ("Small RUL nodule, lungs otherwise clear");
- a forward scope ends at a pre-trigger of another kind ("no effusion; suspected
  pneumonia") - except that an **uncertainty trigger inside a negation keeps the
  negation**: "No suspicious pulmonary nodule" and "no new suspicious lesions" are negated;
- **pseudo-triggers** ("no change", "not significantly enlarged") contain a trigger word
  but assert nothing; they block the trigger they overlap;
- negation phrases that name a generic noun absorb the qualifier after it: "No finding
  compatible with pneumonia", "no evidence suggestive of recurrence" are negated.

Every trigger has one of the types in :data:`TYPES`; the table :data:`TRIGGERS` is data.
Matching is on the lower-cased sentence at word boundaries.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

NEGATED, NORMAL, RESOLVED, HISTORICAL, HYPOTHETICAL, UNCERTAIN, PSEUDO = (
    "negated", "normal", "resolved", "historical", "hypothetical", "uncertain", "pseudo",
)
#: Trigger types; a concept in the scope of any of the first five is not asserted present.
TYPES = (NEGATED, NORMAL, RESOLVED, HISTORICAL, HYPOTHETICAL, UNCERTAIN, PSEUDO)
NOT_PRESENT = frozenset({NEGATED, NORMAL, RESOLVED, HISTORICAL, HYPOTHETICAL})
PRE, POST, BOTH = "pre", "post", "both"

_BE = r"(?:is |are |was |were |has been |have been |had been |be |being )?"
_SEEN = (
    r"(?:seen|identified|visualized|visualised|demonstrated|present|detected|evident|appreciated|noted|"
    r"observed|visible|depicted|delineated|recognized|recognised|discernible|shown|found|apparent|"
    r"enlarged|pathologically enlarged|enlarged by size criteria|significantly enlarged|dilated|thickened|"
    r"involved|invaded|infiltrated|displaced)"
)
_GENERIC = r"(?:findings?|evidence|signs?|features?|appearances?|abnormalit(?:y|ies)|lesions?)"
_QUALIFIER = (
    r"(?:compatible with|consistent with|suggestive of|suspicious (?:for|of)|indicative of|diagnostic of|"
    r"typical (?:of|for)|characteristic of|in keeping with|concerning for|to suggest|of)"
)

#: (phrase regex, type, direction). The longest match wins where triggers overlap.
TRIGGERS: tuple[tuple[str, str, str], ...] = (
    # ---- pseudo-triggers: look like negation, assert nothing
    (r"no (?:significant |definite |appreciable |substantial |major |interval |measurable )*(?:change|changes|increase|decrease|growth|progression|difference)", PSEUDO, PRE),
    (r"(?:is |are |has |have |was |were )?not (?:significantly |substantially |markedly |appreciably )?(?:changed|increased|decreased|enlarging|grown|progressed)", PSEUDO, PRE),
    (r"without (?:significant |interval )?(?:change|interval change|growth|progression)", PSEUDO, PRE),
    (r"not only|no doubt|no further change|unchanged|gram negative|not well (?:seen|visualized|defined|circumscribed)|not clearly separable|no longer than|cannot be separated|not be separated", PSEUDO, PRE),
    # ---- uncertainty (asserted present, flagged uncertain)
    (r"can ?not be (?:excluded|ruled out)|could not be (?:excluded|ruled out)|(?:is |are )?not (?:be )?excluded|cannot be entirely excluded|can't be excluded|cannot be completely excluded", UNCERTAIN, POST),
    (r"can ?not (?:exclude|rule out)|could not exclude|not excluding|differential", UNCERTAIN, PRE),
    (r"suspicious (?:for|of)|suspicious|concerning (?:for|of)|worrisome (?:for|of)|suggestive of|suggesting|suggests|suspected|suspect|suspicion of"
     r"|possible|possibly|probable|probably|likely|questionable|question of|equivocal|indeterminate|presumed|presumably"
     r"|may (?:represent|reflect|be|indicate)|might (?:represent|be)|could (?:represent|reflect|be)|favou?r|favou?red|versus|vs"
     r"|concerning|worrisome", UNCERTAIN, PRE),
    (r"(?:is |are |appears? |remains? )?(?:suspected|possible|likely|probable|indeterminate|equivocal|suspicious|uncertain|questionable|not excluded)", UNCERTAIN, POST),
    # ---- hypothetical: named but not asserted ("if", "should ... develop", "to evaluate for")
    (r"if(?: there (?:is|are|be))?|in case of|in the event of|should there be|evaluate for|evaluation for|assess for|assessment for|to evaluate|to assess|screening for|return if|(?:to )?rule out|r/o|to exclude", HYPOTHETICAL, PRE),
    # ---- resolution
    (r"no longer " + _SEEN + r"|has resolved|have resolved|(?:is|are) resolved|resolved|has disappeared|have disappeared|disappeared|(?:has|have) regressed completely", RESOLVED, POST),
    (r"(?:interval |complete |near[- ]complete )?resolution of|no longer|resolved|disappearance of", RESOLVED, PRE),
    (r"complete (?:metabolic )?response", RESOLVED, POST),
    # ---- history
    (r"history of|h/o|hx of|status post|s/p|previously resected|post[- ]?resection of|post[- ]?excision of|post[- ]?(?:surgical|operative) (?:changes|appearances) (?:of|from|after)|prior (?:resection|excision|removal) of|known history of", HISTORICAL, PRE),
    # ---- normality
    (r"(?:is |are |appears? |appear |remains? |was |were )?(?:unremarkable|normal|within normal limits|normal in (?:size|appearance|caliber|calibre|course)|of normal (?:size|caliber|calibre|appearance)|clear|intact|patent|preserved|symmetric|symmetrical)", NORMAL, POST),
    (r"normal(?:-| )(?:sized?|caliber|calibre|appearing)|normal|non-?enlarged|unremarkable|physiologic|physiological", NORMAL, PRE),
    # ---- negation
    (r"(?:(?:is|are|was|were|has|have|had|could|can) )?(?:not|no longer) (?:been |be )?" + _SEEN + r"|(?:is |are |was |were )?absent|(?:is |are |was |were )?negative(?! for)|(?:has |have )?(?:been )?ruled out|(?:is |are |was |were )?excluded|(?:is |are |was |were )?not present", NEGATED, POST),
    (r"no (?:other |further |additional |new |residual |definite |convincing |obvious |significant |\w+ )?" + _GENERIC + r" " + _QUALIFIER, NEGATED, PRE),
    (r"(?:not|nor|neither) (?:\w+ )?" + _QUALIFIER.replace("|of)", ")"), NEGATED, PRE),
    (r"no (?:pathologically |morphologically )?(?:enlarged|abnormal|suspicious|significant|pathological|pathologic)|no (?:other |further |additional |new )?(?:definite |convincing )?(?:evidence of|signs? of)", NEGATED, PRE),
    (r"there (?:is|are|was|were) no|no|not|without|negative for|absence of|absent|free of|ruled out|rules out|excludes|denies|denied|deny|denying|no known|-ve for|neither|nor|none|no evidence of|no sign of|no signs of|no definite|no new|no residual|no recurrent|no suspicious|no focal|no abnormal|no pathologic|no pathological|no enlarged|lack of|lacks", NEGATED, PRE),
)

#: Ends a scope in both directions.
TERMINATIONS = re.compile(
    r"\b(?:but|however|although|though|yet|except|apart from|aside from|other than|whereas|while|which|"
    r"there is|there are|there has been|noting|note is made|consistent with|compatible with|in keeping with|"
    r"representing|secondary to|due to|with associated|"
    r"associated with|otherwise|with new|now|in addition|additionally|also|as well as|causing|resulting in|"
    r"(?<!not )(?<!no )(?:shows?|showed|shown|demonstrates?|demonstrated|reveals?|revealed))\b|[;:()]|[.!?](?=\s)"
)
#: Also ends the forward scope of a normality trigger: "Normal kidneys, with multiple cortical cysts".
NORMAL_TERMINATIONS = re.compile(r"\bwith\b")
#: Also ends a backward (post-trigger) scope.
POST_TERMINATIONS = re.compile(r",|\band\b|\bwith\b|\bwithout\b|\bin\b(?= (?:the|a) )")


@dataclass(frozen=True)
class Trigger:
    start: int
    end: int
    category: str
    direction: str


_PATTERNS = [re.compile(r"(?<![\w/-])(?:" + phrase + r")(?![\w/-])") for phrase, _c, _d in TRIGGERS]
#: Question marks: "?metastasis" (pre) and "... pneumonia?" (post) flag uncertainty.
_EXTRA = ((re.compile(r"\?(?=\w)"), UNCERTAIN, PRE), (re.compile(r"(?<=\w)\s?\?"), UNCERTAIN, POST))


@functools.lru_cache(maxsize=8192)
def find_triggers(sentence: str) -> tuple[Trigger, ...]:
    """Non-overlapping triggers, longest first at each position (lower-cased matching)."""
    low = sentence.lower()
    spans: dict[tuple[int, int, str], str] = {}
    rules = [(pat, cat, direction) for pat, (_p, cat, direction) in zip(_PATTERNS, TRIGGERS)]
    for pat, cat, direction in [*rules, *_EXTRA]:
        for m in pat.finditer(low):
            if m.end() == m.start():
                continue
            key = (m.start(), m.end(), cat)
            # the same words listed as pre- and post-trigger ("normal") reach both ways
            spans[key] = direction if spans.get(key, direction) == direction else BOTH
    found = [Trigger(a, b, cat, direction) for (a, b, cat), direction in spans.items()]
    kept: list[Trigger] = []
    for t in sorted(found, key=lambda t: (-(t.end - t.start), t.start, TYPES.index(t.category))):
        if all(t.end <= k.start or t.start >= k.end for k in kept):
            kept.append(t)
    return tuple(sorted(kept, key=lambda t: t.start))


@dataclass(frozen=True)
class Assertion:
    """Trigger types that apply to one concept span (empty set = asserted present, certain)."""

    categories: frozenset[str]

    @property
    def present(self) -> bool:
        return not (self.categories & NOT_PRESENT)

    @property
    def uncertain(self) -> bool:
        return UNCERTAIN in self.categories

    @property
    def label(self) -> str:
        for cat in (RESOLVED, HISTORICAL, HYPOTHETICAL, NEGATED, NORMAL):
            if cat in self.categories:
                return cat
        return "present"


def _blocks(trigger: Trigger, other: Trigger) -> bool:
    """Does ``other``, lying inside ``trigger``'s forward scope, end that scope?"""
    if other.direction == POST or other.category == trigger.category:
        return False
    if trigger.category in (NEGATED, HYPOTHETICAL) and other.category in (UNCERTAIN, NORMAL):
        return False  # "no suspicious nodule", "to evaluate possible metastases"
    return True


def assert_spans(sentence: str, spans: list[tuple[int, int]]) -> list[Assertion]:
    """Assertion of each (start, end) concept span of ``sentence`` (offsets into the sentence)."""
    triggers = [t for t in find_triggers(sentence) if t.category != PSEUDO]
    if not triggers:
        return [Assertion(frozenset()) for _ in spans]
    low = sentence.lower()
    terms = [m.start() for m in TERMINATIONS.finditer(low)]
    post_terms = sorted(terms + [m.start() for m in POST_TERMINATIONS.finditer(low)])
    normal_terms = sorted(terms + [m.start() for m in NORMAL_TERMINATIONS.finditer(low)])
    results = []
    for s, e in spans:
        cats: set[str] = set()
        forward: list[Trigger] = []
        for t in triggers:
            if t.start < e and s < t.end:  # "not enlarged", "no abnormal enhancement"
                cats.add(t.category)
                continue
            if t.direction in (PRE, BOTH) and t.end <= s:
                barrier = any(t.end <= x < s for x in (normal_terms if t.category == NORMAL else terms))
                other = any(t.end <= o.start < s and _blocks(t, o) for o in triggers)
                if not barrier and not other:
                    cats.add(t.category)
                    forward.append(t)
            if t.direction in (POST, BOTH) and t.start >= e:
                if not any(e <= x < t.start for x in post_terms):
                    cats.add(t.category)
        # "no suspicious nodule": the uncertainty word qualifies what is negated
        negations = [t.start for t in forward if t.category == NEGATED]
        if negations and not [t for t in forward if t.category == UNCERTAIN and t.start < min(negations)]:
            cats.discard(UNCERTAIN)
        results.append(Assertion(frozenset(cats)))
    return results
