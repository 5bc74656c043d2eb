"""Report input robustness, layout parsing, vocabulary, measurements and the CLI."""

from __future__ import annotations

import codecs
import json
import logging
from pathlib import Path

import pytest

from voxtell.cli import main
from voxtell.reports import (
    FindingsConfig,
    extract_findings,
    read_findings_jsonl,
    read_report,
    write_findings_jsonl,
)
from voxtell.reports.findings import finding_key
from voxtell.reports.measurements import parse_measurements_mm
from voxtell.reports.pipeline import build_pipeline, pipeline_versions
from voxtell.reports.sections import split_blocks
from voxtell.reports.textio import analysis_text
from voxtell.reports.vocabulary import VocabularyError, load_vocabulary, plural_forms

REPORTS = Path(__file__).parent / "data" / "reports"
TEXT = "FINDINGS:\nThere is a 2.5 cm mass in the left lower lobe. No pleural effusion.\n\nIMPRESSION: Left lower lobe mass.\n"
CONTRACT = {
    "finding_id", "sentence", "prompt", "section", "char_start", "char_end", "negated", "uncertain",
    "assertion", "concepts", "laterality", "measurements_mm", "duplicate_of",
}


def _check_offsets(text, findings):
    assert findings
    for f in findings:
        assert text[f.char_start : f.char_end] == f.sentence


def test_utf8_bom_is_stripped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF8 + TEXT.encode())
    text = read_report(path)
    assert text == TEXT
    _check_offsets(text, extract_findings(text, "S"))


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-16", "utf-32"])
def test_utf16_and_utf32_with_and_without_bom(tmp_path, codec):
    """Issue 19: a UTF-16/32 report without a byte-order mark gave 0 findings and status ok."""
    path = tmp_path / f"{codec}.txt"
    path.write_bytes(TEXT.encode(codec))
    text = read_report(path)
    assert text == TEXT
    findings = extract_findings(text, "S")
    _check_offsets(text, findings)
    assert [f.negated for f in findings] == [False, True, False]


@pytest.mark.parametrize("payload", [
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\nendobj\n" + bytes(range(256)),
    b"\x89PNG\r\n\x1a\n" + bytes(200),
    bytes(128) + b"DICM" + bytes(300),
    bytes((i * 37 + 11) % 256 for i in range(5000)),  # no text at all
])
def test_binary_report_is_refused_with_a_typed_error(tmp_path, capsys, payload):
    from voxtell.errors import InputError
    from voxtell.reports.textio import BinaryReportError

    path = tmp_path / "report.txt"
    path.write_bytes(payload)
    with pytest.raises(BinaryReportError, match="text file"):
        read_report(path)
    assert issubclass(BinaryReportError, InputError)  # a status row, never an unexpected crash
    assert main(["findings", str(path), "-o", str(tmp_path / "out.jsonl")]) != 0
    assert not (tmp_path / "out.jsonl").exists()


def test_real_reports_and_robustness_cases_keep_offsets():
    """No crash and exact offsets on every report of both labelled sets."""
    for folder in (REPORTS, REPORTS.parent / "reports_real"):
        for path in sorted(folder.glob("*.txt")):
            text = read_report(path)
            for f in extract_findings(text, path.stem):
                assert text[f.char_start : f.char_end] == f.sentence, path.name


def test_latin1_is_decoded_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        text = read_report(REPORTS / "r38_latin1_mr_pelvis.txt")
    assert "Müller" in text and "Latin-1" in caplog.text
    _check_offsets(text, extract_findings(text, "S"))


def test_crlf_keeps_offsets(tmp_path):
    path = tmp_path / "crlf.txt"
    wrapped = "FINDINGS:\r\nThere is a 2.5 cm mass in the left lower lobe abutting\r\nthe pleura. No effusion.\r\n"
    path.write_bytes(wrapped.encode())
    text = read_report(path)
    assert "\r\n" in text
    findings = extract_findings(text, "S")
    _check_offsets(text, findings)
    assert findings[0].sentence.endswith("abutting\r\nthe pleura.")
    assert "\r" not in findings[0].prompt and "\n" not in findings[0].prompt


def test_control_characters_are_removed_from_prompts():
    text = "FINDINGS: There is a 2 cm\x00 mass\x07 in the\x1b right\u200b kidney\x0c.\ufeff No ascites."
    findings = extract_findings(text, "S")
    _check_offsets(text, findings)
    assert findings[0].prompt == "There is a 2 cm mass in the right kidney"
    assert all(ord(c) >= 32 for f in findings for c in f.prompt)


def test_empty_report_gives_zero_findings_and_a_status(tmp_path, capsys):
    assert extract_findings("", "S") == [] and extract_findings(" \r\n\t\n", "S") == []
    report = tmp_path / "empty.txt"
    report.write_bytes(b"")
    out = tmp_path / "empty.jsonl"
    assert main(["findings", str(report), "-o", str(out)]) == 0
    assert out.exists() and out.read_text() == ""
    assert "0 findings" in capsys.readouterr().out


