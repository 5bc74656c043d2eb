"""Rule findings_shard: reports of one shard -> findings.jsonl per study."""

from _wf import setup

setup(snakemake)  # noqa: F821

from voxtell.cohort.stage_findings import FindingsTask, run_findings_shard

p = snakemake.params  # noqa: F821
run_findings_shard(
    snakemake.wildcards.shard,  # noqa: F821
    [FindingsTask(**t) for t in p.tasks],
    snakemake.output.summary,  # noqa: F821
    settings=p.settings,
)
