from voxtell.prompts import normalize_prompt, prompt_id


def test_normalize_collapses_case_and_space():
    assert normalize_prompt("  Left\tKIDNEY \n") == "left kidney"
    assert normalize_prompt("a\x00b") == "a b"


def test_prompt_id_is_stable_safe_and_short():
    long = "A 3.4 x 2.8 cm spiculated mass in the right upper lobe / abutting; the `pleura` $(rm -rf) " * 20
    pid = prompt_id(long)
    assert len(pid) <= 32 + 1 + 10
    assert all(c.isalnum() or c == "-" for c in pid)
    assert pid == prompt_id(long.upper())
    assert prompt_id("left kidney") != prompt_id("right kidney")
    assert prompt_id("\x00/..") .startswith("prompt-")


def test_prompt_id_is_pinned():
    # ids name files of finished cohorts: a change here would orphan every existing mask
    assert prompt_id("Left kidney  lesion") == "left-kidney-lesion-d66d00b2c9"
    assert prompt_id("Lésion hépatique") == "lesion-hepatique-" + prompt_id("lésion hépatique").rsplit("-", 1)[1]


def test_slugify_and_nifti_stem():
    from voxtell.io.nifti import nifti_stem
    from voxtell.prompts import slugify

    assert slugify("GTV 1+2", sep="_") == "gtv_1_2"
    assert slugify("###") == ""
    assert slugify("a" * 40 + " b", max_len=41) == "a" * 40
    assert nifti_stem("/data/CT_001.nii.gz") == "CT_001"
    assert nifti_stem("x.nii") == "x" and nifti_stem("x.mgz") == "x" and nifti_stem("plain") == "plain"


def _finding(i: int, **kw) -> dict:
    return {"finding_id": f"s-f{i:03d}", "prompt": f"{i} mm nodule in segment {i}", "sentence": f"A {i} mm nodule.",
            "section": "findings", "negated": False, "duplicate_of": None, "assertion": "present",
            "uncertain": False, "concepts": ["nodule"], "laterality": None, "measurements_mm": [float(i)], **kw}


def test_cap_on_prompts_per_study_records_the_rest_as_skipped(tmp_path):
    from voxtell.cohort.prompts import cohort_prompts, select_prompts

    findings = [_finding(i) for i in range(1, 101)]  # a report with 100 finding sentences
    chosen = select_prompts(["liver", "spleen"], findings, max_prompts=64)
    assert len(chosen.prompts) == 64 and [p.prompt for p in chosen.prompts[:2]] == ["liver", "spleen"]
    assert [o["finding_id"] for o in chosen.over_cap] == [f"s-f{i:03d}" for i in range(63, 101)]
    assert all("max_prompts_per_study" in o["reason"] for o in chosen.over_cap)
    assert "38 finding(s) beyond segment.max_prompts_per_study" in chosen.warnings()[0]
    assert select_prompts(["liver"], findings, max_prompts=None).over_cap == []
    # the embedding job embeds what will be segmented, no more
    path = tmp_path / "f.jsonl"
    path.write_text("".join(__import__("json").dumps(f) + "\n" for f in findings))
    assert len(cohort_prompts(["liver", "spleen"], [path], max_prompts=64)) == 64


def test_finding_prompts_carry_the_finding_fields_and_use_the_one_mask_rule():
    from voxtell.cohort.prompts import FINDING_FIELDS, select_prompts
    from voxtell.reports.findings import gets_mask

    findings = [_finding(1), _finding(2, negated=True, assertion="normal"), _finding(3, duplicate_of="s-f001")]
    assert [gets_mask(f)[0] for f in findings] == [True, False, False]
    assert "normal" in gets_mask(findings[1])[1] and "duplicate" in gets_mask(findings[2])[1]
    (entry,) = [p.as_job_entry() for p in select_prompts([], findings).prompts]
    assert entry["source"] == "finding" and set(entry["finding"]) == set(FINDING_FIELDS)
    assert entry["finding"]["sentence"] == "A 1 mm nodule." and entry["finding"]["measurements"] == [{"value_mm": 1.0}]
    assert select_prompts(["liver"], []).prompts[0].as_job_entry()["finding"] is None
