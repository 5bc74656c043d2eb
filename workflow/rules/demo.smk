# The demo cohort: synthetic DICOM studies, reports and ground truth (phantoms). A
# checkpoint, because the samples table it writes decides which jobs exist.


checkpoint demo_cohort:
    output:
        samples=f"{config['demo']['dir']}/samples.tsv",
    params:
        out_dir=subpath(output.samples, parent=True),
        n_studies=config["demo"]["n_studies"],
        seed=config["demo"]["seed"],
        fixed_prompts=FIXED_PROMPTS,
        findings_settings=findings_settings() if USE_FINDINGS else None,
    log:
        "logs/demo/demo_cohort.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/demo.yaml"
    script:
        "../../scripts/demo_cohort.py"
