"""The assertion rules on the public NegEx/ConText test kit (Chapman et al.; Apache-2.0).

tests/data/negex/rsAnnotations-1-120-random.txt: 2,376 sentences of 120 de-identified
University of Pittsburgh reports (discharge summaries, emergency, radiology, surgical
pathology, echo), each with one condition (written in capitals in the sentence) and its
reference negation (Affirmed/Negated) and temporality (Recent/Historical/Not particular).
genConText_results.tsv holds the reference ConText implementation's own output on the same
kit (genConText, shipped with the kit), so both are scored the same way here.

These sentences are general clinical text, not only radiology, and the kit's conventions
differ from this project's in places ("normal" statements are Affirmed in the kit), so the
figures are a check of the negation cue and scope rules, not of finding extraction.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from voxtell.reports.context import HISTORICAL, NEGATED, RESOLVED, assert_spans

KIT = Path(__file__).parent / "data" / "negex"


def _rows():
    with open(KIT / "rsAnnotations-1-120-random.txt", encoding="latin-1", newline="") as fh:
        return [r for r in csv.reader(fh, delimiter="\t") if len(r) >= 7 and r[0].isdigit()]


def _span(sentence: str, phrase: str) -> tuple[int, int] | None:
    words = phrase.split()
    if not words:
        return None
    m = re.search(r"\s+".join(re.escape(w) for w in words), sentence, re.IGNORECASE)
    return (m.start(), m.end()) if m else None


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.fixture(scope="module")
def scored():
    reference = {}
    with open(KIT / "genConText_results.tsv", encoding="latin-1", newline="") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            reference[r["id"]] = r
    out = []
    for r in _rows():
        span = _span(r[3], r[2])
        if span is None:
            continue
        a = assert_spans(r[3], [span])[0]
        ref = reference.get(r[0], {})
        out.append({
            "gold_neg": r[4].strip().lower() == "negated",
            "gold_hist": r[5].strip().lower() == "historical",
            # the kit counts a resolved condition as negated ("her hyponatremia ... resolved")
            "ours_neg": bool(a.categories & {NEGATED, RESOLVED}),
            "ours_hist": HISTORICAL in a.categories,
            "ref_neg": ref.get("context_negation", "").strip().lower() == "negated",
            "ref_hist": ref.get("context_temporality", "").strip().lower() == "historical",
        })
    return out


def _figures(rows, gold: str, system: str):
    tp = sum(r[gold] and r[system] for r in rows)
    fp = sum(r[system] and not r[gold] for r in rows)
    fn = sum(r[gold] and not r[system] for r in rows)
    return _prf(tp, fp, fn)


def test_kit_is_complete(scored):
    assert len(scored) >= 2300
    assert sum(r["gold_neg"] for r in scored) >= 450


def test_negation_on_the_test_kit(scored):
    ours = _figures(scored, "gold_neg", "ours_neg")
    ref = _figures(scored, "gold_neg", "ref_neg")
    print(f"\nNegEx/ConText kit, negation ({len(scored)} sentences): ours P {ours[0]:.3f} R {ours[1]:.3f} "
          f"F1 {ours[2]:.3f}; reference genConText P {ref[0]:.3f} R {ref[1]:.3f} F1 {ref[2]:.3f}")
    assert ours[2] >= 0.85


def test_history_on_the_test_kit(scored):
    for kind in ("hist",):
        ours = _figures(scored, f"gold_{kind}", f"ours_{kind}")
        ref = _figures(scored, f"gold_{kind}", f"ref_{kind}")
        print(f"\nNegEx/ConText kit, {kind}: ours P {ours[0]:.3f} R {ours[1]:.3f} F1 {ours[2]:.3f}; "
              f"reference genConText P {ref[0]:.3f} R {ref[1]:.3f} F1 {ref[2]:.3f}")
    # radiology-tuned triggers: history is a weak point of surface rules (Harkema et al. 2009)
    assert _figures(scored, "gold_hist", "ours_hist")[0] >= 0.5