def test_ten_megabyte_report_is_bounded(caplog):
    text = read_report(REPORTS / "r01_ct_chest_staging.txt")
    huge = (text * (10_000_000 // len(text) + 1))[:10_000_000]
    with caplog.at_level(logging.WARNING):
        findings = extract_findings(huge, "BIG")
    assert "only the first" in caplog.text
    assert findings and max(f.char_end for f in findings) <= FindingsConfig().max_chars
    _check_offsets(huge, findings[:50])


def test_long_paragraph_without_line_breaks_is_cut():
    sentence = "There is a 1 cm nodule in the right upper lobe. "
    text = "FINDINGS: " + sentence * 400  # 19 kB in one paragraph
    findings = extract_findings(text, "S", FindingsConfig(max_block_chars=2_000))
    assert len([f for f in findings if not f.negated]) == 400
    _check_offsets(text, findings)


def test_analysis_text_keeps_length():
    raw = "a\r\nb\rc\x00d\ufeffe\u2028f"
    work = analysis_text(raw)
    assert len(work) == len(raw) and work == "a \nb\nc d e\nf"


def test_sections_headers_lists_and_skipped_text():
    text = (
        "CT CHEST\n\nClinical history/indication: lung mass.\nTechnique: contrast.\n"
        "findings: Mass in RUL.\n1. Nodule in LLL.\n- Effusion on the left.\n"
        "Recommendations: CT in 3 months.\nConclusion - stable mass.\n"
    )
    blocks = split_blocks(analysis_text(text))
    got = [(b.section, b.kind, text[b.start : b.end]) for b in blocks]
    assert ("findings", "paragraph", "Mass in RUL.") in got
    assert ("findings", "item", "Nodule in LLL.") in got
    assert ("findings", "item", "Effusion on the left.") in got
    assert ("conclusion", "paragraph", "stable mass.") in got
    assert {b.section for b in blocks} == {"history", "technique", "findings", "recommendation", "conclusion"}
    sections = {f.section for f in extract_findings(text, "S")}
    assert sections == {"findings", "conclusion"}


def test_measurements():
    assert parse_measurements_mm("3.4 x 2.8 cm mass") == [34.0, 28.0]
    assert parse_measurements_mm("node of 12 mm, previously 1,4 cm") == [14.0, 12.0]
    assert parse_measurements_mm("3 x 2 x 1.5 cm") == [30.0, 20.0, 15.0]
    assert parse_measurements_mm("segment 7, 60 Gy, 12 cm3, SUVmax 5.2") == []


def test_vocabulary_is_large_and_validated(tmp_path):
    vocab = load_vocabulary(FindingsConfig().vocabulary_path)
    assert len(vocab.concepts) >= 300
    abbr = vocab.abbreviation_map()
    for short, long in {"RUL": "right upper lobe", "LLL": "left lower lobe", "HCC": "hepatocellular carcinoma",
                        "GTV": "gross tumor volume", "LN": "lymph node", "CTV": "clinical target volume"}.items():
        assert abbr[short] == long
    assert plural_forms("metastasis") == ["metastases"] and plural_forms("lymph node") == ["lymph nodes"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("concept\tcategory\tsynonyms\tabbreviations\nliver\torgan\t\t\n")
    with pytest.raises(VocabularyError, match="category"):
        load_vocabulary(bad)
    with pytest.raises(VocabularyError, match="not found"):
        load_vocabulary(tmp_path / "missing.tsv")


def test_custom_vocabulary(tmp_path):
    vocab = tmp_path / "mini.tsv"
    vocab.write_text("concept\tcategory\tsynonyms\tabbreviations\nbezoar\tfinding\ttrichobezoar\tBZ\nstomach\tanatomy\tgastric\t\n")
    config = FindingsConfig(vocabulary=vocab)
    findings = extract_findings("Findings: Large BZ in the stomach. 2 cm mass in the liver.", "S", config)
    assert [f.prompt for f in findings] == ["Large bezoar in the stomach"]
    assert pipeline_versions(config)["vocabulary_sha256"] == load_vocabulary(vocab).sha256


def test_pipeline_is_built_once_and_quickly():
    import time

    from voxtell.reports.pipeline import _build

    _build.cache_clear()
    t0 = time.perf_counter()
    first = build_pipeline(FindingsConfig())
    assert time.perf_counter() - t0 < 1.5  # issue 21: construction <= 1.5 s per process
    assert build_pipeline(FindingsConfig()) is first


def test_configured_spacy_model_is_ignored_with_a_message(caplog):
    with caplog.at_level(logging.WARNING):
        pipe = build_pipeline(FindingsConfig(spacy_model="en_core_sci_sm"))
    assert pipe.model == "rules" and "no longer used" in caplog.text
    assert extract_findings(TEXT, "S", FindingsConfig(spacy_model="en_core_sci_sm"))


def test_jsonl_contract_and_cli(tmp_path):
    report = tmp_path / "study7.txt"
    report.write_text(TEXT)
    out = tmp_path / "findings" / "study7.jsonl"
    assert main(["findings", str(report), "-o", str(out)]) == 0
    rows = read_findings_jsonl(out)
    assert [set(r) for r in rows] == [CONTRACT] * len(rows)
    assert rows[0]["finding_id"] == f"study7-f{finding_key(rows[0]['sentence'])}"
    assert rows[0]["measurements_mm"] == [25.0]
    assert [r["negated"] for r in rows] == [False, True, False]
    assert rows[2]["duplicate_of"] == rows[0]["finding_id"]
    assert not list(out.parent.glob(".*partial*"))  # atomic write leaves no temporary file
    write_findings_jsonl(extract_findings(TEXT, "X"), tmp_path / "again.jsonl")
    assert json.loads((tmp_path / "again.jsonl").read_text().splitlines()[0])["finding_id"].startswith("X-f")


def test_a_stray_nul_in_utf8_text_is_read_as_text(tmp_path):
    # a NUL or two in a text export is damage, not a binary file: read it, never a prompt with NUL
    path = tmp_path / "stray.txt"
    path.write_bytes(b"FINDINGS: There is a 2 cm mass\x00 in the right kidney. No ascites.\n")
    text = read_report(path)
    findings = extract_findings(text, "S")
    _check_offsets(text, findings)
    assert findings and all("\x00" not in f.prompt for f in findings)
