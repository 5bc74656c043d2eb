"""Fault injection on real processes (issue 10; slow): `kill -9` of the segmentation job
mid-shard and a rerun, an exception in one study of a shard, two runs on one folder, a
full disk while writing results.

The cohorts are small NIfTI phantoms (tests/badcohort.py) segmented by a random tiny
VoxTell network with two fixed prompts and no reports, so each run takes about a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from badcohort import FIXED_PROMPTS, _nifti, _phantom  # noqa: E402
from test_workflow_support import ENCODER, SNAKEFILE, make_random_model  # noqa: E402

pytestmark = pytest.mark.slow

N_GOOD = 6
NAN_STUDY = "s99-nan"


def _cohort(root: Path, model_dir: Path) -> Path:
    """N_GOOD good NIfTI studies and one with NaN voxels, all in one shard; returns the workdir."""
    work = root / "work"
    (work / "config").mkdir(parents=True)
    data = root / "inputs"
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    rows = ["study_id\timage"]
    for i in range(N_GOOD):
        _nifti(data / f"s{i:02d}.nii.gz", _phantom(100 + i).astype(np.int16), affine)
        rows.append(f"s{i:02d}\t{data / f's{i:02d}.nii.gz'}")
    bad = _phantom(200).astype(np.float32)
    bad[5:9, 5:9, 2:4] = np.nan
    _nifti(data / "nan.nii.gz", bad, affine)
    rows.append(f"{NAN_STUDY}\t{data / 'nan.nii.gz'}")
    (data / "samples.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = {
        "samples": str(data / "samples.tsv"),
        "demo": {"enabled": False, "train": {"enabled": False}},
        "model": {"dir": str(model_dir)},
        "text_encoder": {"id": ENCODER},
        "embeddings": {"bank": "resources/bank.npz"},
        "prompts": {"fixed": FIXED_PROMPTS, "findings": False},
        "segment": {"n_shards": 1, "device": "cpu"},
        "stats": {"qc": False},
    }
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return work


def _cmd(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(work), *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run(work: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(work, *args), capture_output=True, text=True, env=_env(), timeout=timeout)


def _segment_pids(root_pid: int) -> list[int]:
    """PIDs of the segment_shard script processes under ``root_pid`` (ours, found by ancestry)."""
    import psutil

    try:
        kids = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if any("segment_shard" in part for part in p.cmdline()):
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc {proc.returncode}) while waiting for {what}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _done(work: Path) -> list[str]:
    return sorted(p.parent.name for p in (work / "results" / "segment").glob("s*/done.json"))


def _check_outputs_whole(work: Path) -> None:
    """Every visible output is complete: NIfTI decode fully, Parquet and JSON parse; no temp files."""
    import nibabel as nib
    import pyarrow.parquet as pq

    for path in (work / "results").rglob("*"):
        if not path.is_file():
            continue
        assert ".partial" not in path.name, f"temporary file left behind: {path}"
        if path.name.endswith(".nii.gz"):
            np.asarray(nib.load(str(path)).dataobj)
        elif path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def _only_the_nan_study_failed(proc: subprocess.CompletedProcess) -> None:
    """Every job finished; the run exits 1 only because a study failed (the NaN one), after
    printing the one-screen summary."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-5000:]
    assert "studies per stage" in text and f"{NAN_STUDY}, " in text, text[-5000:]
    assert "Error in rule" not in text, text[-5000:]


def _stats(work: Path):
    import pandas as pd

    return pd.read_parquet(work / "results/cohort/stats.parquet"), pd.read_parquet(work / "results/cohort/status.parquet")


