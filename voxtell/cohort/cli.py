"""``voxtell status RESULTS_DIR``: the one-screen summary of a workflow run.

Exit code 1 when any study failed in any stage, 0 otherwise, so a cron job or CI step can
alert on it; the full table is ``RESULTS_DIR/cohort/status.parquet``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="studies ok / failed / skipped per stage of a workflow run (exit 1 if any failed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", nargs="?", type=Path, default=Path("results"), metavar="RESULTS_DIR",
                   help="the workflow's results folder (default: results)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from voxtell.cohort.errors import CohortError
    from voxtell.cohort.run_status import read_run_status

    if not args.results.is_dir():
        raise CohortError(f"{args.results} is not a folder; give the workflow's results folder (e.g. results)")
    status = read_run_status(args.results)
    print(status.render())
    return 1 if status.any_failed else 0
