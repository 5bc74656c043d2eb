# Masks -> per-study statistics Parquet and QC PNG, one job per shard, after the shard's
# segmentation; unchanged studies are skipped inside the job. Settings come from a
# settings file (see segment.smk for why not parameters).


rule stats_settings:
    output:
        settings=L.settings("stats"),
    params:
        settings={"qc": config["stats"]["qc"], "workers": config["stats"]["workers"], "config_hash": CONFIG_HASH,
                  "roi_map": config["reference"]["roi_map"], "mtv_threshold_suv": config["stats"]["mtv_threshold_suv"],
                  "qc_checks": config["stats"].get("qc_checks", {})},
    log:
        "logs/stats/settings.log",
    localrule: True
    conda:
        "../../envs/stats.yaml"
    script:
        "../../scripts/write_settings.py"


rule stats_shard:
    input:
        unpack(stats_input),
    output:
        summary=L.shard_summary("stats", "{shard}"),
    params:
        tasks=stats_tasks,
    log:
        "logs/stats/shard-{shard}.log",
    benchmark:
        "benchmarks/stats/shard-{shard}.tsv"
    threads: config["threads"]["stats"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/stats.yaml"
    script:
        "../../scripts/stats_shard.py"
