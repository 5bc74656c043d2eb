"""Rule convert_shard: the DICOM (or NIfTI) of one shard's studies -> image + status.json each."""

from _wf import setup

setup(snakemake)  # noqa: F821

from voxtell.cohort.stage_convert import ConvertTask, run_convert_shard

p = snakemake.params  # noqa: F821
run_convert_shard(
    snakemake.wildcards.shard,  # noqa: F821
    [ConvertTask(**t) for t in p.tasks],
    snakemake.output.summary,  # noqa: F821
    settings=dict(p.settings),
)
