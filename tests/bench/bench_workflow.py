"""Workflow benchmark: DAG build time at cohort scale, and the share of the demo's wall
time spent outside model compute.

    .venv/bin/python tests/bench/bench_workflow.py [--studies 10000] [--shards 100] [--demo-studies 4]

1. Dry run (`snakemake -n`) of a synthetic samples table of N studies (files absent: the
   dry run plans every job anyway). Goal: < 60 s for 10,000 studies.
2. The demo cohort (real DICOM, dcm2niix, scispaCy, MiniLM, the tiny network with random
   weights) run end to end in a scratch folder; model compute = the predictor's inference
   time summed over studies (shard summaries). Goal: outside share < 10 %.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_workflow_support import demo_config, make_random_model, planned_jobs, snakemake, write_config  # noqa: E402


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
          f"({jobs.get('convert_study', 0)} convert, {jobs.get('segment_shard', 0)} segment)  goal < 60 s")


def bench_demo(n_studies: int, preset: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_random_model(work / "model", preset=preset)
        write_config(work, demo_config(n_studies=n_studies, n_shards=2))
        t0 = time.perf_counter()
        snakemake(work, "--cores", "2")
        wall = time.perf_counter() - t0
        inference = load = 0.0
        for f in (work / "results" / "segment" / "shards").glob("*.json"):
            t = json.loads(f.read_text())["timings"]
            inference += t.get("inference_s", 0.0)
            load += t.get("model_load_s", 0.0)
    outside = wall - inference
    print(f"demo: {n_studies} studies ({preset} model) wall {wall:.1f} s, model compute {inference:.1f} s, "
          f"model loading {load:.1f} s, outside model compute {outside:.1f} s = {100 * outside / wall:.0f} %  "
          "goal < 10 %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--demo-studies", type=int, default=4)
    ap.add_argument("--preset", default="small", help="network preset of the random model for the demo part")
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    bench_dry_run(args.studies, args.shards)
    if not args.skip_demo:
        bench_demo(args.demo_studies, args.preset)


if __name__ == "__main__":
    main()
