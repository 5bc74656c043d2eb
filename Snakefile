# VoxTell cohort workflow: DICOM studies + reports -> masks -> cohort Parquet + QC report.
#
#   .venv/bin/snakemake --cores 2                       # the demo (config/config.yaml)
#   .venv/bin/snakemake --cores 2 --configfile my.yaml  # a real cohort (my.yaml replaces config/config.yaml)
#   .venv/bin/snakemake --profile workflow/profiles/slurm
#
# A run whose studies failed exits non-zero after printing a one-screen summary (studies
# ok / failed / skipped per stage); `voxtell status results` prints it again.
#
# Targets: all (default), convert, findings, embed, segment, stats, train, retrain, export,
# export_dicom (DICOM SEG + RTSTRUCT per study; needs export_dicom.enabled).
# Rules live in workflow/rules/, their scripts in scripts/, all logic in voxtell/.

from snakemake.utils import min_version

min_version("9.0")


# --configfile replaces the shipped demo config instead of being merged over it (keys it does
# not set take the schema's defaults), so a cohort config never inherits demo settings.
if not workflow.overwrite_configfiles:

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
include: "workflow/rules/export_dicom.smk"


rule all:
    default_target: True
    input:
        all_targets,


rule convert:
    input:
        convert_summaries,


rule findings:
    input:
        findings_summaries,


rule embed:
    input:
        L.embed_manifest(),


rule segment:
    input:
        lambda wildcards: shard_summaries("segment"),


rule stats:
    input:
        lambda wildcards: shard_summaries("stats"),


rule train:
    input:
        model_checkpoint,


rule retrain:
    input:
        retrain_target,


rule export:
    input:
        lambda wildcards: f"{MODEL_DIR}/onnx/voxtell_{onnx_precision()}.onnx",


# The run's summary on the terminal; studies that failed make the run fail (after the
# aggregate, which --keep-going lets finish, has written the cohort table with their rows).
onsuccess:
    run_summary(strict=True)


onerror:
    run_summary(strict=False)
