# VoxTell segmentation, one GPU job per shard of studies (membership: stable hash of the
# study id). The model is loaded once per job and only when a study needs it; studies
# whose image, model sha256, prompts and settings are unchanged are skipped inside the job.
# Run-level settings (model sha256, fixed prompts, predictor settings) are written to a
# settings file by a small local rule whose parameters they are: a change re-runs that rule
# and, through its output, every shard. (Shard parameters would not do: Snakemake does not
# look at the parameters of jobs downstream of a job that reruns, and the embedding job,
# an ancient() input here, reruns whenever studies bring new prompts.)


rule segment_settings:
    input:
        unpack(segment_settings_input),
    output:
        settings=L.settings("segment"),
    params:
        settings=segment_run_settings,
    log:
        "logs/segment/settings.log",
    localrule: True
    conda:
        "../../envs/stats.yaml"
    script:
        "../../scripts/write_settings.py"


rule segment_shard:
    input:
        unpack(segment_input),
    output:
        summary=L.shard_summary("segment", "{shard}"),
    params:
        tasks=segment_tasks,
    log:
        "logs/segment/shard-{shard}.log",
    benchmark:
        "benchmarks/segment/shard-{shard}.tsv"
    threads: config["threads"]["segment"]
    resources:
        mem_mb=lambda wildcards, attempt: 32000 * attempt,
        runtime=lambda wildcards, attempt: 240 * attempt,
        gpu=gpus_for_segment,
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/segment_shard.py"
