"""Rule retrain_model: fine-tune the configured model on new data with `voxtell retrain`."""

from _wf import setup

log = setup(snakemake, torch_threads=True)  # noqa: F821

from voxtell.cli import main

p = snakemake.params  # noqa: F821
argv = ["retrain", "--from", p.parent_dir, "--data", p.data, "-o", p.out_dir,
        "--threads", str(snakemake.threads), *p.extra]  # noqa: F821
log.info("voxtell %s", " ".join(argv))
code = main(argv)
if code:
    raise SystemExit(f"voxtell retrain failed with exit code {code}; see the log above")
