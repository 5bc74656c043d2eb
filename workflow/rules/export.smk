# ONNX export of the configured model (for segment.backend: onnx, or other runtimes). A
# separate target (`snakemake export`); segmentation asks for it only with backend onnx.


rule export_onnx:
    input:
        model=MODEL_CHECKPOINT,
    output:
        onnx=f"{MODEL_DIR}/onnx/voxtell_{{precision}}.onnx",
    params:
        model_dir=subpath(input.model, ancestor=2),
    wildcard_constraints:
        precision="fp32|fp16",
    log:
        "logs/export/export_onnx_{precision}.log",
    benchmark:
        "benchmarks/export/export_onnx_{precision}.tsv"
    resources:
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../../envs/torch.yaml"
    script:
        "../../scripts/export_onnx.py"
