"""Rule embed_prompts: the cohort's unique prompts -> embedding bank (+ manifest)."""

from _wf import setup

setup(snakemake, torch_threads=True)  # noqa: F821

from voxtell.cohort.stage_embed import run_embed

p = snakemake.params  # noqa: F821
run_embed(
    p.fixed_prompts,
    p.findings_files,
    p.bank,
    snakemake.output.manifest,  # noqa: F821
    encoder_id=p.encoder,
    encoder_path=p.encoder_path,
    device=p.device,
    allow_download=p.allow_download,
    max_prompts=p.max_prompts,
)
