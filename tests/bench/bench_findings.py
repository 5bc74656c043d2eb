"""Benchmark: finding extraction throughput on one core for a 1,000-report cohort.

Run: ``.venv/bin/python tests/bench/bench_findings.py [N]``. The cohort is the labelled test
reports repeated (each copy gets a distinct line so no cache can help) and written as
findings JSONL files, as the workflow does. Prints wall-clock and CPU-time rates; on a
shared machine the CPU-time rate is the one-core number.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from voxtell.reports import FindingsConfig, build_pipeline, extract_findings, read_report, write_findings_jsonl  # noqa: E402


def main(n: int = 1000) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    reports = [read_report(p) for p in sorted((ROOT / "tests" / "data" / "reports").glob("*.txt"))]
    cohort = [f"{reports[i % len(reports)]}\nAddendum: report copy {i}.\n" for i in range(n)]
    config = FindingsConfig()
    t0 = time.perf_counter()
    build_pipeline(config)
    build_s = time.perf_counter() - t0
    n_findings = 0
    with tempfile.TemporaryDirectory() as tmp:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i, text in enumerate(cohort):
            findings = extract_findings(text, f"S{i:05d}", config)
            write_findings_jsonl(findings, Path(tmp) / f"S{i:05d}.jsonl")
            n_findings += len(findings)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    chars = sum(len(t) for t in cohort)
    print(f"pipeline build: {build_s:.2f} s (once per process)")
    print(f"{n} reports, {chars / n:.0f} chars/report, {n_findings} findings")
    print(f"wall: {wall:.2f} s = {n / wall:.0f} reports/s; CPU: {cpu:.2f} s = {n / cpu:.0f} reports/s per core")
    print(f"load average during run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
