"""Retraining benchmarks, on any device; prints parent and child Dice per concept on the
held-out set. Not collected by pytest.

``--target adrenal`` (default): a concept the parent never saw (issue #8's second target).
Phantoms with an adrenal lesion, 60 to train on and 20 held out (the seeds of
tests/test_training_slow.py).

``--target lesions``: the small lesions the demo model has not learned (lung nodules, liver
lesions, lymph nodes: 15-30 voxels each). The demo model's own 100 training and 20 held-out
phantoms, patches centred 8x as often on the lesions. On 2 CPU threads 20 minutes give liver
lesions 0.37-0.44 and nodules 0 (models/demo-small/README.md); this asks whether a GPU's
budget of steps gets further.

    .venv/bin/python tests/bench/bench_retrain.py --minutes 10 --threads 2        # this CPU
    python tests/bench/bench_retrain.py --minutes 3 --device cuda --out /tmp/rt    # a GPU
    python tests/bench/bench_retrain.py --target lesions --lr 1e-3 --minutes 4 --device cuda
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path


#: target -> (phantom seed, adrenal lesion rate, training cases, held-out cases, focus concepts;
#: None: the concepts new to the parent)
TARGETS = {
    "adrenal": (5, 0.8, 60, 20, None),
    "lesions": (0, 0.0, 100, 20, ("lung nodule", "liver lesion", "lymph node")),
}


def _write(args: tuple[str, int, int, int, float]) -> str:
    from voxtell.data.cohorts import write_phantom_dataset
    from voxtell.data.phantoms import PhantomConfig

    out, n, start, seed, adrenal_rate = args
    write_phantom_dataset(out, n, seed=seed, start=start, config=PhantomConfig(adrenal_lesion_rate=adrenal_rate))
    return out


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device("cuda" if device == "auto" else device))
    return f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=sorted(TARGETS), default="adrenal")
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

    seed, adrenal_rate, n_train, n_held, focus = TARGETS[args.target]
    train, held = args.out / args.target, args.out / f"{args.target}-held"
    t0 = time.perf_counter()
    todo = [(str(train), n_train, 0, seed, adrenal_rate), (str(held), n_held, 1000, seed, adrenal_rate)]
    todo = [t for t in todo if not (Path(t[0]) / "dataset.json").is_file()]
    if todo:
        with ProcessPoolExecutor(len(todo)) as pool:
            list(pool.map(_write, todo))
    print(f"phantoms ready in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = replace(RETRAIN_DEFAULTS, max_steps=1_000_000, time_budget_min=args.minutes, val_every=0,
                  device=args.device, num_threads=args.threads, lr=args.lr or RETRAIN_DEFAULTS.lr,
                  focus_concepts=focus or ())
    t0 = time.perf_counter()
    res = retrain(args.parent, train, args.out / f"child-{args.target}", PHANTOM_VOCABULARY, cfg, heldout=held,
                  tolerance=0.05, promote_link=None, progress=False)
    print(f"retrained {res.train.step} steps in {args.minutes} min (+ evaluation: {time.perf_counter() - t0:.0f} s total)"
          f" on {_device_name(args.device)}")
    print("| concept | parent | child |\n|---|---|---|")
    for c in sorted(res.child_dice):
        print(f"| {c} | {res.parent_dice.get(c, 0.0):.3f} | {res.child_dice[c]:.3f} |")
    print(res.reason)


if __name__ == "__main__":
    main()
