"""Benchmark: statistics throughput (masks/s) on 512x512x300 CT-sized volumes.

Run: .venv/bin/python tests/bench/bench_stats.py [--workers N]

Prints, per mask size, the time of ``mask_statistics`` on arrays in memory and of
``compute_study_stats`` from .nii.gz files (what a stats job does: read the image once,
read each mask, measure), and compares the per-mask time with the segmentation time per
prompt estimated from DESIGN §3 (1.57 TFLOP per prompt per 192^3 patch). Then the QC
parts: the body mask (once per study), the QC pictures (per mask) and the cohort flags of
the aggregate (per 100,000 rows).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from voxtell.prompts import prompt_id
from voxtell.stats.flags import cohort_flags
from voxtell.stats.measure import mask_statistics
from voxtell.stats.placement import body_mask
from voxtell.stats.qc import render_study_qc
from voxtell.stats.study import StudyStatsConfig, compute_study_stats

SHAPE = (512, 512, 300)
SPACING = (0.78, 0.78, 1.5)
# (name, semi-axes in mm): lesion ~2 cm, node, kidney-sized, liver-sized
MASKS = {"lesion 2 cm": (10, 10, 10), "node 4 cm": (20, 15, 15), "organ 12 cm": (60, 40, 50), "liver 20 cm": (100, 80, 90)}
TFLOP_PER_PROMPT_PATCH = 1.57
PATCH = 192


def ellipsoid(shape, spacing, centre_mm, semi_mm):
    m = np.zeros(shape, np.uint8)
    lo = [max(int((c - s) / sp) - 1, 0) for c, s, sp in zip(centre_mm, semi_mm, spacing)]
    hi = [min(int((c + s) / sp) + 2, n) for c, s, sp, n in zip(centre_mm, semi_mm, spacing, shape)]
    grids = np.meshgrid(*[np.arange(a, b) * sp for a, b, sp in zip(lo, hi, spacing)], indexing="ij")
    inside = sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre_mm, semi_mm)) <= 1
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inside
    return m


def patches_per_study(shape=SHAPE, patch=PATCH) -> int:
    return math.prod(math.ceil(max(n - patch, 0) / (0.5 * patch)) + 1 for n in shape)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    affine = np.diag([*SPACING, 1.0])
    # nibabel hands out Fortran-ordered arrays; measure what a stats job sees
    image = np.asfortranarray(rng.normal(40, 20, SHAPE).astype(np.int16))
    centre = [n * s / 2 for n, s in zip(SHAPE, SPACING)]
    masks = {k: np.asfortranarray(ellipsoid(SHAPE, SPACING, centre, v)) for k, v in MASKS.items()}

    print(f"volume {SHAPE} int16 image, uint8 masks, spacing {SPACING} mm; workers={args.workers}")
    print("in memory (mask_statistics with intensity):")
    per_mask = []
    for name, m in masks.items():
        best = min(_timed(lambda: mask_statistics(m, affine, image=image)) for _ in range(args.repeats))
        per_mask.append(best)
        print(f"  {name:12s} {int(m.sum()):>9d} voxels  {best * 1e3:8.1f} ms  {1 / best:7.1f} masks/s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nib.save(nib.Nifti1Image(image, affine), root / "image.nii.gz")
        prompts = []
        for name, m in masks.items():
            pid = prompt_id(name)
            nib.save(nib.Nifti1Image(m, affine), root / f"{pid}.nii.gz")
            prompts.append({"prompt_id": pid, "prompt": name, "file": f"{pid}.nii.gz"})
        (root / "manifest.json").write_text(json.dumps({"study_id": "bench", "prompts": prompts}))
        t_img = min(_timed(lambda: np.asanyarray(nib.load(root / "image.nii.gz").dataobj)) for _ in range(2))
        t_mask = min(_timed(lambda: np.asanyarray(nib.load(root / f"{prompts[-1]['prompt_id']}.nii.gz").dataobj)) for _ in range(2))
        cfg = StudyStatsConfig(workers=args.workers)
        t_study = min(_timed(lambda: compute_study_stats(root / "image.nii.gz", root, config=cfg)) for _ in range(2))
        t_qc = _timed(lambda: render_study_qc(root / "image.nii.gz", root, root / "qc.png", modality="CT"))
    t_body = _timed(lambda: body_mask(image, affine, "CT"))
    rows = [{"prompt_id": f"p{i % 50}", "volume_ml": float(v), "intensity_std": float(s), "empty": False}
            for i, (v, s) in enumerate(zip(rng.lognormal(5, 0.3, 100_000), rng.lognormal(3, 0.2, 100_000)))]
    t_cohort = _timed(lambda: cohort_flags(rows))
    n = len(masks)
    per_mask_file = (t_study - t_img) / n
    print("from files (compute_study_stats, image read once):")
    print(f"  read image .nii.gz {t_img:.2f} s; read one mask .nii.gz {t_mask * 1e3:.0f} ms")
    print(f"  study of {n} masks {t_study:.2f} s -> {n / t_study:.2f} masks/s incl. image, "
          f"{1 / per_mask_file:.2f} masks/s excl. image ({per_mask_file * 1e3:.0f} ms/mask)")

    print(f"QC: body mask {t_body:.2f} s/study (in the study time above); pictures {t_qc / len(masks) * 1e3:.0f} ms/mask "
          f"(image read included); cohort flags {t_cohort:.2f} s per 100,000 rows of 50 prompts")

    patches = patches_per_study()
    tflop = patches * TFLOP_PER_PROMPT_PATCH
    print(f"segmentation estimate: {patches} patches/study x {TFLOP_PER_PROMPT_PATCH} TFLOP = {tflop:.0f} TFLOP per prompt")
    for tflops in (200, 400):
        seg = tflop / tflops
        print(f"  at {tflops} TFLOP/s sustained: {seg:.2f} s/prompt; stats share "
              f"{100 * per_mask_file / (seg + per_mask_file):.1f} % (from files), "
              f"{100 * np.mean(per_mask) / (seg + np.mean(per_mask)):.1f} % (in memory)")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
