"""``voxtell phantoms``: write a synthetic phantom cohort (nnU-Net raw layout or demo studies)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "phantoms", help="write synthetic CT phantoms with labels (training data or a demo cohort)",
        description="Write N synthetic CT-like torso phantoms. --format nnunet: imagesTr/, labelsTr/, dataset.json, "
                    "vocabulary.json. --format demo: DICOM studies, reports, reference label maps, samples.tsv.",
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    p.add_argument("-n", "--num", type=int, required=True, help="number of phantoms")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same cohort)")
    p.add_argument("--start", type=int, default=0,
                   help="index of the first phantom (use disjoint ranges for training and held-out sets)")
    p.add_argument("--format", choices=("nnunet", "demo"), default="nnunet")
    p.add_argument("--adrenal-rate", type=float, default=0.0,
                   help="probability of an adrenal lesion (the held-out concept; 0 leaves it out)")
    p.add_argument("--prefix", default=None, help="case id prefix (default: phantom / demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voxtell.data.phantoms import PhantomConfig

    cfg = PhantomConfig(adrenal_lesion_rate=args.adrenal_rate)
    if args.format == "demo":
        from voxtell.data.demo import write_demo_cohort

        studies = write_demo_cohort(args.out, args.num, seed=args.seed, config=cfg, prefix=args.prefix or "demo")
        print(f"wrote {len(studies)} demo studies to {args.out}")
    else:
        from voxtell.data.cohorts import write_phantom_dataset

        ds = write_phantom_dataset(args.out, args.num, seed=args.seed, config=cfg, start=args.start,
                                   prefix=args.prefix or "phantom")
        print(f"wrote {len(ds.cases)} cases to {args.out}")
    return 0
