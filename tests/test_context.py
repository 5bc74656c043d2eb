"""Assertion and scope (ConText), phrase by phrase, and the finding classes of issue 21.

Every phrase here is written for this test; none comes from the labelled report sets.
"""

from __future__ import annotations

import codecs

import pytest

from voxtell.reports import FindingsConfig, extract_findings
from voxtell.reports.context import (
    HISTORICAL, HYPOTHETICAL, NEGATED, NORMAL, POST, PRE, PSEUDO, RESOLVED, TRIGGERS, TYPES, UNCERTAIN,
    assert_spans, find_triggers,
)
from voxtell.reports.findings import Finding, finding_key, gets_mask, recommendation_start
from voxtell.reports.pipeline import build_pipeline, defined_abbreviations, split_sentences, stem, tokenize
from voxtell.reports.textio import BinaryReportError, decode_report


def assertion_of(sentence: str, word: str):
    i = sentence.index(word)
    return assert_spans(sentence, [(i, i + len(word))])[0]


# ---- trigger types and directions --------------------------------------------------------

def test_every_trigger_has_a_known_type_and_direction():
    assert {cat for _p, cat, _d in TRIGGERS} == set(TYPES)
    assert {d for _p, _c, d in TRIGGERS} == {PRE, POST}


@pytest.mark.parametrize("sentence, word, label, uncertain", [
    # pre-negation
    ("No pleural effusion.", "effusion", "negated", False),
    ("There is no focal liver lesion.", "lesion", "negated", False),
    ("Without evidence of pneumothorax.", "pneumothorax", "negated", False),
    ("No effusion or consolidation.", "consolidation", "negated", False),
    ("Absence of ascites.", "ascites", "negated", False),
    # uncertainty inside a negation keeps the negation
    ("No suspicious pulmonary nodule.", "nodule", "negated", False),
    ("No new suspicious lesions in the liver.", "lesions", "negated", False),
    ("No definite suspicious osseous lesion.", "lesion", "negated", False),
    ("No finding compatible with pneumonia.", "pneumonia", "negated", False),
    ("No evidence suggestive of local recurrence.", "recurrence", "negated", False),
    ("No features to suggest malignancy.", "malignancy", "negated", False),
    ("Appearance not consistent with abscess.", "abscess", "negated", False),
    # post-negation
    ("Pericardial effusion is not observed.", "effusion", "negated", False),
    ("Pleural effusion was not seen.", "effusion", "negated", False),
    ("A pneumothorax is not identified.", "pneumothorax", "negated", False),
    ("Lymphadenopathy has not been demonstrated.", "Lymphadenopathy", "negated", False),
    ("Free fluid is absent.", "fluid", "negated", False),
    # uncertainty alone: present, flagged
    ("Nodule suspicious for metastasis.", "metastasis", "present", True),
    ("Findings suspicious for pneumonia.", "pneumonia", "present", True),
    ("Possible small left effusion.", "effusion", "present", True),
    ("Metastasis cannot be excluded.", "Metastasis", "present", True),
    ("Lesion, likely a hemangioma.", "hemangioma", "present", True),
    # pseudo-negation: present, certain
    ("No change in the right lower lobe mass.", "mass", "present", False),
    ("The nodule is not significantly changed.", "nodule", "present", False),
    ("Mass without interval growth.", "Mass", "present", False),
    # historical, hypothetical, resolved, normal
    ("History of pulmonary embolism.", "embolism", "historical", False),
    ("Status post resection of the sigmoid tumour.", "tumour", "historical", False),
    ("If there is a fracture, a CT is advised.", "fracture", "hypothetical", False),
    ("Evaluate for pulmonary embolism.", "embolism", "hypothetical", False),
    ("The previously seen effusion has resolved.", "effusion", "resolved", False),
    ("Resolution of the consolidation.", "consolidation", "resolved", False),
    ("The lymph nodes are normal in size.", "lymph nodes", "normal", False),
])
def test_assertion_phrase_by_phrase(sentence, word, label, uncertain):
    a = assertion_of(sentence, word)
    assert (a.label, a.uncertain) == (label, uncertain), a.categories


