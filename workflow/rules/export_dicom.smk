# Masks -> DICOM SEG + RTSTRUCT per study, referencing the source series (target
# `export_dicom`, off unless export_dicom.enabled). Every study ends with a status.json.


def export_dicom_input(wildcards):
    if not config["export_dicom"]["enabled"]:
        raise WorkflowError("the export_dicom target needs export_dicom.enabled: true (then convert records the source UIDs)")
    shard = next(k for k, members in shards().items() if wildcards.study in members)
    return {"segment": L.shard_summary("segment", shard), "convert": L.shard_summary("convert", shard)}


rule export_dicom_study:
    input:
        unpack(export_dicom_input),
    output:
        status="results/export_dicom/{study}/status.json",
    params:
        segment_dir="results/segment/{study}",
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
        lambda wildcards: expand("results/export_dicom/{study}/status.json", study=study_ids()),
