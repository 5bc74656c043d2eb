# DICOM (or a given NIfTI) -> image.nii.gz + series.json, one job per shard of studies (the
# job count grows with shards, not studies). Every study of the shard ends with status.json,
# "ok" (naming the image and its sha256, with convert's plausibility warnings) or "failed"
# (error class and message), so a bad study never stops the cohort; per-study done markers
# make a rerun convert only studies whose source or settings changed.


rule convert_shard:
    input:
        convert_input,
    output:
        summary=L.shard_summary("convert", "{shard}"),
    params:
        tasks=convert_tasks,
        settings=convert_settings(),
    log:
        "logs/convert/shard-{shard}.log",
    benchmark:
        "benchmarks/convert/shard-{shard}.tsv"
    threads: config["threads"]["convert"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    conda:
        "../../envs/convert.yaml"
    script:
        "../../scripts/convert_shard.py"
