"""Test harness for the single-node SLURM cluster of tests/slurm/start.sh.

Shared by the slow SLURM, fault and bad-input tests: a fixture that brings the cluster up
(and down again only if it started it), a Snakemake runner that stops runs the way the
scheduler-facing docs require (SIGINT, never SIGTERM), and `sacct` helpers, so every test
checks the scheduler's own records rather than Snakemake's view of them.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
START = HERE / "start.sh"
STOP = HERE / "stop.sh"
STATE_DIR = Path(os.environ.get("VOXTELL_SLURM_DIR", "/tmp/voxtell-slurm"))

# "Job 3 has been submitted with SLURM jobid 17 (log: ...)" -- the executor plugin's line.
_SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+)")


@dataclass(frozen=True)
class Cluster:
    """A running test cluster: its state folder and the environment clients need."""

    state_dir: Path
    env: dict[str, str]
    startup_s: float  # wall time of start.sh in this session (0 if it was already up)

    @property
    def slurm_conf(self) -> Path:
        return self.state_dir / "etc" / "slurm.conf"


def _unavailable(reason: str) -> None:
    """Skip on a developer machine; fail where CI asks for the cluster (VOXTELL_REQUIRE_SLURM=1)."""
    if os.environ.get("VOXTELL_REQUIRE_SLURM") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def client_env(state_dir: Path = STATE_DIR) -> dict[str, str]:
    """Environment for sbatch/sacct/snakemake: our SLURM_CONF, the venv first on PATH."""
    env = dict(os.environ)
    env["SLURM_CONF"] = str(state_dir / "etc" / "slurm.conf")
    env["VOXTELL_SLURM_DIR"] = str(state_dir)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    # Keep torch & co. from oversubscribing the 2 shared cores inside jobs.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """Bring the cluster up for the session; stop it afterwards only if we started it."""
    if os.geteuid() != 0:
        _unavailable("the SLURM test cluster needs root (slurmd launches jobs)")
    missing = [b for b in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd") if not shutil.which(b)]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed: run tests/slurm/install.sh as root")
    env = client_env()
    t0 = time.monotonic()
    started = subprocess.run(["bash", str(START)], env=env, capture_output=True, text=True, timeout=180)
    startup_s = time.monotonic() - t0
    if started.returncode != 0:
        pytest.fail(f"tests/slurm/start.sh failed:\n{started.stdout}\n{started.stderr}")
    already_up = "already running" in started.stdout
    print(f"\nSLURM cluster {'already up' if already_up else f'up in {startup_s:.1f} s'}: {started.stdout.strip()}")
    yield Cluster(state_dir=STATE_DIR, env=env, startup_s=0.0 if already_up else startup_s)
    if not already_up:
        subprocess.run(["bash", str(STOP)], env=env, capture_output=True, text=True, timeout=120)


def run_snakemake(
    args: Sequence[str], cwd: Path, env: dict[str, str], timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `python -m snakemake ARGS` in CWD; on timeout stop it with SIGINT, as SLURM users must.

    SIGTERM makes Snakemake wait for its running jobs; SIGINT cancels them and exits.
    """
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"snakemake did not finish within {timeout_s} s: {' '.join(cmd)}\n{out[-5000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def fast_status_args() -> list[str]:
    """Executor options for tests: first status query after 2 s instead of the default 40 s."""
    return [
        "--executor", "slurm",
        "--slurm-init-seconds-before-status-checks", "2",
        "--seconds-between-status-checks", "2",
        "--slurm-keep-successful-logs",
        "--latency-wait", "10",
    ]


def submitted_job_ids(snakemake_output: str) -> list[str]:
    """SLURM job ids the executor plugin reported as submitted, in order."""
    return _SUBMITTED.findall(snakemake_output)


def sacct(env: dict[str, str], job_ids: Sequence[str], fields: Sequence[str], retries: int = 20) -> list[dict[str, str]]:
    """Allocation records (-X) of JOB_IDS from the accounting database.

    Retries briefly: slurmctld hands finished jobs to slurmdbd asynchronously.
    """
    cmd = ["sacct", "-X", "-P", "--noheader", "-j", ",".join(job_ids), "--format", ",".join(fields)]
    rows: list[dict[str, str]] = []
    for _ in range(retries):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
        rows = [dict(zip(fields, r)) for r in csv.reader(io.StringIO(out), delimiter="|") if r]
        if len(rows) == len(job_ids) and all(r.get("State", "X") not in ("RUNNING", "PENDING", "COMPLETING") for r in rows):
            return rows
        time.sleep(0.5)
    return rows
