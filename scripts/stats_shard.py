"""Rule stats_shard: per-study statistics Parquet and QC PNG for one shard."""

import json

from _wf import setup

setup(snakemake)  # noqa: F821

from voxtell.cohort.stage_stats import StatsTask, run_stats_shard

with open(snakemake.input.settings, encoding="utf-8") as fh:  # noqa: F821
    s = json.load(fh)
run_stats_shard(
    snakemake.wildcards.shard,  # noqa: F821
    [StatsTask(**t) for t in snakemake.params.tasks],  # noqa: F821
    snakemake.output.summary,  # noqa: F821
    qc=s["qc"],
    workers=s["workers"],
    config_hash=s["config_hash"],
    roi_map=s.get("roi_map"),
    mtv_threshold_suv=s.get("mtv_threshold_suv", 2.5),
    qc_checks=s.get("qc_checks"),
)