@pytest.mark.parametrize("sentence, word, label", [
    # terminators end a scope
    ("No effusion, but there is a 2 cm mass.", "mass", "present"),
    ("No adenopathy; suspected pneumonia in the RLL.", "pneumonia", "present"),
    ("No flow in the vein, consistent with thrombosis.", "thrombosis", "present"),
    ("No pneumothorax however a small effusion remains.", "effusion", "present"),
    # a backward scope ends at a comma or "and"
    ("Small nodule in the lingula, lungs otherwise clear.", "nodule", "present"),
    ("Mass in the liver and effusion is not seen.", "Mass", "present"),
    # a forward scope ends at a trigger of another kind
    ("No effusion. Suspected metastasis.", "metastasis", "present"),
    ("History of breast cancer, now new liver metastases.", "metastases", "present"),
])
def test_scope_ends(sentence, word, label):
    assert assertion_of(sentence, word).label == label


def test_pseudo_trigger_blocks_the_trigger_it_overlaps():
    cats = [t.category for t in find_triggers("no interval change of the nodule")]
    assert cats == [PSEUDO]
    assert {t.category for t in find_triggers("no new nodule; possible pneumonia; history of")} >= {NEGATED, UNCERTAIN, HISTORICAL}


def test_labels_of_all_types():
    assert assertion_of("if a mass is found", "mass").label == HYPOTHETICAL
    assert assertion_of("history of lymphoma", "lymphoma").label == HISTORICAL
    assert assertion_of("the effusion has resolved", "effusion").label == RESOLVED
    assert assertion_of("the spleen is normal", "spleen").label == NORMAL


# ---- matching by word form ---------------------------------------------------------------

def test_stems_unify_word_forms():
    assert stem("consolidative") == stem("consolidated") == stem("consolidations") == stem("consolidation")
    assert stem("nodules") == stem("nodule") and stem("masses") == stem("mass")
    assert stem("fractured") == stem("fracture") == stem("fractures")
    assert stem("metastases") == stem("metastasis") and stem("opacities") == stem("opacity")
    assert stem("RUL") == "rul" and stem("T2") == "t2"


def test_tokens_keep_offsets():
    text = "free-fluid in the pelvis"
    assert [(t.text, text[t.start : t.end]) for t in tokenize(text)][:2] == [("free", "free"), ("fluid", "fluid")]


@pytest.mark.parametrize("sentence, concept", [
    ("Consolidative opacity in the right lower lobe.", "consolidation"),
    ("Consolidated left lower lobe.", "consolidation"),
    ("Mediastinal lymphadenomegaly.", "lymph node"),
    ("Bilateral pulmonary thromboembolism.", "pulmonary embolism"),
    ("Thrombi in the left femoral vein.", "thrombus"),
    ("Small amount of free-fluid in the pelvis.", "ascites"),
    ("Free  fluid in the pelvis.", "ascites"),
    ("Multiple uterine fibroids.", "leiomyoma"),
    ("Intramural leiomyoma of the uterus.", "leiomyoma"),
    ("Hypodense area in liver segment 4.", "lesion"),
    ("Rib destruction on the right.", "bone destruction"),
    ("Two masses in the pancreas.", "mass"),
    ("Fractured left 6th rib.", "fracture"),
    ("Renal cysts bilaterally.", "cyst"),
    ("Subphrenic collection of 4 cm.", "collection"),
    ("GTV: 3 cm tumour in the RUL.", "gross tumor volume"),
    ("CTV-HR covers the cervix.", "clinical target volume"),
    ("ITV derived from 4D CT of the lesion in the LLL.", "internal target volume"),
    ("PTV2 of the nodal volume.", "planning target volume"),
])
def test_word_forms_match_concepts(sentence, concept):
    pipe = build_pipeline(FindingsConfig())
    assert concept in {m.concept.name for m in pipe.match_concepts(sentence)}


def test_abbreviations_match_case_sensitively():
    pipe = build_pipeline(FindingsConfig())
    assert {m.concept.name for m in pipe.match_concepts("Nodule in the RUL.")} == {"nodule", "right upper lobe"}
    assert "right upper lobe" not in {m.concept.name for m in pipe.match_concepts("a rul of thumb")}


