"""Benchmark: DICOM SEG + RTSTRUCT export and RTSTRUCT/SEG reference drawing on a synthetic CT.

Run: .venv/bin/python tests/bench/bench_dicom_export.py [--size 512] [--slices 120] [--masks 10]

A synthetic CT (size x size x slices) with ``--masks`` ball-shaped masks (one of them with a
hole) is converted, exported (SEG + RTSTRUCT, with timings of each part), and the exported
objects are drawn back as references (reference: auto). Prints seconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from voxtell.io.convert import convert_study
from voxtell.io.dicom_export import export_study
from voxtell.io.dicom_ref import write_dicom_reference
from voxtell.io.dicom_write import write_dicom_series
from voxtell.io.rt_objects import draw_rt_references


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=120)
    ap.add_argument("--masks", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vol = rng.integers(-1000, 400, (args.size, args.size, args.slices)).astype(float)
        write_dicom_series(vol, (0.8, 0.8, 2.0), root / "study" / "ct", series_number=2)
        t0 = time.perf_counter()
        conv = convert_study(root / "study", root / "conv")
        write_dicom_reference(root / "study", root / "conv")
        t1 = time.perf_counter()
        image = nib.load(conv.image_path)
        grid = np.indices(image.shape, dtype=np.float32)
        seg = root / "seg"
        seg.mkdir()
        prompts = []
        for n in range(args.masks):
            centre = rng.uniform(0.25, 0.75, 3) * np.array(image.shape)
            radius = rng.uniform(0.05, 0.15) * args.size
            d = np.sqrt(((grid - centre[:, None, None, None]) ** 2 * np.array([1, 1, 0.16])[:, None, None, None]).sum(0))
            mask = d < radius
            if n == 0:
                mask &= d > radius / 2  # a hollow ball: hole contours on every slice
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), seg / f"m{n}.nii.gz")
            prompts.append({"prompt_id": f"m{n}", "prompt": f"mask {n}", "file": f"m{n}.nii.gz"})
        (seg / "manifest.json").write_text(json.dumps({
            "study_id": "bench", "image": str(conv.image_path), "model": {"model_id": "bench", "sha256": "0" * 64},
            "prompts": prompts,
        }))
        t2 = time.perf_counter()
        result = export_study(seg, root / "study", root / "out")
        t3 = time.perf_counter()
        for name in ("seg.dcm", "rtstruct.dcm"):
            (root / "study" / name).write_bytes((root / "out" / name).read_bytes())
        drawn = draw_rt_references(root / "study", conv.image_path, root / "refs")
        t4 = time.perf_counter()
        print(f"grid {image.shape}, {args.masks} masks, {result.n_contours} contours")
        print(f"convert + dicom_ref.json: {t1 - t0:.2f} s")
        print(f"export SEG + RTSTRUCT:    {t3 - t2:.2f} s "
              f"({(root / 'out' / 'seg.dcm').stat().st_size / 1e6:.1f} MB SEG, "
              f"{(root / 'out' / 'rtstruct.dcm').stat().st_size / 1e6:.1f} MB RTSTRUCT)")
        print(f"draw both back as references: {t4 - t3:.2f} s ({len(drawn.masks)} masks)")


if __name__ == "__main__":
    main()
