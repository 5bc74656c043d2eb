"""The demo cohort through the project's SLURM profile on the real test cluster (slow).

`snakemake --executor slurm --workflow-profile workflow/profiles/slurm` with only the
overrides this 2-CPU, GPU-less node needs (given on the command line; the profile itself
is not weakened): fewer CPUs and less memory per job, no GPU for the segmentation job,
faster status checks. The same cohort also runs locally; the cohort Parquet values must
be equal. The model is a random `small` network shared by both runs (training the demo
model would only add minutes and is covered by the training tests).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slurm.harness import fast_status_args, run_snakemake, sacct, slurm_cluster, submitted_job_ids  # noqa: E402,F401
from test_workflow_support import ENCODER, SNAKEFILE, make_random_model  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = SNAKEFILE.parent
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
N_STUDIES = 3
# Rule -> (cpus, MB): what this node can give (2 CPUs). Every rule that becomes a job is listed.
NODE_FIT = {
    "demo_cohort": (1, 1500),
    "convert_shard": (1, 1500),
    "findings_shard": (1, 2500),
    "embed_prompts": (2, 3000),
    "segment_shard": (2, 3000),
    "stats_shard": (1, 2000),
    "aggregate_cohort": (1, 2000),
}
VALUE_COLUMNS = ["voxel_count", "volume_ml", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "n_components",
                 "largest_component_ml", "longest_axial_diameter_mm", "intensity_mean", "intensity_p95", "dice", "hd95_mm"]


def _workdir(root: Path, model_dir: Path) -> Path:
    work = root
    (work / "config").mkdir(parents=True)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["demo"]["n_studies"] = N_STUDIES
    cfg["demo"]["train"]["enabled"] = False
    cfg["model"]["dir"] = str(model_dir)
    cfg["text_encoder"]["id"] = ENCODER
    cfg["segment"]["device"] = "cpu"
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return work


def _overrides() -> list[str]:
    res = []
    for rule, (cpus, mem) in NODE_FIT.items():
        res += [f"{rule}:cpus_per_task={cpus}", f"{rule}:mem_mb={mem}", f"{rule}:runtime=20"]
    res += ["segment_shard:gpu=0"]
    return ["--set-resources", *res, "--max-status-checks-per-second", "10", "--jobs", "4"]


def _table(work: Path):
    import pandas as pd

    df = pd.read_parquet(work / "results/cohort/stats.parquet")
    return df.sort_values(["study_id", "prompt_id"]).reset_index(drop=True)


def test_demo_cohort_on_slurm_equals_local_run(slurm_cluster, tmp_path):
    model = tmp_path / "model"
    make_random_model(model, "small")
    env = slurm_cluster.env

    local = _workdir(tmp_path / "local", model)
    res_local = run_snakemake(["-s", str(SNAKEFILE), "-d", str(local), "--cores", "2"], cwd=local, env=env, timeout_s=900)
    assert res_local.returncode == 0, res_local.stdout[-5000:]

    work = _workdir(tmp_path / "slurm", model)
    args = ["-s", str(SNAKEFILE), "-d", str(work), "--workflow-profile", str(PROFILE), *fast_status_args(), *_overrides()]
    res = run_snakemake(args, cwd=work, env=env, timeout_s=900)
    assert res.returncode == 0, res.stdout[-6000:]

    ids = submitted_job_ids(res.stdout)
    print(f"\nSLURM demo: {len(ids)} sbatch jobs for {N_STUDIES} studies; cluster start {slurm_cluster.startup_s:.1f} s")
    rows = sacct(env, ids, ["JobIDRaw", "State", "AllocCPUS", "ReqMem"])
    assert len(rows) == len(ids) and {r["State"] for r in rows} == {"COMPLETED"}, rows
    # demo + convert/findings/segment/stats per shard (one shard) + embed + aggregate; the two
    # settings rules are local: the job count does not grow with the studies.
    assert len(ids) == 7, ids
    slurm_logs = work / ".snakemake/slurm_logs"
    logs = {p.relative_to(slurm_logs).parts[0] for p in slurm_logs.rglob("*.log")}
    for rule in ("rule_convert_shard", "rule_segment_shard", "rule_embed_prompts", "rule_aggregate_cohort"):
        assert rule in logs, logs

    a, b = _table(local), _table(work)
    assert len(a) >= N_STUDIES * 5, a[["study_id", "prompt"]]
    assert list(a["study_id"]) == list(b["study_id"]) and list(a["prompt_id"]) == list(b["prompt_id"])
    cols = [c for c in VALUE_COLUMNS if c in a.columns]
    assert len(cols) >= 5, a.columns
    import pandas as pd

    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=False, rtol=1e-6)
    shutil.rmtree(tmp_path / "local" / "demo", ignore_errors=True)