def test_terms_do_not_match_across_punctuation():
    pipe = build_pipeline(FindingsConfig())
    assert "ascites" not in {m.concept.name for m in pipe.match_concepts("Free. Fluid")}
    assert "ascites" in {m.concept.name for m in pipe.match_concepts("Free - fluid")}


@pytest.mark.parametrize("text, present", [
    ("FINDINGS: Discussed with the primary service.", False),
    ("FINDINGS: The primary in the left upper lobe measures 3 cm.", True),
    ("FINDINGS: The lesion was discussed at the tumour board.", True),   # "tumour" anchors it
    ("FINDINGS: See lesion list.", False),
    ("FINDINGS: The lesion measures 14 mm.", True),
    ("FINDINGS: A lesion in the liver.", True),
])
def test_ambiguous_single_words_need_context(text, present):
    assert any(gets_mask(f)[0] for f in extract_findings(text, "S")) == present


# ---- recommendation and comparison clauses -----------------------------------------------

def test_recommendation_clause_keeps_the_finding():
    text = ("FINDINGS: A 4 mm calcified nodule is seen in the right thyroid lobe; ultrasound correlation "
            "is recommended.\nFollow-up CT in 3 months is recommended for the lung nodule.\n"
            "Recommend biopsy of the liver mass.\n")
    findings = extract_findings(text, "S")
    assert [f.prompt for f in findings] == ["A 4 mm calcified nodule is seen in the right thyroid lobe"]
    assert findings[0].sentence.endswith("is recommended.")


def test_recommendation_start():
    assert recommendation_start("Recommend MRI.") == 0
    assert recommendation_start("Liver mass, further evaluation with MRI is advised.") == 10
    assert recommendation_start("Liver mass.") is None


def test_comparison_clause_keeps_the_finding():
    text = "FINDINGS: Compared with the prior CT, the 6 mm nodule in the RLL is unchanged."
    (f,) = extract_findings(text, "S")
    assert gets_mask(f)[0] and "nodule" in f.concepts


# ---- sentence splitting ------------------------------------------------------------------

def _split(text):
    return [text[a:b] for a, b in split_sentences(text)]


def test_split_plain_sentences_and_abbreviations():
    assert _split("Mass in the RUL. No effusion.") == ["Mass in the RUL.", "No effusion."]
    assert _split("Nodule approx. 5 mm vs. 4 mm before.") == ["Nodule approx. 5 mm vs. 4 mm before."]
    assert _split("Lesion 1.5 cm. no ascites.") == ["Lesion 1.5 cm.", "no ascites."]


def test_split_run_on_numbered_quoted_and_bulleted_lists():
    assert _split("1. Mass in the RUL 2. Nodule in the LLL 3. Effusion") == [
        "1. Mass in the RUL", "2. Nodule in the LLL", "3. Effusion"]
    assert _split('"Bilateral pleural effusion." "Atelectasis in the left lower lobe."') == [
        '"Bilateral pleural effusion."', '"Atelectasis in the left lower lobe."']
    assert _split('"Right pleural effusion" "Consolidation in the right lower lobe"') == [
        '"Right pleural effusion"', '"Consolidation in the right lower lobe"']
    assert _split("Effusion on the right \u2022 Nodule in the RUL") == ["Effusion on the right", "\u2022 Nodule in the RUL"]
    assert _split("Right pleural effusion Consolidation in the left lower lobe") == [
        "Right pleural effusion", "Consolidation in the left lower lobe"]
    assert _split("Segment 2 of the liver, Couinaud classification") == ["Segment 2 of the liver, Couinaud classification"]


def test_split_impression_lists_become_findings_with_exact_offsets():
    text = ('IMPRESSION: "Right pleural effusion." "Consolidation in the right lower lobe." '
            '"Hypodense area in the liver."\n')
    findings = [f for f in extract_findings(text, "S") if gets_mask(f)[0]]
    assert len(findings) == 3
    for f in findings:
        assert text[f.char_start : f.char_end] == f.sentence


