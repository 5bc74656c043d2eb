"""Unit tests of the workflow's library side (voxtell.cohort) and its config contract."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from voxtell.cohort import SamplesError, assign_shards, config_hash, load_samples, shard_of
from voxtell.cohort import markers
from voxtell.cohort import status as st
from voxtell.cohort.config_docs import generated_section, iter_keys, render
from voxtell.model.folder import ModelFolderError, model_ref
from voxtell.cohort.prompts import cohort_prompts, study_prompts
from voxtell.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


# ----------------------------------------------------------------------------- sharding
def test_shard_membership_ignores_other_studies():
    ids = [f"study-{i:04d}" for i in range(500)]
    before = assign_shards(ids, 16)
    after = assign_shards(ids + [f"new-{i}" for i in range(50)], 16)
    for shard, members in before.items():
        assert [s for s in after[shard] if not s.startswith("new-")] == members


def test_shard_of_is_stable_and_spread():
    # sha256-based, so the value is fixed forever (a salted hash() would change per process)
    assert shard_of("demo001", 2) == 1 and shard_of("demo003", 2) == 0
    counts = [len(v) for v in assign_shards([f"s{i}" for i in range(4000)], 8).values()]
    assert len(counts) == 8 and min(counts) > 400


# ----------------------------------------------------------------------------- samples
def _table(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "samples.tsv"
    p.write_text(text, encoding="utf-8")
    return p


def test_samples_paths_resolve_against_table_folder(tmp_path):
    p = _table(tmp_path, "# comment\nstudy_id\tdicom\treport\nA-1\tdicom/A\treports/A.txt\nB.2\t/abs/B\t\n")
    a, b = load_samples(p)
    assert a.dicom == str(tmp_path / "dicom" / "A") and a.report == str(tmp_path / "reports" / "A.txt")
    assert b.dicom == "/abs/B" and b.report is None and b.source_kind == "dicom"


@pytest.mark.parametrize(
    "body, needle",
    [
        ("study_id\tdicom\nA\tx\nA\ty\n", "repeats line 2"),
        ("study_id\tdicom\timage\nA\tx\ty\n", "exactly one of"),
        ("study_id\tdicom\n../evil\tx\n", "may only use"),
        ("study_id\tdicom\nA b\tx\n", "may only use"),
        ("dicom\nx\n", "lacks column"),
        ("study_id\tdicom\tcolour\nA\tx\tred\n", "unknown column"),
    ],
)
def test_samples_errors_name_the_problem(tmp_path, body, needle):
    with pytest.raises(SamplesError, match=needle):
        load_samples(_table(tmp_path, body))


# ----------------------------------------------------------------------------- prompts
def test_study_prompts_fixed_first_skip_negated_and_duplicates():
    findings = [
        {"finding_id": "s-f000", "prompt": "Liver", "negated": False, "duplicate_of": None},
        {"finding_id": "s-f001", "prompt": "8 mm nodule in the right upper lobe", "negated": False, "duplicate_of": None},
        {"finding_id": "s-f002", "prompt": "no pleural effusion", "negated": True, "duplicate_of": None},
        {"finding_id": "s-f003", "prompt": "the nodule", "negated": False, "duplicate_of": "s-f001"},
    ]
    got = study_prompts(["liver", "spleen"], findings)
    assert [(p.prompt, p.source, p.finding_id) for p in got] == [
        ("liver", "config", None),
        ("spleen", "config", None),
        ("8 mm nodule in the right upper lobe", "finding", "s-f001"),
    ]


def test_cohort_prompts_unique_normalised(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"prompt": "Lung  Nodule", "negated": False, "duplicate_of": None}) + "\n")
    b.write_text(json.dumps({"prompt": "lung nodule", "negated": False, "duplicate_of": None}) + "\n"
                 + json.dumps({"prompt": "no ascites", "negated": True, "duplicate_of": None}) + "\n")
    assert cohort_prompts(["Liver"], [a, b, tmp_path / "missing.jsonl"]) == ["liver", "lung nodule"]


def test_bad_findings_file_is_an_input_error(tmp_path):
    bad = tmp_path / "f.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match="line 1"):
        cohort_prompts([], [bad])


# ----------------------------------------------------------------------------- markers, status, hashes
def test_marker_current_only_for_same_inputs(tmp_path):
    m = tmp_path / "done.json"
    inputs = {"image_sha256": "a", "model_sha256": "m1", "prompts": [{"prompt": "liver"}]}
    assert not markers.is_current(m, inputs)
    markers.write_marker(m, inputs)
    assert markers.is_current(m, dict(inputs))
    assert not markers.is_current(m, {**inputs, "model_sha256": "m2"})
    assert not markers.is_current(m, {**inputs, "prompts": [{"prompt": "liver"}, {"prompt": "spleen"}]})


def test_status_roundtrip_and_skipped_names_root_cause(tmp_path):
    failed = st.failed("s1", "convert", InputError("no DICOM image series in s1"), image=None)
    st.write(tmp_path / "status.json", failed)
    back = st.read(tmp_path / "status.json")
    assert back == failed and not st.is_ok(back) and back["error_class"] == "InputError"
    skipped = st.skipped("s1", "segment", back)
    assert skipped["status"] == "skipped" and "no DICOM image series" in skipped["message"]
    # the per-study file is one row of the stats status format: the aggregate reads it as is
    from voxtell.stats.status import read_status

    st.write(tmp_path / "skipped.json", skipped)
    table = read_status([tmp_path / "status.json", tmp_path / "skipped.json"]).to_pylist()
    assert [(r["stage"], r["status"]) for r in table] == [("convert", "failed"), ("segment", "skipped")]
    (tmp_path / "damaged.json").write_text('{"study_id": "s1"')
    assert st.read(tmp_path / "damaged.json") is None and st.read(tmp_path / "absent.json") is None


def test_ok_record_carries_details_for_the_next_stage(tmp_path):
    rec = st.ok("s1", "convert", image="/data/s1/image.nii.gz", image_sha256="ab" * 32)
    st.write(tmp_path / "status.json", rec)
    data = json.loads((tmp_path / "status.json").read_text())
    assert isinstance(data, dict) and data["status"] == "ok" and data["timestamp"].endswith("+00:00")
    back = st.read(tmp_path / "status.json")
    assert st.is_ok(back) and st.details(back)["image_sha256"] == "ab" * 32


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_model_ref_reads_meta_or_hashes_released_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="model.dir"):
        model_ref(tmp_path / "nothing")
    released = tmp_path / "released"
    (released / "fold_0").mkdir(parents=True)
    (released / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    (released / "plans.json").write_text("{}")
    ref = model_ref(released, tmp_path / "cache.json")
    import hashlib

    assert ref.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert ref.text_encoder == "Qwen/Qwen3-Embedding-4B" and ref.embedding_dim == 2560
    assert json.loads((tmp_path / "cache.json").read_text())  # cached for the next DAG build


# ----------------------------------------------------------------------------- config contract
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))


def test_shipped_config_validates_against_schema():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(_schema()).validate(config)


def test_schema_rejects_unknown_and_mistyped_keys():
    v = jsonschema.Draft202012Validator(_schema())
    with pytest.raises(jsonschema.ValidationError, match="n_shard"):
        v.validate({"segment": {"n_shard": 4}})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"segment": {"n_shards": 0}})
    with pytest.raises(jsonschema.ValidationError):
        v.validate({"segment": {"precision": "fp8"}})


def test_every_schema_key_has_default_and_description():
    for key, sub in iter_keys(_schema()):
        assert sub.get("description"), f"{key} lacks a description"
        assert "default" in sub, f"{key} lacks a default"


def test_config_readme_matches_schema():
    readme = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    assert generated_section(readme) == render(_schema()), (
        "config/README.md is out of date: run `.venv/bin/python -m voxtell.cohort.config_docs "
        "workflow/schemas/config.schema.yaml config/README.md`"
    )
