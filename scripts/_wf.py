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
    """Send stderr and logging to ``snakemake.log[0]``; cap math libraries at ``threads``
    (and torch too when ``torch_threads``: importing torch costs a second, so only where used)."""
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
        os.environ.setdefault(var, threads)
    if importlib.util.find_spec("voxtell") is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if torch_threads:
        import torch

        torch.set_num_threads(int(threads))
    return logging.getLogger(f"voxtell.workflow.{snakemake.rule}")
