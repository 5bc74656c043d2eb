# The cohort's unique prompts -> embedding bank, one job per cohort. The bank is a
# persistent file reused across runs (only new prompts are encoded); the declared output
# is a manifest, which segmentation depends on as ancient(), so adding prompts for new
# studies does not re-trigger the shards that do not use them.


rule embed_prompts:
    input:
        embed_input,
    output:
        manifest=L.embed_manifest(),
    params:
        fixed_prompts=FIXED_PROMPTS,
        findings_files=embed_findings_files,
        max_prompts=config["segment"]["max_prompts_per_study"],
        bank=bank_path,
        encoder=text_encoder_id,
        encoder_path=config["text_encoder"]["path"],
        device=config["text_encoder"]["device"],
        allow_download=config["text_encoder"]["allow_download"],
    log:
        "logs/embed/embed_prompts.log",
    benchmark:
        "benchmarks/embed/embed_prompts.tsv"
    threads: config["threads"]["embed"]
    resources:
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/embed_prompts.py"
