"""``voxtell model-info MODEL_DIR``: a model folder's config, metadata and checksum as JSON."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model-info", help="print a model folder's network config, metadata and weights sha256 as JSON",
        description="Print the network config, voxtell_model.json metadata and the checkpoint's sha256 of a "
                    "released or project model folder. --verify also loads the weights strictly.")
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="folder with plans.json and fold_0/checkpoint_final.pth")
    parser.add_argument("--verify", action="store_true",
                        help="load the checkpoint and check every key and shape (slower; reads all weights)")
    parser.set_defaults(func=_model_info)


def _model_info(args: argparse.Namespace) -> int:
    from voxtell.model.checkpoint import model_info

    json.dump(model_info(args.model_dir, verify=args.verify), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
