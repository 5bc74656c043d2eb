"""``voxtell train`` and ``voxtell retrain``: thin wrappers over ``train`` and ``retrain``.

The demo model's commands are in models/demo-small/README.md; the TrainConfig defaults
are its recipe, so ``voxtell train --data D --vocabulary V -o OUT --time-budget 15`` is
all a new dataset needs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(p: argparse.ArgumentParser, defaults) -> None:
    p.add_argument("--data", required=True, type=Path, help="nnU-Net raw dataset (imagesTr/, labelsTr/, dataset.json)")
    p.add_argument("--vocabulary", type=Path, default=None,
                   help="vocabulary JSON (default: DATA/vocabulary.json)")
    p.add_argument("-o", "--out", required=True, type=Path, help="model folder to write")
    p.add_argument("--steps", type=int, default=defaults.max_steps, help="length of the learning-rate schedule")
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="wall-clock minutes; the schedule ends at the budget or at --steps, whichever comes first")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--prompts-per-patch", type=int, default=defaults.prompts_per_patch)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=defaults.optimizer)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--val-every", type=int, default=defaults.val_every)
    p.add_argument("--val-cases", type=int, default=defaults.val_cases)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms; step-based schedule only")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in the output folder")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="run at most N steps now, checkpoint and exit (rerun to continue)")
    p.add_argument("--bank", type=Path, default=None, help="embedding bank (.npz) to reuse for vocabulary prompts")
    p.add_argument("--freeze-encoder", action="store_true", help="train only the prompt and image decoders")
    p.add_argument("--contrast-rate", type=float, default=defaults.contrast_rate,
                   help="chance that a part ('left kidney') brings its siblings and whole into the same patch")
    p.add_argument("--paraphrase-mix", type=float, default=defaults.paraphrase_mix,
                   help="chance that a prompt's embedding is blended with another paraphrase of its concept")
    p.add_argument("--focus", nargs="+", default=list(defaults.focus_concepts), metavar="CONCEPT",
                   help="concepts to centre patches on more often (retrain default: concepts new to the parent)")
    p.add_argument("--focus-weight", type=float, default=defaults.focus_weight)
    p.add_argument("--no-amp", action="store_true",
                   help="train in fp32 (default: bf16 autocast on CUDA and on CPUs with native bf16)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from voxtell.training.config import RETRAIN_DEFAULTS, TrainConfig

    t = subparsers.add_parser("train", help="train a VoxTell model on an nnU-Net raw dataset + vocabulary",
                              description="Train a text-promptable VoxTell model from scratch and write a model folder.")
    _common(t, TrainConfig())
    t.add_argument("--preset", default="small", help="network preset (small, tiny, voxtell-v1)")
    t.add_argument("--val-data", type=Path, default=None, help="separate validation dataset (nnU-Net raw layout)")
    t.set_defaults(func=run_train)

    r = subparsers.add_parser("retrain", help="fine-tune a model folder on new data; promote it only if not worse",
                              description="Retrain from a model folder, compare parent and child on held-out data, "
                                          "and move the models/current symlink to the child if no old concept "
                                          "drops by more than --tolerance.")
    r.add_argument("--from", dest="from_dir", required=True, type=Path, help="parent model folder")
    _common(r, RETRAIN_DEFAULTS)
    r.add_argument("--heldout", type=Path, default=None, help="held-out dataset to compare parent and child")
    r.add_argument("--tolerance", type=float, default=0.05, help="largest allowed Dice drop on an old concept")
    r.add_argument("--promote-link", type=Path, default=None,
                   help="symlink to move to the child (default: OUT/../current)")
    r.add_argument("--no-promote", action="store_true", help="evaluate only, never move the symlink")
    r.set_defaults(func=run_retrain)


def _config(args: argparse.Namespace, base):
    from dataclasses import replace

    return replace(base, max_steps=args.steps, time_budget_min=args.time_budget, batch_size=args.batch_size,
                   prompts_per_patch=args.prompts_per_patch, optimizer=args.optimizer, lr=args.lr,
                   val_every=args.val_every, val_cases=args.val_cases, seed=args.seed,
                   deterministic=args.deterministic, device=args.device, num_threads=args.threads,
                   freeze_encoder=args.freeze_encoder, contrast_rate=args.contrast_rate,
                   paraphrase_mix=args.paraphrase_mix, focus_concepts=tuple(args.focus), focus_weight=args.focus_weight,
                   amp=not args.no_amp, **({"preset": args.preset} if hasattr(args, "preset") else {}))


def config_from_command(command: str):
    """The TrainConfig a ``voxtell train|retrain ...`` command line runs with.

    Lets a model folder's recorded command, or the one in its README, be checked
    against the recipe it claims (see tests/test_training.py).
    """
    import shlex

    from voxtell.cli import build_parser
    from voxtell.training.config import RETRAIN_DEFAULTS, TrainConfig

    argv = shlex.split(command.replace("\\\n", " "))
    if argv and argv[0] == "voxtell":
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    if args.command not in ("train", "retrain"):
        raise ValueError(f"not a voxtell train/retrain command: {command!r}")
    return _config(args, TrainConfig() if args.command == "train" else RETRAIN_DEFAULTS)


def _vocabulary(args: argparse.Namespace) -> Path:
    return args.vocabulary or args.data / "vocabulary.json"


def run_train(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from voxtell.training.config import TrainConfig
    from voxtell.training.evaluate import format_table
    from voxtell.training.trainer import train

    res = train(args.data, _vocabulary(args), args.out, _config(args, TrainConfig()), val_data=args.val_data,
                bank=args.bank, resume=not args.no_resume, stop_after=args.stop_after,
                extra_provenance={"command": "voxtell " + shlex.join(getattr(args, "argv", sys.argv[1:]))})
    if not res.finished:
        print(f"stopped at step {res.step}; rerun the same command to resume")
        return 0
    print(f"model written to {res.model_dir} (sha256 {res.meta.sha256[:12]})")
    if res.validation:
        print(format_table({"dice": res.validation}))
    return 0


def run_retrain(args: argparse.Namespace) -> int:
    from voxtell.training.config import RETRAIN_DEFAULTS
    from voxtell.training.retrain import retrain

    link = None if args.no_promote else (args.promote_link or args.out.parent / "current")
    res = retrain(args.from_dir, args.data, args.out, _vocabulary(args), _config(args, RETRAIN_DEFAULTS),
                  heldout=args.heldout, tolerance=args.tolerance, promote_link=link, bank=args.bank,
                  resume=not args.no_resume, stop_after=args.stop_after)
    print(res.reason)
    for c in sorted(res.child_dice):
        print(f"{c:20s} parent {res.parent_dice.get(c, float('nan')):.3f}  child {res.child_dice[c]:.3f}")
    return 0