def test_defined_abbreviations():
    assert defined_abbreviations("mass in the right upper lobe (RUL) and") == {"RUL": "right upper lobe"}
    assert defined_abbreviations("clinical target volume (CTV)") == {"CTV": "clinical target volume"}
    assert defined_abbreviations("nodule (see above)") == {}


# ---- duplicates --------------------------------------------------------------------------

def test_impression_without_headers_links_to_its_finding():
    text = ("CT chest.\n\nThere is a 3 cm mass in the right lower lobe. Small left pleural effusion.\n\n"
            "Right lower lobe mass, 3 cm.\n")
    present = [f for f in extract_findings(text, "S") if not f.negated]
    first, _effusion, summary = present
    assert summary.duplicate_of == first.finding_id and first.duplicate_of is None
    assert [gets_mask(f)[0] for f in present] == [True, True, False]


def test_two_lesions_of_one_kind_in_a_list_are_two():
    text = "FINDINGS:\n- Nodule in the RUL, 5 mm.\n- Nodule in the RLL, 5 mm.\n"
    assert [f.duplicate_of for f in extract_findings(text, "S")] == [None, None]


# ---- finding ids and the mask rule -------------------------------------------------------

def test_finding_id_is_stable_when_the_rest_of_the_report_changes():
    sentence = "There is a 2 cm mass in the left kidney."
    a = extract_findings(f"FINDINGS: {sentence} No ascites.", "S")
    b = extract_findings(f"CT ABDOMEN\n\nHistory: pain.\n\nFINDINGS: Liver cyst, 1 cm. {sentence}", "S")
    ida = next(f.finding_id for f in a if f.sentence == sentence)
    idb = next(f.finding_id for f in b if f.sentence == sentence)
    assert ida == idb == f"S-f{finding_key(sentence)}"


def test_repeated_identical_sentences_get_distinct_ids():
    text = "FINDINGS: Right pleural effusion.\n\nIMPRESSION: Right pleural effusion.\n"
    ids = [f.finding_id for f in extract_findings(text, "S")]
    assert len(ids) == 2 and ids[1] == ids[0] + "-2"


def _finding(**kw) -> Finding:
    base = dict(finding_id="S-f1", sentence="Mass.", prompt="Mass", section="findings", char_start=0, char_end=5,
                negated=False, uncertain=False, assertion="present", concepts=("mass",), laterality=None,
                measurements_mm=())
    base.update(kw)
    return Finding(**base)


def test_gets_mask_rule_for_objects_and_records():
    assert gets_mask(_finding()) == (True, None)
    assert gets_mask(_finding().to_dict()) == (True, None)
    assert gets_mask(_finding(uncertain=True)) == (True, None)
    assert gets_mask(_finding(negated=True, assertion="negated"))[0] is False
    assert "historical" in gets_mask(_finding(assertion="historical"))[1]
    assert gets_mask(_finding(duplicate_of="S-f0")) == (False, "duplicate of S-f0")
    assert gets_mask({"prompt": "  ", "negated": False}) == (False, "empty prompt")


# ---- encodings and binary files (issue 19) ----------------------------------------------

REPORT = "FINDINGS: 2 cm mass in the liver. Müller.\r\n"


