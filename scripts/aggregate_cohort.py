"""Rule aggregate_cohort: cohort Parquet, status table, versions, Dice summary, QC report."""

from _wf import setup

log = setup(snakemake)  # noqa: F821

from voxtell.cohort.run_status import read_run_status
from voxtell.cohort.stage_aggregate import run_aggregate

p = snakemake.params  # noqa: F821
run_aggregate(
    [p.patterns['stats'].format(study=s) for s in p.studies],
    [p.patterns['status'].format(stage=stage, study=s) for stage in p.stages for s in p.studies],
    p.out_dir,
    config_hash=p.config_hash,
    model_sha256=p.model_sha256,
    text_encoder=p.text_encoder,
    qc_pngs={s: p.patterns['qc'].format(study=s) for s in p.studies},
    findings_files={s: p.patterns['findings'].format(study=s) for s in p.studies} if 'findings' in p.patterns else {},
    qc_checks=p.qc_checks,
)
log.info("%s", read_run_status(p.results, p.studies).render())
