"""Rule demo_cohort: write the synthetic demo cohort and its samples table."""

from _wf import setup

setup(snakemake)  # noqa: F821 (snakemake is injected by the script directive)

from voxtell.cohort.demo import run_demo_cohort

p = snakemake.params  # noqa: F821
run_demo_cohort(p.out_dir, p.n_studies, p.seed, p.fixed_prompts, p.findings_settings)
