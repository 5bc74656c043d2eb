"""Rule segment_shard: segment the studies of one shard with the model loaded once."""

import json

from _wf import setup

setup(snakemake, torch_threads=True)  # noqa: F821

from voxtell.cohort.stage_segment import SegmentTask, run_segment_shard

with open(snakemake.input.settings, encoding="utf-8") as fh:  # noqa: F821
    s = json.load(fh)
run_segment_shard(
    snakemake.wildcards.shard,  # noqa: F821
    [SegmentTask(**t) for t in snakemake.params.tasks],  # noqa: F821
    snakemake.output.summary,  # noqa: F821
    model_dir=s["model_dir"],
    fixed_prompts=s["fixed_prompts"],
    predictor=s["predictor"],
    bank=s["bank"],
    text_encoder=s["text_encoder"],
    config_hash=s["config_hash"],
    model_sha_cache=s["model_sha_cache"],
    max_prompts=s.get("max_prompts"),
)
