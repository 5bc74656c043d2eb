"""Rule train_demo_model: train the small demo model with `voxtell train`."""

import os

from _wf import setup

log = setup(snakemake, torch_threads=True)  # noqa: F821

from voxtell.cli import main

p = snakemake.params  # noqa: F821
argv = [
    "train",
    "--data", p.data_dir,
    "--vocabulary", os.path.join(p.data_dir, "vocabulary.json"),
    "--preset", p.preset,
    "-o", p.model_dir,
    "--threads", str(snakemake.threads),  # noqa: F821
]
argv += list(p.extra)
log.info("voxtell %s", " ".join(argv))
code = main(argv)
if code:
    raise SystemExit(f"voxtell train failed with exit code {code}; see the log above")
