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
from voxtell.reports.findings import finding_key

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
    assert first.finding_id == f"S1-f{finding_key(first.sentence)}"
    assert first.section == "findings"
    assert first.measurements_mm == (34.0, 28.0)
    assert first.laterality == "right"
    assert "mass" in first.concepts and "right upper lobe" in first.concepts
    assert "\n" not in first.prompt and "(RUL)" not in first.prompt
    impression = [f for f in findings if f.section == "impression"]
    assert impression[0].prompt.startswith("right upper lobe mass")  # RUL expanded
    assert impression[0].duplicate_of == first.finding_id and impression[0].uncertain
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


# ---- organ-system subheadings ("Mediastinum and lymph nodes:", "LIVER:") ----------------

SUBHEADING_REPORTS = ("r44_ct_chest_subheadings.txt", "r45_ct_abdomen_caps_subheadings.txt",
                      "r46_pet_ct_subheading_lists.txt", "r47_mr_breast_subheadings.txt")


def test_subheadings_are_never_findings(labelled):
    """Every present finding in the subheading reports is a labelled present sentence."""
    wrong = []
    for name in SUBHEADING_REPORTS:
        _text, gold, findings = labelled[name]
        for f in findings:
            if not f.negated and not any(_overlaps(f, g) and g["label"] == "present" for g in gold):
                wrong.append(f"{name}: {f.sentence!r} -> {f.prompt!r}")
            assert not f.sentence.endswith(":"), f.sentence
    assert not wrong, "\n".join(wrong)


def test_subheading_text_is_kept_only_where_the_sentence_names_no_anatomy():
    text = ("FINDINGS:\nLIVER:\nThere is a 2 cm lesion.\nLungs: 8 mm nodule in the RUL.\n"
            "Mediastinum and lymph nodes: No enlarged nodes.\nRight breast: Irregular mass, 14 mm.\n")
    findings = extract_findings(text, "S")
    by_sentence = {f.sentence: f for f in findings}
    liver = by_sentence["There is a 2 cm lesion."]
    assert liver.prompt == "Liver: There is a 2 cm lesion" and "liver" in liver.concepts
    lung = by_sentence["8 mm nodule in the RUL."]
    assert lung.prompt == "8 mm nodule in the right upper lobe" and not lung.negated
    assert text[lung.char_start : lung.char_end] == lung.sentence  # label excluded from the span
    nodes = by_sentence["No enlarged nodes."]
    assert nodes.negated and nodes.prompt != "Mediastinum and lymph nodes"
    breast = by_sentence["Irregular mass, 14 mm."]
    assert breast.prompt.startswith("Right breast: ") and breast.laterality == "right"
    assert len([f for f in findings if not f.negated]) == 3


def test_clauses_and_target_labels_are_not_subheadings():
    text = ("FINDINGS: There are two lesions: one in segment 7 measuring 2 cm.\n\nTARGET:\n"
            "GTV: 1.9 cm nodule in the RLL.\nCTV high risk: GTV plus 5 mm.\n")
    findings = [f for f in extract_findings(text, "S") if not f.negated]
    assert findings[0].sentence.startswith("There are two lesions:")
    gtv = next(f for f in findings if f.sentence.startswith("GTV:"))  # label kept in the span
    assert gtv.prompt == "1.9 cm nodule in the right lower lobe"


def _demo_report(lesions, study):
    import numpy as np

    from voxtell.data.phantoms import Lesion, Phantom
    from voxtell.data.reports import write_report

    shape = (4, 4, 4)
    phantom = Phantom(study, np.zeros(shape, np.int16), np.zeros(shape, np.uint8), np.diag([5.0, 5.0, 5.0, 1.0]), "RAS",
                      tuple(Lesion(k, s, loc, d, (0.0, 0.0, 0.0)) for k, s, loc, d in lesions))
    return write_report(phantom, study, seed=3)


@pytest.mark.parametrize("lesions", [
    [("lung_nodule", "left", "left upper lobe", 12.0), ("lung_nodule", "left", "left upper lobe", 12.0),
     ("liver_lesion", "right", "right hepatic lobe", 22.0), ("adrenal_lesion", "left", "left adrenal gland", 21.0)],
    [("lymph_node", None, "aortocaval", 14.0), ("lymph_node", None, "mediastinal", 17.0)],
    [],
])
def test_demo_reports_give_exactly_their_findings(lesions):
    """The demo's report format (organ subheadings, numbered impression) scored against its truth."""
    report = _demo_report(lesions, "demo1")
    findings = extract_findings(report.text, "demo1")
    present = [f for f in findings if not f.negated]
    truth = [s.sentence for s in report.findings]
    assert sorted(f.sentence for f in present) == sorted(truth * 2)  # FINDINGS + IMPRESSION
    first = [f for f in present if f.section == "findings"]
    assert all(f.duplicate_of is None for f in first)  # two same-size LUL nodules are two
    linked = [f.duplicate_of for f in present if f.section == "impression"]
    assert sorted(linked) == sorted(f.finding_id for f in first)  # each summary line -> its own finding
    assert not any("Mediastinum" in f.prompt for f in present if "aortocaval" in f.prompt)
