# Per-study Parquet parts -> cohort dataset (stats.parquet), status table (every failed
# study and stage), versions.json (pipeline version, model sha256, config hash, tools),
# Dice summary and the cohort QC report.


rule aggregate_cohort:
    input:
        unpack(aggregate_input),
    output:
        stats=L.cohort("stats"),
        status=L.cohort("status"),
        qc=report(L.cohort("qc"), caption="../report/qc.rst", category="QC"),
        qc_studies=report(directory(L.cohort("qc_studies")), patterns=["{study}.html"], caption="../report/qc_study.rst",
                          category="QC", subcategory="studies"),
        versions=L.cohort("versions"),
        findings=report(L.cohort("findings"), caption="../report/findings.rst", category="Tables"),
    params:
        studies=aggregate_studies,
        stages=[s for s in STAGES if USE_FINDINGS or s != "findings"],
        patterns=aggregate_patterns,
        out_dir=subpath(output.stats, parent=True),
        results=subpath(output.stats, ancestor=2),
        config_hash=CONFIG_HASH,
        model_sha256=model_sha256,
        text_encoder=text_encoder_id,
        qc_checks=config["stats"].get("qc_checks", {}),
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
