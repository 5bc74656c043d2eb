"""Finding extraction measured on the labelled test reports (tests/data/reports).

labels.jsonl lists, for every report, each sentence that names a lesion or target: its
offsets in the decoded report, "present" or "negated" (negated, normal, resolved or
historical), and whether it is uncertain or repeats an earlier finding. A predicted
present finding must overlap a "present" sentence; everything else is a false positive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxtell.reports import FindingsConfig, extract_findings, read_report

REPORTS = Path(__file__).parent / "data" / "reports"


@pytest.fixture(scope="module")
def labelled():
    labels = [json.loads(line) for line in (REPORTS / "labels.jsonl").read_text(encoding="utf-8").splitlines()]
    by_report: dict[str, list[dict]] = {}
    for label in labels:
        by_report.setdefault(label["report"], []).append(label)
    results = {}
    for path in sorted(REPORTS.glob("*.txt")):
        text = read_report(path)
        results[path.name] = (text, by_report.get(path.name, []), extract_findings(text, path.stem))
    return results


def _overlaps(f, gold) -> bool:
    return min(f.char_end, gold["char_end"]) > max(f.char_start, gold["char_start"])


def test_test_set_is_large_and_varied(labelled):
    names = " ".join(labelled)
    assert len(labelled) >= 40
    for kind in ("ct_", "mr_", "pet_", "rt_", "brain", "neck", "abdomen", "pelvis", "chest"):
        assert kind in names, kind
    labels = [g for _t, gold, _f in labelled.values() for g in gold]
    assert sum(g["label"] == "negated" for g in labels) >= 50
    assert sum(g["duplicate"] for g in labels) >= 20


def test_labels_point_at_their_sentences(labelled):
    for name, (text, gold, _f) in labelled.items():
        for g in gold:
            assert text[g["char_start"] : g["char_end"]] == g["sentence"], name


def test_precision_and_recall(labelled):
    tp = fp = fn = 0
    errors = []
    for name, (_text, gold, findings) in labelled.items():
        present = [f for f in findings if not f.negated]
        for g in gold:
            hit = any(_overlaps(f, g) for f in present)
            if g["label"] == "present":
                tp += hit
                fn += not hit
                if not hit:
                    errors.append(f"FN {name}: {g['sentence']!r}")
        for f in present:
            if not any(_overlaps(f, g) and g["label"] == "present" for g in gold):
                fp += 1
                errors.append(f"FP {name}: {f.sentence!r}")
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"\nfindings on {len(labelled)} labelled reports: precision {precision:.3f} recall {recall:.3f} "
          f"(tp {tp}, fp {fp}, fn {fn})")
    assert precision >= 0.9 and recall >= 0.9, "\n".join(errors)


def test_negated_statements_are_not_segmented(labelled):
    wrong = [
        (name, g["sentence"])
        for name, (_t, gold, findings) in labelled.items()
        for g in gold
        if g["label"] == "negated" and any(_overlaps(f, g) and not f.negated for f in findings)
    ]
    assert not wrong


def test_duplicates_and_uncertainty_agree_with_labels(labelled):
    dup_ok = dup_n = unc_ok = unc_n = 0
    for _name, (_t, gold, findings) in labelled.items():
        for g in gold:
            if g["label"] != "present":
                continue
            f = next(f for f in findings if _overlaps(f, g) and not f.negated)
            dup_n += 1
            dup_ok += g["duplicate"] == (f.duplicate_of is not None)
            unc_n += 1
            unc_ok += g["uncertain"] == f.uncertain
    print(f"\nduplicate links agree {dup_ok}/{dup_n}, uncertainty agrees {unc_ok}/{unc_n}")
    assert dup_ok / dup_n >= 0.9
    assert unc_ok / unc_n >= 0.9


def test_offsets_index_the_original_text(labelled):
    for name, (text, _gold, findings) in labelled.items():
        for f in findings:
            assert text[f.char_start : f.char_end] == f.sentence, name
            assert f.sentence.strip() == f.sentence


def test_example_report_fields():
    text = read_report(REPORTS / "r01_ct_chest_staging.txt")
    findings = extract_findings(text, "S1")
    first = findings[0]
    assert first.finding_id == "S1-f000"
    assert first.section == "findings"
    assert first.measurements_mm == (34.0, 28.0)
    assert first.laterality == "right"
    assert "mass" in first.concepts and "right upper lobe" in first.concepts
    assert "\n" not in first.prompt and "(RUL)" not in first.prompt
    impression = [f for f in findings if f.section == "impression"]
    assert impression[0].prompt.startswith("right upper lobe mass")  # RUL expanded
    assert impression[0].duplicate_of == "S1-f000" and impression[0].uncertain
    assert not any("PET-CT" in f.sentence for f in findings)  # recommendation
    assert not any(f.sentence.startswith("Lung cancer staging") for f in findings)  # history skipped
    resolved = [f for f in findings if f.assertion == "resolved"]
    assert resolved and resolved[0].negated


def test_list_items_inherit_the_lead_line():
    findings = extract_findings(read_report(REPORTS / "r43_ct_lung_mets_list.txt"), "S43")
    items = [f for f in findings if f.sentence.startswith(("RUL", "RLL", "LUL"))]
    assert [f.prompt for f in items][:2] == ["Multiple pulmonary nodules: right upper lobe 11 mm",
                                             "Multiple pulmonary nodules: right lower lobe 7 mm"]
    assert all(f.duplicate_of is None and "nodule" in f.concepts for f in items)


def test_negated_clause_is_trimmed_from_the_prompt():
    findings = extract_findings("FINDINGS: Mass in the RUL measuring 2 cm, without pleural effusion.", "S")
    assert findings[0].prompt == "Mass in the right upper lobe measuring 2 cm"
    assert findings[0].concepts == ("mass", "right upper lobe")


def test_keep_negated_false_omits_negated_statements():
    text = "Findings: No pleural effusion. 5 mm nodule in the LLL."
    assert [f.negated for f in extract_findings(text, "S")] == [True, False]
    kept = extract_findings(text, "S", FindingsConfig(keep_negated=False))
    assert [f.prompt for f in kept] == ["5 mm nodule in the left lower lobe"]
