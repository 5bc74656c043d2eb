"""The ``voxtell`` command: one entry point, one subcommand per stage.

Each stage package owns a ``cli`` module with ``register(subparsers)``; it adds its
arguments and sets ``func`` to a handler that imports heavy libraries (torch, spaCy) only
when it runs, so ``voxtell --help`` stays fast. Handlers wrap the Python API and add
nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from voxtell import __version__
from voxtell.errors import VoxTellError

#: Modules that register subcommands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "voxtell.io.cli",  # convert, rtstruct, export-dicom
    "voxtell.reports.cli",  # findings
    "voxtell.text.cli",  # embed
    "voxtell.inference.cli",  # predict
    "voxtell.stats.cli",  # stats, aggregate, qc
    "voxtell.data.cli",  # phantoms
    "voxtell.training.cli",  # train, retrain
    "voxtell.model.cli",  # model-info
    "voxtell.model.onnx_cli",  # export-onnx
    "voxtell.cohort.cli",  # status
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxtell", description="VoxTell at cohort scale: DICOM, reports, prompts, masks and statistics."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # stage not present in this build
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # provenance records what was run
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except VoxTellError as exc:
        logging.getLogger("voxtell").error("%s: %s", type(exc).__name__, exc)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
