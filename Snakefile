# VoxTell cohort workflow: DICOM studies + reports -> masks -> cohort Parquet + QC report.
#
#   .venv/bin/snakemake --cores 2                       # the demo (config/config.yaml)
#   .venv/bin/snakemake --cores 2 --configfile my.yaml  # a real cohort
#   .venv/bin/snakemake --profile workflow/profiles/slurm
#
# Targets: all (default), convert, findings, embed, segment, stats, train, retrain, export.
# Rules live in workflow/rules/, their scripts in scripts/, all logic in voxtell/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/findings.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/stats.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        all_targets,


rule convert:
    input:
        lambda wildcards: expand("results/convert/{study}/status.json", study=study_ids()),


rule findings:
    input:
        findings_summaries,


rule embed:
    input:
        "results/embed/prompts.json",


rule segment:
    input:
        lambda wildcards: expand("results/segment/shards/{shard}.json", shard=shards()),


rule stats:
    input:
        lambda wildcards: expand("results/stats/shards/{shard}.json", shard=shards()),


rule train:
    input:
        model_checkpoint,


rule retrain:
    input:
        retrain_target,


rule export:
    input:
        lambda wildcards: f"{MODEL_DIR}/onnx/voxtell_{onnx_precision()}.onnx",