@pytest.mark.parametrize("codec", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_unicode_encodings_with_and_without_bom(codec):
    assert decode_report(REPORT.encode(codec)) == REPORT


@pytest.mark.parametrize("data", [
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\x00" * 128 + b"DICM" + b"\x02\x00" * 50,
    bytes(range(256)) * 8, b"PK\x03\x04" + b"\x00" * 40,
])
def test_binary_files_are_refused(data):
    with pytest.raises(BinaryReportError, match="text"):
        decode_report(data, "x.txt")


def test_latin1_still_decodes():
    assert decode_report("Läsion 2 cm".encode("latin-1")) == "Läsion 2 cm"


def test_bom_of_utf32_is_not_read_as_utf16():
    assert decode_report(codecs.BOM_UTF32_LE + "mass".encode("utf-32-le")) == "mass"


# ---- rules added for the real reports (each with phrases of its own) ---------------------

def test_inline_headers_start_sections():
    from voxtell.reports.sections import split_blocks

    text = "EXAMINATION: CT HEAD  HISTORY: rule out mass.  FINDINGS: 2 cm mass in the liver.  IMPRESSION: Liver mass."
    got = [(b.section, text[b.start : b.end]) for b in split_blocks(text)]
    assert got == [("technique", "CT HEAD"), ("history", "rule out mass."),
                   ("findings", "2 cm mass in the liver."), ("impression", "Liver mass.")]
    text = "Indication: cough. Findings: Small right effusion.\nNodule in the LLL, 4 mm.\n"
    assert [(b.section) for b in split_blocks(text)] == ["history", "findings", "findings"]
    # a preamble header inside a line ends with that line when no other header follows
    text = "EXAM: CT CHEST   CLINICAL HISTORY: cough.\nThere is a 2 cm mass in the RUL.\n"
    assert [f.section for f in extract_findings(text, "S")] == ["body"]


def test_bare_sizes_under_subheadings_are_findings():
    text = "TARGET LESIONS:\nAxillary left: 41 x 22 mm (image 34)\nAxillary right: 18 x 9 mm (image 38)\nSpleen: 11 cm\nLiver: normal, 16 cm.\n"
    present = [f for f in extract_findings(text, "S") if gets_mask(f)[0]]
    assert [f.prompt for f in present] == ["Axillary left: 41 x 22 mm (image 34)", "Axillary right: 18 x 9 mm (image 38)"]


def test_short_questions_before_headers_are_the_request():
    text = "Metastases?\n\nFINDINGS: Two liver metastases, the largest 2 cm.\n"
    assert [f.sentence for f in extract_findings(text, "S")] == ["Two liver metastases, the largest 2 cm."]


def test_plural_of_an_ambiguous_word_is_a_finding():
    assert any(gets_mask(f)[0] for f in extract_findings("Progression of the lesions.", "S"))
    assert not any(gets_mask(f)[0] for f in extract_findings("The lesion was reviewed.", "S"))


def test_tumour_names_by_suffix():
    (f,) = extract_findings("FINDINGS: The appearance is that of a schwannoma of the left vestibular nerve.", "S")
    assert gets_mask(f)[0] and "tumor" in f.concepts
    assert not extract_findings("FINDINGS: Colostomy stoma in the left abdomen.", "S")


@pytest.mark.parametrize("sentence, word, label", [
    ("Normal size of the kidneys, with multiple cortical cysts.", "cysts", "present"),
    ("CT to evaluate abdominal pain shows pneumatosis of the colon.", "pneumatosis", "present"),
    ("The radiograph does not show any consolidation.", "consolidation", "negated"),
    ("The lungs were negative for pulmonary nodules.", "nodules", "negated"),
    ("Request to evaluate possible metastases.", "metastases", "hypothetical"),
    ("Rule out pneumonia.", "pneumonia", "hypothetical"),
    ("The patient denied any fever.", "fever", "negated"),
])
def test_scope_rules_added_for_real_reports(sentence, word, label):
    assert assertion_of(sentence, word).label == label


def test_the_lesion_and_its_size_after_a_finding_refer_back_to_it():
    text = ("FINDINGS: A heterogeneous mass arises from the left adrenal gland. The lesion has a thin rim. "
            "It measures 4.1 x 3.2 cm.\n")
    present = [f for f in extract_findings(text, "S") if not f.negated]
    assert len(present) == 3
    assert present[2].measurements_mm == (41.0, 32.0) and present[2].concepts == ("lesion",)


def test_stones_and_station_labels():
    (f,) = extract_findings("FINDINGS: Staghorn calculus in the left kidney.", "S")
    assert "calculus" in f.concepts and gets_mask(f)[0]
    text = "LYMPH NODES:\nStation 4R: 27 x 14 mm\nStation 7: 18 x 11 mm\n"
    assert [f.prompt for f in extract_findings(text, "S")] == ["Station 4R: 27 x 14 mm", "Station 7: 18 x 11 mm"]
