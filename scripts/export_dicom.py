"""Rule export_dicom_study: one study's masks -> DICOM SEG + RTSTRUCT + status.json."""

from _wf import setup

setup(snakemake)  # noqa: F821

from voxtell.cohort.stage_export_dicom import run_export_dicom

p = snakemake.params  # noqa: F821
run_export_dicom(snakemake.wildcards.study, p.segment_dir, p.dicom, p.out_dir)  # noqa: F821