def test_kill_9_mid_shard_lock_and_rerun(tmp_path):
    make_random_model(tmp_path / "model", "tiny")
    work = _cohort(tmp_path, tmp_path / "model")
    log = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(_cmd(work, "--cores", "2"), stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        seg = _wait(lambda: _segment_pids(proc.pid), 600, "the segment_shard job", proc)
        # A second run on the same folder is refused by Snakemake's lock while the first runs.
        second = _run(work, "--cores", "1", timeout=300)
        assert second.returncode != 0
        assert "LockException" in second.stdout + second.stderr or "cannot be locked" in second.stdout + second.stderr, (
            second.stdout + second.stderr)[-3000:]
        assert proc.poll() is None, "the first run ended before the lock was tested; the test proves nothing"
        # kill -9 the segmentation job once it has finished at least one study, before the last.
        finished = _wait(lambda: _done(work), 600, "a first segmented study", proc)
        assert len(finished) < N_GOOD + 1, "the shard finished before the kill"
        for pid in _segment_pids(proc.pid) or seg:
            os.kill(pid, signal.SIGKILL)
        killed_after = _done(work)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        log.close()
    assert rc != 0, (tmp_path / "run1.log").read_text()[-3000:]
    assert not (work / "results/segment/shards/000.json").exists()
    assert not (work / "results/cohort/stats.parquet").exists()
    import nibabel as nib

    for p in (work / "results").rglob("*.nii.gz"):  # every mask under its final name is whole right after the kill
        if ".partial" not in p.name:
            np.asarray(nib.load(str(p)).dataobj)
    before = {s: json.loads((work / f"results/segment/{s}/status.json").read_text()) for s in killed_after}

    rerun = _run(work, "--cores", "2", "--rerun-incomplete")
    _only_the_nan_study_failed(rerun)
    # Studies finished before the kill are reused, not segmented again.
    for s, status in before.items():
        again = json.loads((work / f"results/segment/{s}/status.json").read_text())
        assert again["timestamp"] == status["timestamp"], f"{s} was segmented again"
    _check_outputs_whole(work)

    stats, status = _stats(work)
    # The exception in one study of the shard: the others finish, the failure is a status row.
    assert sorted(set(stats["study_id"])) == [f"s{i:02d}" for i in range(N_GOOD)]
    assert (stats.groupby("study_id")["prompt"].apply(set) == set(FIXED_PROMPTS)).all()
    bad = status[(status["study_id"] == NAN_STUDY) & (status["status"] == "failed")]
    assert len(bad) == 1 and "nan" in bad.iloc[0]["message"].lower(), status  # convert's volume check, or segment's

    # Nothing left to do afterwards.
    dry = _run(work, "-n", "--cores", "1")
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_full_disk_while_writing_results(tmp_path):
    make_random_model(tmp_path / "model", "tiny")
    work = _cohort(tmp_path, tmp_path / "model")
    results = work / "results"
    if os.geteuid() != 0 or not _mount_tmpfs(results, "8m"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        ok = _run(work, "--cores", "2", "convert")  # the converted images fit; the NaN study fails at convert
        _only_the_nan_study_failed(ok)
        assert f"{NAN_STUDY}, convert: NonFiniteVolumeError" in ok.stdout + ok.stderr, (ok.stdout + ok.stderr)[-3000:]
        st = os.statvfs(results)
        filler = results / "filler.bin"
        free = st.f_bavail * st.f_frsize
        with open(filler, "wb") as fh:  # leave ~24 KB: the first mask or table write fails
            fh.write(b"\0" * max(0, free - 24 * 1024))
        full = _run(work, "--cores", "2", "--keep-going")
        text = full.stdout + full.stderr + "".join(p.read_text(errors="replace") for p in (work / "logs").rglob("*.log"))
        assert full.returncode != 0, text[-3000:]
        assert "No space left on device" in text, text[-5000:]
        filler.unlink()
        _check_outputs_whole(work)  # nothing half-written carries a final name
        again = _run(work, "--cores", "2", "--rerun-incomplete")
        _only_the_nan_study_failed(again)
        stats, _ = _stats(work)
        assert sorted(set(stats["study_id"])) == [f"s{i:02d}" for i in range(N_GOOD)]
        _check_outputs_whole(work)
    finally:
        subprocess.run(["umount", str(results)], capture_output=True)


def test_damaged_model_checkpoint_fails_the_job_not_the_studies(tmp_path):
    """A model that cannot be loaded (a truncated copy of the checkpoint) is a fault of the run,
    not of the studies: the segmentation job must fail with the loader's message, and once the
    checkpoint is restored a rerun must segment every study (no cached per-study failures)."""
    make_random_model(tmp_path / "model", "tiny")
    work = _cohort(tmp_path, tmp_path / "model")
    ckpt = tmp_path / "model" / "fold_0" / "checkpoint_final.pth"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])  # an interrupted copy; voxtell_model.json still names the good sha256
    broken = _run(work, "--cores", "2")
    text = broken.stdout + broken.stderr + (work / "logs/segment/shard-000.log").read_text(errors="replace")
    assert broken.returncode != 0, "a run with an unloadable model reported success"
    assert "CheckpointError" in text or "corrupt" in text or "sha256" in text, text[-3000:]

    ckpt.write_bytes(good)
    fixed = _run(work, "--cores", "2", "--rerun-incomplete")
    _only_the_nan_study_failed(fixed)
    stats, status = _stats(work)
    assert sorted(set(stats["study_id"])) == [f"s{i:02d}" for i in range(N_GOOD)], status.to_dict("records")
