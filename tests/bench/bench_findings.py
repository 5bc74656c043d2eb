"""Benchmark: finding extraction on the real reports (tests/data/reports_real), one core.

Run: ``.venv/bin/python tests/bench/bench_findings.py [N]``. Prints

- pipeline construction in a fresh process (import + build, what ``voxtell findings`` pays
  once per process), and the build alone;
- in-process throughput on ``N`` reports cycled from the real set (each copy gets a
  distinct line so no cache can help), written as findings JSONL as the workflow does;
- the cohort mode: the workflow's findings stage (``run_findings_shard``) on one shard of
  the same reports as files, with its status records and done markers.

On a shared machine the CPU-time rate is the one-core number.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from voxtell.cohort.stage_findings import FindingsTask, run_findings_shard  # noqa: E402
from voxtell.reports import FindingsConfig, build_pipeline, extract_findings, read_report, write_findings_jsonl  # noqa: E402

BUILD = "import time; t=time.perf_counter(); from voxtell.reports import FindingsConfig, build_pipeline; " \
        "build_pipeline(FindingsConfig()); print(time.perf_counter()-t)"


def main(n: int = 2000) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    t0 = time.perf_counter()
    fresh = float(subprocess.run([sys.executable, "-c", BUILD], capture_output=True, text=True, cwd=ROOT,
                                 check=True).stdout.strip())
    process_s = time.perf_counter() - t0
    reports = [read_report(p) for p in sorted((ROOT / "tests" / "data" / "reports_real").glob("*.txt"))]
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
        tasks = []
        for i, text in enumerate(cohort):
            study = Path(tmp) / "cohort" / f"C{i:05d}"
            study.mkdir(parents=True)
            (study / "report.txt").write_text(text, encoding="utf-8")
            tasks.append(FindingsTask(f"C{i:05d}", str(study / "report.txt"), str(study)))
        cwall0, ccpu0 = time.perf_counter(), time.process_time()
        run_findings_shard("0", tasks, Path(tmp) / "summary.json", {})
        cwall, ccpu = time.perf_counter() - cwall0, time.process_time() - ccpu0
    chars = sum(len(t) for t in cohort)
    print(f"pipeline construction in a fresh process: {fresh:.3f} s (import + build); whole process {process_s:.2f} s")
    print(f"pipeline build in this process: {build_s:.3f} s (once per process, then cached)")
    print(f"{n} real reports ({len(reports)} distinct), {chars / n:.0f} chars/report, {n_findings} findings")
    print(f"in-process: wall {wall:.2f} s = {n / wall:.0f} reports/s; CPU {cpu:.2f} s = {n / cpu:.0f} reports/s per core")
    print(f"cohort mode: wall {cwall:.2f} s = {n / cwall:.0f} reports/s; CPU {ccpu:.2f} s = {n / ccpu:.0f} reports/s per core")
    print(f"load average during run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
