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
