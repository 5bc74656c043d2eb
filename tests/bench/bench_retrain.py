"""Retraining a concept the parent never saw (issue #8's second target), on any device.

Writes phantoms with an adrenal lesion (60 to train on, 20 held out; the same seeds as
tests/test_training_slow.py), fine-tunes the parent for a wall-time budget and prints
parent and child Dice per concept on the held-out set. Not collected by pytest.

    .venv/bin/python tests/bench/bench_retrain.py --minutes 10 --threads 2        # this CPU
    python tests/bench/bench_retrain.py --minutes 3 --device cuda --out /tmp/rt    # a GPU
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path


def _write(args: tuple[str, int, int]) -> str:
    from voxtell.data.cohorts import write_phantom_dataset
    from voxtell.data.phantoms import PhantomConfig

    out, n, start = args
    write_phantom_dataset(out, n, seed=5, start=start, config=PhantomConfig(adrenal_lesion_rate=0.8))
    return out


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device("cuda" if device == "auto" else device))
    return f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parent", type=Path, default=Path("models/demo-small"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/voxtell-bench-retrain"))
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="default: RETRAIN_DEFAULTS.lr")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from voxtell.data.vocabulary import PHANTOM_VOCABULARY
    from voxtell.training.config import RETRAIN_DEFAULTS
    from voxtell.training.retrain import retrain

    train, held = args.out / "adrenal", args.out / "adrenal-held"
    t0 = time.perf_counter()
    todo = [(str(train), 60, 0), (str(held), 20, 1000)]
    todo = [t for t in todo if not (Path(t[0]) / "dataset.json").is_file()]
    if todo:
        with ProcessPoolExecutor(len(todo)) as pool:
            list(pool.map(_write, todo))
    print(f"phantoms ready in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = replace(RETRAIN_DEFAULTS, max_steps=1_000_000, time_budget_min=args.minutes, val_every=0,
                  device=args.device, num_threads=args.threads, lr=args.lr or RETRAIN_DEFAULTS.lr)
    t0 = time.perf_counter()
    res = retrain(args.parent, train, args.out / "child", PHANTOM_VOCABULARY, cfg, heldout=held, tolerance=0.05,
                  promote_link=None, progress=False)
    print(f"retrained {res.train.step} steps in {args.minutes} min (+ evaluation: {time.perf_counter() - t0:.0f} s total)"
          f" on {_device_name(args.device)}")
    print("| concept | parent | child |\n|---|---|---|")
    for c in sorted(res.child_dice):
        print(f"| {c} | {res.parent_dice.get(c, 0.0):.3f} | {res.child_dice[c]:.3f} |")
    print(res.reason)


if __name__ == "__main__":
    main()
