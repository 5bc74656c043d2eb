"""Workflow benchmark: DAG build time at cohort scale, and where the demo's wall time goes.

    .venv/bin/python tests/bench/bench_workflow.py [--studies 10000] [--shards 100] [--demo-studies 4]
                                                   [--preset small] [--skip-dry-run] [--skip-demo] [--keep DIR]

1. Dry run (`snakemake -n`) of a synthetic samples table of N studies (files absent: the
   dry run plans every job anyway). Goal: < 60 s for 10,000 studies.
2. The demo cohort (real DICOM, dcm2niix, scispaCy, MiniLM, the network code of --preset with
   random weights) run end to end in a scratch folder. Model compute = the predictor's
   inference time summed over studies (shard summaries). Goal: outside share < 10 %.
   The breakdown lists, per rule, the jobs and the summed job wall time (Snakemake's
   benchmark files; jobs of a group or run in parallel overlap), the model load time, the
   import time of each stage's modules in a fresh interpreter, and Snakemake's own time to
   build the DAG of the finished cohort (a rerun with nothing to do).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from test_workflow_support import ROOT, demo_config, make_random_model, planned_jobs, snakemake, write_config  # noqa: E402

#: What each job's script imports before it does any work (measured in a fresh interpreter).
STAGE_IMPORTS = {
    "convert": "voxtell.cohort.stage_convert, voxtell.io.convert",
    "findings": "voxtell.cohort.stage_findings, voxtell.reports",
    "segment": "voxtell.cohort.stage_segment, voxtell.inference.predictor",
    "stats": "voxtell.cohort.stage_stats, voxtell.stats.study, voxtell.stats.qc",
    "aggregate": "voxtell.cohort.stage_aggregate, voxtell.stats.parquet, voxtell.stats.qc_report",
}


def bench_dry_run(n_studies: int, n_shards: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_config(work, {**demo_config(n_shards=n_shards), "demo": {"enabled": False}, "samples": "samples.tsv"})
        rows = "".join(f"s{i:06d}\tdicom/s{i:06d}\treports/s{i:06d}.txt\n" for i in range(n_studies))
        (work / "samples.tsv").write_text("study_id\tdicom\treport\n" + rows)
        make_random_model(work / "model")
        t0 = time.perf_counter()
        jobs = planned_jobs(work)
        dt = time.perf_counter() - t0
    print(f"dry run: {n_studies} studies, {n_shards} shards -> {sum(jobs.values())} jobs in {dt:.1f} s "
          f"({jobs.get('convert_shard', 0)} convert, {jobs.get('segment_shard', 0)} segment)  goal < 60 s")


def _import_seconds(modules: str) -> float:
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip().splitlines()[-1])


def _rule_times(work: Path) -> dict[str, tuple[int, float]]:
    """Rule -> (jobs, summed job wall seconds) from Snakemake's benchmark files."""
    out: dict[str, list[float]] = defaultdict(list)
    for tsv in (work / "benchmarks").rglob("*.tsv"):
        with open(tsv, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            out[tsv.parent.name].append(float(rows[-1]["s"]))
    return {k: (len(v), sum(v)) for k, v in sorted(out.items())}


def bench_demo(n_studies: int, n_shards: int, preset: str, keep: Path | None) -> None:
    tmp = tempfile.mkdtemp(prefix="bench_workflow_")
    work = Path(tmp)
    try:
        make_random_model(work / "model", preset=preset)
        write_config(work, demo_config(n_studies=n_studies, n_shards=n_shards))
        t0 = time.perf_counter()
        proc = snakemake(work, "--cores", "2")
        wall = time.perf_counter() - t0
        inference = load = study_total = 0.0
        for f in (work / "results" / "segment" / "shards").glob("*.json"):
            t = json.loads(f.read_text())["timings"]
            inference += t.get("inference_s", 0.0)
            load += t.get("model_load_s", 0.0)
            study_total += t.get("study_total_s", 0.0)
        n_jobs = proc.stderr.count("localrule ") + proc.stderr.count("\nrule ")
        t0 = time.perf_counter()
        snakemake(work, "--cores", "2")  # nothing to do: Snakemake start-up + DAG of the finished cohort
        rerun = time.perf_counter() - t0
        outside = wall - inference
        print(f"demo: {n_studies} studies, {n_shards} shard(s) ({preset} model) wall {wall:.1f} s, model compute {inference:.1f} s, "
              f"outside model compute {outside:.1f} s = {100 * outside / wall:.0f} %  goal < 10 %")
        print(f"  snakemake jobs started: {n_jobs}; rerun with nothing to do: {rerun:.1f} s")
        print(f"  segment: model loading {load:.1f} s, per-study predictor total {study_total:.1f} s "
              f"(inference {inference:.1f} s)")
        print("  summed job wall time per rule (benchmark files):")
        for rule, (n, s) in _rule_times(work).items():
            print(f"    {rule:<12} {n:3d} job(s) {s:7.1f} s")
        print("  import time of a stage's modules in a fresh interpreter:")
        for stage, modules in STAGE_IMPORTS.items():
            print(f"    {stage:<12} {_import_seconds(modules):5.1f} s")
    finally:
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(work, keep, symlinks=True)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--demo-studies", type=int, default=4)
    ap.add_argument("--demo-shards", type=int, help="shards of the demo part (default: the shipped config's)")
    ap.add_argument("--preset", default="small", help="network preset of the random model for the demo part")
    ap.add_argument("--skip-dry-run", action="store_true")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--keep", type=Path, help="copy the demo's working folder here (logs, benchmarks, results)")
    args = ap.parse_args()
    if not args.skip_dry_run:
        bench_dry_run(args.studies, args.shards)
    if not args.skip_demo:
        shipped = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
        n_shards = args.demo_shards or shipped["segment"]["n_shards"]
        bench_demo(args.demo_studies, n_shards, args.preset, args.keep)


if __name__ == "__main__":
    main()
