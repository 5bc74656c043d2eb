"""Security and privacy (issue 10): no patient identifier in any output, checkpoints never
run pickled code, nothing is written outside the configured output folders.

The workflow-level checks scan a real run of the bad-input battery (tests/badcohort.py:
synthetic DICOM carrying ``FAKE_PATIENT`` identifiers, hostile prompts) produced by the
shared `battery_run` fixture of tests/test_bad_inputs.py (slow: a ~5 minute workflow run).
"""

from __future__ import annotations

import gzip
import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_bad_inputs import battery_run  # noqa: E402,F401  (the shared, once-per-session run)
from test_workflow_support import make_random_model  # noqa: E402

from voxtell.io.dicom_write import FAKE_PATIENT  # noqa: E402
from voxtell.model.checkpoint import load_checkpoint_state_dict, load_model_dir  # noqa: E402
from voxtell.model.errors import CheckpointError, UnsafeCheckpointError  # noqa: E402


# ----------------------------------------------------------------------------- checkpoints
class _Payload:
    """Unpickling this creates the file ``target``: proof that pickled code ran."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _evil_state(target: Path, real: dict[str, torch.Tensor] | None = None) -> dict:
    state = dict(real or {"w": torch.zeros(2)})
    return {"network_weights": state, "trainer": _Payload(target)}


@pytest.mark.parametrize("fmt", ["zip", "legacy", "plain-pickle"])
def test_malicious_checkpoint_is_refused_without_running(tmp_path, fmt):
    target = tmp_path / "pwned"
    path = tmp_path / "checkpoint_final.pth"
    if fmt == "zip":
        torch.save(_evil_state(target), path)
    elif fmt == "legacy":
        torch.save(_evil_state(target), path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(_evil_state(target)))
    # The payload works: a plain unpickle would run it (so the test can fail).
    if fmt == "plain-pickle":
        probe = tmp_path / "probe"
        pickle.loads(pickle.dumps(_Payload(probe)))
        assert probe.exists()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_state_dict(path)
    assert not target.exists(), "pickled code ran while loading a checkpoint"
    if fmt != "plain-pickle":  # torch's own formats are scanned and the culprit is named
        assert isinstance(err.value, UnsafeCheckpointError), err.value
        assert "system" in str(err.value) and "refused" in str(err.value)


def test_malicious_model_folder_with_matching_checksum_is_refused(tmp_path):
    """An attacker controls the whole folder: the checksum in voxtell_model.json matches the
    poisoned checkpoint, so only the loader's refusal stands between it and code execution."""
    import json

    from voxtell.cohort.hashing import file_sha256

    model = tmp_path / "model"
    make_random_model(model, "tiny")
    ckpt = model / "fold_0" / "checkpoint_final.pth"
    real = torch.load(ckpt, weights_only=True)["network_weights"]
    target = tmp_path / "pwned"
    torch.save(_evil_state(target, real), ckpt)
    meta_path = model / "voxtell_model.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = file_sha256(ckpt)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_model_dir(model)
    assert not target.exists()


# ----------------------------------------------------------------------------- workflow outputs
def _identifiers() -> dict[str, list[bytes]]:
    """Every planted identifier in the spellings an output could carry it in (lower-cased;
    at least 7 characters, so that base64 pictures in the QC report cannot match by chance)."""
    out: dict[str, list[bytes]] = {}
    for key, value in FAKE_PATIENT.items():
        forms = {value, value.replace("^", " "), value.replace("^", ", ")}
        if key == "PatientBirthDate":
            forms |= {f"{value[:4]}-{value[4:6]}-{value[6:]}", f"{value[6:]}.{value[4:6]}.{value[:4]}"}
        forms |= {part for part in value.split("^") if len(part) >= 7}  # "Fakename", not "Jane"
        out[key] = sorted({f.lower().encode() for f in forms if len(f) >= 7})
    return out


def _readable_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # .nii.gz and other gzip members: scan the content too
        try:
            data += gzip.decompress(data)
        except (OSError, EOFError):
            pass
    return data


@pytest.mark.slow
def test_no_patient_identifier_in_any_output(battery_run):
    """Scan every file the run wrote (results, logs, benchmarks, Snakemake's metadata)."""
    work = battery_run.work
    scanned, hits = 0, []
    planted = _identifiers()
    for folder in ("results", "logs", "benchmarks", "resources", ".snakemake"):
        for path in (work / folder).rglob("*"):
            if not path.is_file() or path.suffix == ".lock":
                continue
            data = _readable_bytes(path).lower()
            scanned += 1
            for key, forms in planted.items():
                if any(f in data for f in forms):
                    hits.append(f"{path.relative_to(work)}: {key}")
    assert scanned > 50, f"only {scanned} output files: did the run produce anything?"
    assert not hits, "patient identifiers leaked into outputs:\n" + "\n".join(hits)
    # The identifiers were really in the inputs (so the scan can fail).
    one_input = next((work / "inputs" / "dicom" / "good-dicom").glob("*.dcm")).read_bytes()
    assert FAKE_PATIENT["PatientID"].encode() in one_input


@pytest.mark.slow
def test_nothing_written_outside_output_folders(battery_run):
    """Whatever the prompts (path separators, `..`, shell metacharacters) or study ids, the run
    writes only under its output folders; the hostile prompt's side effects never happen."""
    work = battery_run.work
    allowed = {"results", "logs", "benchmarks", "resources", ".snakemake"}
    new = [p for p in battery_run.created_outside if p.split("/", 1)[0] not in allowed]
    assert not new, f"files outside the output folders: {new}"
    assert not Path("/tmp/voxtell-pwned").exists() and not Path("/tmp/voxtell-escape").exists()
    assert not Path("/etc/voxtell").exists()
    # Masks are named by prompt id only: no file or folder name carries prompt text.
    for path in (work / "results").rglob("*"):
        assert len(path.name) <= 64 and not any(c in path.name for c in " ;$`|&\\"), path
