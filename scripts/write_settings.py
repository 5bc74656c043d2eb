"""Rules segment_settings / stats_settings: write the run-level settings the shard jobs read."""

from _wf import setup

setup(snakemake)  # noqa: F821

from voxtell.io.atomic import write_json_atomic

write_json_atomic(snakemake.output.settings, dict(snakemake.params.settings))  # noqa: F821
