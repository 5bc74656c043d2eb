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
