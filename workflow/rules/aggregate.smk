# Per-study Parquet parts -> cohort dataset (stats.parquet), status table (every failed
# study and stage), versions.json (pipeline version, model sha256, config hash, tools),
# Dice summary and the cohort QC report.


rule aggregate_cohort:
    input:
        unpack(aggregate_input),
    output:
        stats="results/cohort/stats.parquet",
        status="results/cohort/status.parquet",
        qc="results/cohort/qc.html",
        versions="results/cohort/versions.json",
    params:
        studies=aggregate_studies,
        stages=["convert", "findings", "segment", "stats"] if USE_FINDINGS else ["convert", "segment", "stats"],
        patterns=aggregate_patterns,
        out_dir=subpath(output.stats, parent=True),
        config_hash=CONFIG_HASH,
        model_sha256=model_sha256,
        text_encoder=text_encoder_id,
    log:
        "logs/aggregate/aggregate_cohort.log",
    benchmark:
        "benchmarks/aggregate/aggregate_cohort.tsv"
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/stats.yaml"
    script:
        "../../scripts/aggregate_cohort.py"
