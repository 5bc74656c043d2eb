"""Benchmark: how the workflow's DAG scales with the cohort (dry run only).

Run: .venv/bin/python tests/bench/bench_scale.py [--studies 10000 100000] [--shard-size 200]

For each size, a synthetic samples table (DICOM folders and reports that do not exist: the
workflow turns missing inputs into status rows at run time, so a dry run needs none) and a
real-config cohort in a scratch folder; then `snakemake --dry-run` under `/usr/bin/time -v`.
Reported: wall time of the dry run (DAG build, including Python start-up and config/samples
validation), jobs planned (from Snakemake's job table) and peak RSS of the Snakemake
process. Goal (issue 24): < 60 s and < 2 GB at 100,000 studies on 2 cores. Every stage runs one
job per shard (convert included), so the job count follows the shards, not the studies.

The shard count follows the cohort (studies / --shard-size), as a user would set
`segment.n_shards` for a big cohort; the model is a random tiny preset (real model folder,
never loaded by a dry run).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from test_workflow_support import ENCODER, make_random_model  # noqa: E402  (owned by the workflow tests)


def write_cohort(work: Path, n: int, shard_size: int, model_dir: Path) -> None:
    rows = ["study_id\tdicom\treport"]
    rows += [f"pat{i:06d}-ct1\t/archive/pat{i:06d}/ct1\t/reports/pat{i:06d}.txt" for i in range(n)]
    (work / "samples.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = {
        "samples": "samples.tsv",
        "demo": {"enabled": False, "train": {"enabled": False}},
        "model": {"dir": str(model_dir)},
        "text_encoder": {"id": ENCODER},
        "embeddings": {"bank": "resources/bank.npz"},
        "segment": {"n_shards": max(1, n // shard_size), "device": "cpu"},
    }
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def dry_run(work: Path) -> dict[str, float]:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work),
           "--dry-run", "--quiet", "rules", "--cores", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed ({proc.returncode}):\n{text[-4000:]}")
    total = re.search(r"^total\s+(\d+)\s*$", text, re.M)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    per_rule = dict(re.findall(r"^(\w+_\w+|all)\s+(\d+)\s*$", text, re.M))
    return {"wall_s": wall, "jobs": int(total.group(1)) if total else -1,
            "peak_rss_mb": int(rss.group(1)) / 1024 if rss else float("nan"), "per_rule": per_rule}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--shard-size", type=int, default=200)
    args = ap.parse_args()
    print(f"machine: {platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        model_dir = Path(tmp) / "model"
        make_random_model(model_dir, "tiny")
        results = []
        for n in args.studies:
            work = Path(tmp) / f"cohort{n}"
            work.mkdir()
            write_cohort(work, n, args.shard_size, model_dir)
            r = dry_run(work)
            results.append((n, r))
            print(f"{n:>6} studies: dry run {r['wall_s']:6.1f} s, {r['jobs']:>6} jobs, peak RSS {r['peak_rss_mb']:7.0f} MB"
                  f"  ({', '.join(f'{k} {v}' for k, v in r['per_rule'].items())})", flush=True)
        if len(results) >= 2:
            (n0, r0), (n1, r1) = results[0], results[-1]
            print(f"growth {n0} -> {n1} studies (x{n1 / n0:.0f}): time x{r1['wall_s'] / r0['wall_s']:.1f}, "
                  f"jobs x{r1['jobs'] / r0['jobs']:.1f}, RSS x{r1['peak_rss_mb'] / r0['peak_rss_mb']:.1f}")
            ok = r1["wall_s"] < 60 and r1["peak_rss_mb"] < 2048
            print(f"goal (< 60 s and < 2 GB at {n1}): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
