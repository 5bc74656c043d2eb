"""Benchmark: studies/s for index + select + dcm2niix conversion, and the share of time outside dcm2niix.

Run: .venv/bin/python tests/bench/bench_convert.py [--studies 4] [--slices 80] [--size 256]

Studies: the real JPEG 2000 CT (tests/data/totalsegmentator/example_ct_dicom, 20 x 512^2)
plus synthetic uncompressed CT studies with a localizer, an SR and a text file beside the
CT. The baseline is the same dcm2niix command run directly on the CT files alone.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from voxtell.io.convert import convert_study, find_dcm2niix
from voxtell.io.dicom_write import write_dicom_series, write_text_sr

REAL = Path(__file__).resolve().parents[1] / "data" / "totalsegmentator" / "example_ct_dicom"


def _make_studies(root: Path, n: int, slices: int, size: int) -> list[tuple[Path, Path]]:
    """(study folder, folder holding only the CT files) pairs."""
    rng = np.random.default_rng(0)
    studies = [(REAL, REAL)]
    for s in range(n):
        study = root / f"study{s}"
        vol = rng.integers(-1000, 1500, (size, size, slices)).astype(float)
        ct = write_dicom_series(vol, (0.8, 0.8, 2.0), study / "ct", series_number=2)
        loc = np.array([[0, 0, -1.0, 0], [1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
        write_dicom_series(np.zeros((size, size, 1)), loc, study / "loc", study_uid=ct.study_uid,
                           image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
        write_text_sr(study / "sr.dcm", "dose report", study_uid=ct.study_uid)
        (study / "export.txt").write_text("PACS export\n")
        studies.append((study, study / "ct"))
    return studies


def _dcm2niix_alone(ct_dir: Path, out: Path) -> float:
    tool = find_dcm2niix()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(
        [str(tool.path), "-g", "i", "-b", "y", "-ba", "y", "-c", "", "-f", "image", "-z", "y", "-d", "0",
         "-i", "n", "-x", "n", "-l", "o", "-w", "1", "-o", str(out), str(ct_dir)],
        check=True, capture_output=True,
    )
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--slices", type=int, default=80)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        studies = _make_studies(root, args.studies, args.slices, args.size)
        convert_study(studies[0][0], root / "warmup")  # imports, page cache
        base, ours, inside = [], [], []
        phases: dict[str, float] = {}
        for r in range(args.repeats):
            for i, (study, ct_dir) in enumerate(studies):
                base.append(_dcm2niix_alone(ct_dir, root / f"base{r}_{i}"))
                t0 = time.perf_counter()
                res = convert_study(study, root / f"out{r}_{i}")
                ours.append(time.perf_counter() - t0)
                inside.append(res.timings_s["dcm2niix_s"])
                for key, value in res.timings_s.items():
                    phases[key] = phases.get(key, 0.0) + value
        total, alone, d2n = sum(ours), sum(base), sum(inside)
        print(f"studies: {len(studies)} x {args.repeats} (real 20x512^2 JPEG2000 + synthetic {args.slices}x{args.size}^2)")
        print(f"dcm2niix alone:            {len(base) / alone:6.2f} studies/s")
        print(f"index + select + convert:  {len(ours) / total:6.2f} studies/s")
        print(f"time outside dcm2niix:     {100 * (total - d2n) / total:5.1f} % of convert_study")
        print("mean per study: " + ", ".join(f"{k} {v / len(ours):.3f}" for k, v in phases.items()))
        print(f"overhead vs dcm2niix alone: {100 * (total / alone - 1):5.1f} % (goal < 20 %)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
