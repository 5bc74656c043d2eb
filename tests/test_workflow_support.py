"""Helpers shared by the workflow tests and the workflow benchmark (run Snakemake on a scratch
folder, parse dry runs, make a random model), plus the lint check of the workflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from voxtell.cohort import assign_shards

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the project's workflow in ``workdir`` (its config/config.yaml) and return the result."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> number of jobs a dry run would execute (empty when nothing is to be done)."""
    out = snakemake(workdir, "-n", "--quiet", "rules", *args)
    text = out.stdout + out.stderr
    jobs: dict[str, int] = {}
    table = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def make_random_model(out_dir: Path, preset: str = "tiny", seed: int = 0) -> str:
    """A randomly initialised model folder (real network code) for MiniLM prompts; returns its sha256."""
    import torch

    from voxtell.model import ModelMeta, VoxTellNetwork, get_preset, save_model_dir

    torch.manual_seed(seed)
    cfg = get_preset(preset, text_embedding_dim=384)
    meta = ModelMeta(model_id=f"random-{preset}-{seed}", preset=preset, text_encoder=ENCODER, embedding_dim=384)
    return save_model_dir(VoxTellNetwork(cfg), cfg, out_dir, meta).sha256


def demo_config(n_studies: int = 3, n_shards: int = 2, model_dir: str = "model", **overrides) -> dict:
    config = {
        "samples": "demo/cohort/samples.tsv",
        "demo": {"enabled": True, "dir": "demo/cohort", "n_studies": n_studies, "seed": 0},
        "model": {"dir": model_dir},
        "text_encoder": {"id": ENCODER},
        "embeddings": {"bank": "resources/bank.npz"},
        "prompts": {"fixed": ["liver", "left kidney"]},
        "segment": {"n_shards": n_shards, "device": "cpu"},
        "threads": {"segment": 2, "embed": 1},
    }
    config.update(overrides)
    return config


def test_lint_is_clean(tmp_path):
    """`snakemake --lint` on the shipped default config (the demo) reports nothing."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    out = snakemake(tmp_path, "--lint", check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Congratulations, your workflow is in a good condition!" in text, text[-3000:]


def test_dry_run_of_a_cohort_without_data(tmp_path):
    """A samples table whose files are missing still plans every study (missing files become
    status rows at run time, not a refusal to start) and one job per non-empty shard."""
    write_config(tmp_path, {**demo_config(n_shards=4), "demo": {"enabled": False}, "samples": "samples.tsv"})
    rows = "".join(f"s{i:03d}\tdicom/s{i:03d}\treports/s{i:03d}.txt\n" for i in range(12))
    (tmp_path / "samples.tsv").write_text("study_id\tdicom\treport\n" + rows)
    make_random_model(tmp_path / "model")
    jobs = planned_jobs(tmp_path)
    assert jobs["embed_prompts"] == 1 and jobs["aggregate_cohort"] == 1
    assert jobs["convert_shard"] == jobs["segment_shard"] == jobs["stats_shard"] == jobs["findings_shard"] == 4


def test_config_errors_are_clear(tmp_path):
    write_config(tmp_path, {"segment": {"n_shard": 3}})
    out = snakemake(tmp_path, "-n", check=False)
    assert out.returncode != 0 and "n_shard" in out.stdout + out.stderr
    write_config(tmp_path, {"samples": "missing.tsv", "model": {"dir": "nowhere"}})
    out = snakemake(tmp_path, "-n", check=False)
    assert out.returncode != 0 and "missing.tsv does not exist" in out.stdout + out.stderr


def _readme_minimal_config() -> dict:
    text = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    block = text.split("```yaml", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def test_minimal_config_of_the_readme_dry_runs_as_written(tmp_path):
    """config/README.md's minimal config, with only its paths pointed at real files and given
    with --configfile (which replaces the shipped demo config): every stage is planned."""
    cfg = _readme_minimal_config()
    assert set(cfg) == {"samples", "model", "text_encoder", "prompts", "segment"}
    (tmp_path / "cohort").mkdir()
    rows = "".join(f"p{i:03d}\t/archive/p{i:03d}/ct\t/reports/p{i:03d}.txt\n" for i in range(5))
    (tmp_path / "cohort" / "samples.tsv").write_text("study_id\tdicom\treport\n" + rows)
    make_random_model(tmp_path / "voxtell_v1")
    cfg["samples"] = str(tmp_path / "cohort" / "samples.tsv")
    cfg["model"]["dir"] = str(tmp_path / "voxtell_v1")
    (tmp_path / "my_cohort.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())  # the demo's
    jobs = planned_jobs(tmp_path, "--configfile", str(tmp_path / "my_cohort.yaml"))
    assert "demo_cohort" not in jobs and jobs["aggregate_cohort"] == 1
    assert jobs["convert_shard"] == jobs["segment_shard"] == jobs["stats_shard"] == len(assign_shards(
        [f"p{i:03d}" for i in range(5)], cfg["segment"]["n_shards"]))


def test_model_dir_that_does_not_exist_is_an_error_unless_training_is_asked_for(tmp_path):
    write_config(tmp_path, {**demo_config(model_dir="models/typo"), "demo": {"enabled": False},
                            "samples": "samples.tsv"})
    (tmp_path / "samples.tsv").write_text("study_id\tdicom\ns1\tdicom/s1\n")
    out = snakemake(tmp_path, "-n", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "model.dir models/typo does not exist" in text and "demo.train.enabled" in text
    write_config(tmp_path, {**demo_config(model_dir="models/typo"), "demo": {"enabled": False, "train": {"enabled": True}},
                            "samples": "samples.tsv"})
    out = snakemake(tmp_path, "-n", check=False)  # asked for: the dry run plans the training
    assert out.returncode == 0 and "train_demo_model" in out.stdout + out.stderr, (out.stdout + out.stderr)[-2000:]


def test_samples_table_problems_are_named_before_anything_runs(tmp_path):
    make_random_model(tmp_path / "model")
    write_config(tmp_path, {**demo_config(), "demo": {"enabled": False}, "samples": "samples.tsv"})
    (tmp_path / "samples.tsv").write_text("study_id\tdicom\ns1\tdicom/s1\nshards\tdicom/x\n")
    out = snakemake(tmp_path, "-n", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "'shards' is a name the workflow uses for its own files" in text, text[-2000:]
    (tmp_path / "samples.tsv").write_text("study_id\tdicom\ns1\tdicom/s1\ts1.txt\n")
    out = snakemake(tmp_path, "-n", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "line 2 has 3 tab-separated fields" in text and "None was unexpected" not in text
