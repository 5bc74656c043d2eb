# Report -> findings.jsonl, one job per shard (the scispaCy pipeline is built once per
# job; studies whose report and settings are unchanged are skipped inside the job).


rule findings_shard:
    input:
        findings_input,
    output:
        summary=L.shard_summary("findings", "{shard}"),
    params:
        tasks=findings_tasks,
        settings=findings_settings(),
    log:
        "logs/findings/shard-{shard}.log",
    benchmark:
        "benchmarks/findings/shard-{shard}.tsv"
    threads: config["threads"]["findings"]
    resources:
        mem_mb=lambda wildcards, attempt: 3000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        "../../envs/findings.yaml"
    script:
        "../../scripts/findings_shard.py"
