"""Shared preamble of the workflow scripts: log to the rule's log file, cap threads.

Scripts run in a fresh interpreter (or a conda env that lacks the project); the
repository root is put on ``sys.path`` only when ``voxtell`` is not importable.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path


def setup(snakemake, torch_threads: bool = False) -> logging.Logger:
    """Send stderr and logging to ``snakemake.log[0]``; cap math libraries (and torch, which
    reads ``OMP_NUM_THREADS`` when it is imported) at the rule's ``threads``.

    Torch is not imported here: a job that finds nothing to do (a shard whose studies are all
    current, a bank that holds every prompt) never pays for it. ``torch_threads`` only matters
    if torch is already imported."""
    log_path = snakemake.log[0]
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(log_path, "a", buffering=1, encoding="utf-8")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    threads = str(max(1, int(getattr(snakemake, "threads", 1) or 1)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = threads  # the rule's threads are what the scheduler reserved
    if importlib.util.find_spec("voxtell") is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if torch_threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    return logging.getLogger(f"voxtell.workflow.{snakemake.rule}")
