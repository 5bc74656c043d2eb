# DICOM (or a given NIfTI) -> image.nii.gz + series.json, one job per study. The declared
# output is status.json: it exists for every study, "ok" (naming the image and its
# sha256) or "failed" (error class and message), so a bad study never stops the cohort.


rule convert_study:
    input:
        convert_input,
    output:
        status="results/convert/{study}/status.json",
    params:
        source=convert_source,
        out_dir=subpath(output.status, parent=True),
        modalities=config["convert"]["modalities"],
        min_slices=config["convert"]["min_slices"],
        pet_suv=config["convert"]["pet_suv"],
    log:
        "logs/convert/{study}.log",
    benchmark:
        "benchmarks/convert/{study}.tsv"
    threads: config["threads"]["convert"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    conda:
        "../../envs/convert.yaml"
    script:
        "../../scripts/convert_study.py"
