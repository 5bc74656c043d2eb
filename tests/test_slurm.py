"""Snakemake on a real SLURM scheduler (slow; needs root and tests/slurm/install.sh).

`tests/slurm/ci_slow.sh` runs these after the default suite. The cluster is the real
thing: munged, slurmdbd on MariaDB, slurmctld, slurmd; jobs are sbatch jobs and their
fate is read back from `sacct`, the same query the executor plugin relies on.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from slurm.harness import fast_status_args, run_snakemake, sacct, slurm_cluster, submitted_job_ids  # noqa: F401

pytestmark = pytest.mark.slow

# Two independent jobs and a gather job; each records the SLURM job it ran in. `all` is
# local (no shell), everything else must go through sbatch with the declared resources.
TRIVIAL = textwrap.dedent(
    """
    rule all:
        input: "out/sum.txt"

    rule make:
        output: "out/part{i}.txt"
        threads: 1
        resources: mem_mb=200, runtime=5
        shell: "echo $SLURM_JOB_ID {wildcards.i} > {output}"

    rule gather:
        input: expand("out/part{i}.txt", i=range(2))
        output: "out/sum.txt"
        threads: 2
        resources: mem_mb=300, runtime=7
        shell: "cat {input} > {output}; echo $SLURM_JOB_ID >> {output}"
    """
)

FAILING = textwrap.dedent(
    """
    rule all:
        input: "out/good.txt", "out/bad.txt"

    rule good:
        output: "out/good.txt"
        resources: mem_mb=100, runtime=2
        shell: "echo $SLURM_JOB_ID > {output}"

    rule bad:
        output: "out/bad.txt"
        resources: mem_mb=100, runtime=2
        shell: "echo partial > {output}; exit 3"
    """
)

FIELDS = ["JobIDRaw", "JobName", "State", "ExitCode", "ReqMem", "AllocCPUS", "Timelimit", "Partition"]


def _write_workflow(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Snakefile").write_text(text)
    return folder


def test_trivial_workflow_runs_as_sbatch_jobs(slurm_cluster, tmp_path):
    work = _write_workflow(tmp_path / "trivial", TRIVIAL)
    res = run_snakemake([*fast_status_args(), "--jobs", "4"], cwd=work, env=slurm_cluster.env, timeout_s=400)
    assert res.returncode == 0, res.stdout[-5000:]

    ids = submitted_job_ids(res.stdout)
    assert len(ids) == 3, f"expected 3 sbatch jobs (2x make, gather), got {ids}\n{res.stdout[-3000:]}"

    # Each output names the job it ran in, and those are exactly the submitted jobs.
    parts = [(work / f"out/part{i}.txt").read_text().split() for i in range(2)]
    assert [p[1] for p in parts] == ["0", "1"]
    make_ids = {p[0] for p in parts}
    gather_id = (work / "out/sum.txt").read_text().split()[-1]
    assert make_ids | {gather_id} == set(ids)

    # The scheduler's own record: completed, one run name, resources as the rules declared.
    rows = {r["JobIDRaw"]: r for r in sacct(slurm_cluster.env, ids, FIELDS)}
    assert set(rows) == set(ids), rows
    assert {r["State"] for r in rows.values()} == {"COMPLETED"}, rows
    assert len({r["JobName"] for r in rows.values()}) == 1  # the plugin names jobs by run uuid
    for jid in make_ids:
        assert (rows[jid]["ReqMem"], rows[jid]["AllocCPUS"], rows[jid]["Timelimit"]) == ("200M", "1", "00:05:00")
    assert (rows[gather_id]["ReqMem"], rows[gather_id]["AllocCPUS"], rows[gather_id]["Timelimit"]) == (
        "300M",
        "2",
        "00:07:00",
    )
    assert {r["Partition"] for r in rows.values()} == {"main"}

    # Per-job SLURM logs named by job id, kept because of --slurm-keep-successful-logs.
    logs = {p.stem for p in (work / ".snakemake/slurm_logs").rglob("*.log")}
    assert set(ids) <= logs


def test_failed_job_is_reported_from_sacct(slurm_cluster, tmp_path):
    work = _write_workflow(tmp_path / "failing", FAILING)
    res = run_snakemake(
        [*fast_status_args(), "--jobs", "2", "--keep-going"], cwd=work, env=slurm_cluster.env, timeout_s=400
    )
    assert res.returncode != 0, res.stdout[-3000:]
    ids = submitted_job_ids(res.stdout)
    assert len(ids) == 2, res.stdout[-3000:]
    assert re.search(r"SLURM status is: 'FAILED'", res.stdout), res.stdout[-3000:]

    rows = {r["JobIDRaw"]: r for r in sacct(slurm_cluster.env, ids, FIELDS)}
    good_id = (work / "out/good.txt").read_text().strip()
    (bad_id,) = set(ids) - {good_id}
    assert rows[good_id]["State"] == "COMPLETED"
    assert rows[bad_id]["State"] == "FAILED"
    # The batch step is Snakemake's jobstep, which exits 1 when its rule fails.
    assert rows[bad_id]["ExitCode"].split(":")[0] != "0"
    (bad_log,) = (work / ".snakemake/slurm_logs/rule_bad").rglob(f"{bad_id}.log")
    assert "Error in rule bad" in bad_log.read_text()
    # Snakemake removes the output of the failed job: no partial file survives.
    assert not (work / "out/bad.txt").exists()
