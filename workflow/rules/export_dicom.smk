# Masks -> DICOM SEG + RTSTRUCT per study, referencing the source series (target
# `export_dicom`, off unless export_dicom.enabled). Every study ends with a status.json.


rule export_dicom_study:
    input:
        unpack(export_dicom_input),
    output:
        status=L.status("export_dicom", "{study}"),
    params:
        segment_dir=L.study_dir("segment", "{study}"),
        dicom=lambda wildcards: samples()[wildcards.study].dicom,
        out_dir=subpath(output.status, parent=True),
    log:
        "logs/export_dicom/{study}.log",
    benchmark:
        "benchmarks/export_dicom/{study}.tsv"
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 20 * attempt,
    conda:
        "../../envs/stats.yaml"
    script:
        "../../scripts/export_dicom.py"


rule export_dicom:
    input:
        lambda wildcards: [L.status("export_dicom", s) for s in study_ids()],
