"""Assertion of concepts: negation, normality, resolution, history and uncertainty.

Rules in the spirit of NegEx/ConText (Chapman et al. 2001; Harkema et al. 2009), written
for radiology: a *trigger* phrase modifies the concepts in its *scope*. Pre-triggers ("no",
"without", "suspicious for") reach forward, post-triggers ("is unremarkable", "has
resolved", "cannot be excluded") reach backward, both only inside their clause: a scope
ends at a termination term ("but", "however", ";") or at a trigger of another kind, and a
backward scope also ends at a comma ("Small RUL nodule, lungs otherwise clear"). Pseudo-
triggers ("no change", "not significantly changed") contain a trigger word but assert
nothing, so they block it. Matching is on the lower-cased sentence with word boundaries.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

NEGATED, NORMAL, RESOLVED, HISTORICAL, UNCERTAIN, PSEUDO = (
    "negated", "normal", "resolved", "historical", "uncertain", "pseudo",
)
PRE, POST, BOTH = "pre", "post", "both"

#: (phrase regex, category, direction). Longest match wins where triggers overlap.
TRIGGERS: tuple[tuple[str, str, str], ...] = (
    # pseudo-triggers: look like negation, assert presence
    (r"no (?:significant |definite |appreciable |substantial |major )?(?:interval )?(?:change|changes|increase|decrease|growth|progression)", PSEUDO, PRE),
    (r"(?:is |are |has |have )?not (?:significantly |substantially |markedly )?(?:changed|increased|decreased|enlarging|grown)", PSEUDO, PRE),
    (r"without (?:significant |interval )?(?:change|interval change|growth)", PSEUDO, PRE),
    (r"not only|no doubt|no further change|unchanged|gram negative|not well (?:seen|visualized|defined|circumscribed)", PSEUDO, PRE),
    # uncertainty (kept as findings, flagged)
    (r"can ?not be (?:excluded|ruled out)|could not be excluded|not (?:be )?excluded|cannot be entirely excluded|can't be excluded", UNCERTAIN, POST),
    (r"can ?not (?:exclude|rule out)|could not exclude|not excluding|to exclude|rule out|r/o", UNCERTAIN, PRE),
    (r"suspicious (?:for|of)|suspicious|concerning (?:for|of)|worrisome for|suggestive of|suggesting|suspected|suspect"
     r"|possible|possibly|probable|probably|likely|questionable|question of|equivocal|indeterminate"
     r"|may (?:represent|reflect|be)|might (?:represent|be)|could (?:represent|reflect|be)"
     r"|differential (?:diagnosis )?(?:includes|include|would include)|versus|vs|presumed|presumably", UNCERTAIN, PRE),
    (r"(?:is |are |appears? |remains? )?(?:suspected|possible|likely|probable|indeterminate|equivocal|suspicious|uncertain|questionable)", UNCERTAIN, POST),
    # resolution
    (r"no longer (?:seen|visible|visualized|visualised|identified|present|evident|demonstrated|apparent|appreciated|detectable|enlarged)|has resolved|have resolved|(?:is|are) resolved|resolved|has disappeared|have disappeared|disappeared", RESOLVED, POST),
    (r"(?:interval |complete |near[- ]complete )?resolution of|no longer|resolved", RESOLVED, PRE),
    (r"complete (?:metabolic )?response", RESOLVED, POST),
    # history
    (r"history of|h/o|hx of|status post|s/p|previously resected|post[- ]?resection of|post[- ]?excision of|post[- ]?(?:surgical|operative) (?:changes|appearances) (?:of|from|after)|prior (?:resection|excision|removal) of", HISTORICAL, PRE),
    # normality
    (r"(?:is |are |appears? |appear |remains? )?(?:unremarkable|normal|within normal limits|normal in (?:size|appearance|caliber|calibre|course)|of normal (?:size|caliber|calibre|appearance)|clear|intact|patent|preserved|symmetric|symmetrical)", NORMAL, POST),
    (r"normal(?:-| )(?:sized?|caliber|calibre|appearing)|normal|non-?enlarged|unremarkable|physiologic|physiological", NORMAL, PRE),
    # negation
    (r"(?:is |are |was |were |has |have )?(?:not|no longer) (?:seen|identified|visualized|visualised|demonstrated|present|detected|evident|appreciated|noted|enlarged|pathologically enlarged|enlarged by size criteria|significantly enlarged|dilated|thickened|involved|invaded|shown|found)"
     r"|(?:is |are )?absent|(?:is |are )?negative|(?:has |have )?(?:been )?ruled out|(?:is |are )?excluded", NEGATED, POST),
    (r"no (?:pathologically |morphologically )?(?:enlarged|abnormal|suspicious|significant|pathological|pathologic)|no (?:other |further |additional |new )?(?:definite |convincing )?(?:evidence of|signs? of)", NEGATED, PRE),
    (r"no|not|without|negative for|absence of|absent|free of|ruled out|rules out|excludes|denies|neither|nor|none|no evidence of|no sign of|no signs of|no definite|no new|no residual|no recurrent|no suspicious|no focal|no abnormal|no pathologic|no pathological|no enlarged", NEGATED, PRE),
)

#: Ends a scope in both directions.
TERMINATIONS = re.compile(
    r"\b(?:but|however|although|though|yet|except|apart from|aside from|other than|whereas|while|which|"
    r"there is|there are|there has been|noting|note is made|consistent with|compatible with|in keeping with|"
    r"representing|secondary to|due to|with associated|associated with|otherwise|with new|now)\b|[;:()]"
)
#: Also ends a backward (post-trigger) scope.
POST_TERMINATIONS = re.compile(r",|\band\b|\bwith\b|\bwithout\b")


@dataclass(frozen=True)
class Trigger:
    start: int
    end: int
    category: str
    direction: str


@functools.lru_cache(maxsize=4096)
def find_triggers(sentence: str) -> tuple[Trigger, ...]:
    """Non-overlapping triggers, longest first at each position (lower-cased matching)."""
    low = sentence.lower()
    found: list[Trigger] = []
    rules = [(pat, cat, direction) for pat, (_p, cat, direction) in zip(_PATTERNS, TRIGGERS)]
    spans: dict[tuple[int, int, str], str] = {}
    for pat, cat, direction in [*rules, *_EXTRA]:
        for m in pat.finditer(low):
            key = (m.start(), m.end(), cat)
            # the same words listed as pre- and post-trigger ("normal") reach both ways
            spans[key] = direction if spans.get(key, direction) == direction else BOTH
    found = [Trigger(a, b, cat, direction) for (a, b, cat), direction in spans.items()]
    kept: list[Trigger] = []
    for t in sorted(found, key=lambda t: (-(t.end - t.start), t.start)):
        if all(t.end <= k.start or t.start >= k.end for k in kept):
            kept.append(t)
    return tuple(sorted(kept, key=lambda t: t.start))


_PATTERNS = [re.compile(r"(?<![\w/-])(?:" + phrase + r")(?![\w/-])") for phrase, _c, _d in TRIGGERS]
#: Question marks: "?metastasis" (pre) and "... pneumonia?" (post) flag uncertainty.
_EXTRA = ((re.compile(r"\?(?=\w)"), UNCERTAIN, PRE), (re.compile(r"(?<=\w)\s?\?"), UNCERTAIN, POST))


@dataclass(frozen=True)
class Assertion:
    """Categories that apply to one concept span (empty set = asserted present, certain)."""

    categories: frozenset[str]

    @property
    def present(self) -> bool:
        return not (self.categories & {NEGATED, NORMAL, RESOLVED, HISTORICAL})

    @property
    def uncertain(self) -> bool:
        return UNCERTAIN in self.categories

    @property
    def label(self) -> str:
        for cat in (RESOLVED, HISTORICAL, NEGATED, NORMAL):
            if cat in self.categories:
                return cat
        return "present"


def assert_spans(sentence: str, spans: list[tuple[int, int]]) -> list[Assertion]:
    """Assertion of each (start, end) concept span of ``sentence`` (offsets into the sentence)."""
    triggers = [t for t in find_triggers(sentence) if t.category != PSEUDO]
    if not triggers:
        return [Assertion(frozenset()) for _ in spans]
    low = sentence.lower()
    terms = [m.start() for m in TERMINATIONS.finditer(low)]
    post_terms = sorted(terms + [m.start() for m in POST_TERMINATIONS.finditer(low)])
    results = []
    for s, e in spans:
        cats: set[str] = set()
        for t in triggers:
            if t.start < e and s < t.end:  # "not enlarged", "no abnormal enhancement"
                cats.add(t.category)
                continue
            if t.direction in (PRE, BOTH) and t.end <= s:
                barrier = [x for x in terms if t.end <= x < s]
                other = [o for o in triggers if t.end <= o.start < s and o.category != t.category and o.direction != POST]
                if not barrier and not other:
                    cats.add(t.category)
            if t.direction in (POST, BOTH) and t.start >= e:
                barrier = [x for x in post_terms if e <= x < t.start]
                if not barrier:
                    cats.add(t.category)
        results.append(Assertion(frozenset(cats)))
    return results
