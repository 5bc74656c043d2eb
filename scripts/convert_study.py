"""Rule convert_study: one study's DICOM (or NIfTI) -> image + status.json."""

from _wf import setup

setup(snakemake)  # noqa: F821

from voxtell.cohort.stage_convert import run_convert

p = snakemake.params  # noqa: F821
run_convert(
    snakemake.wildcards.study,  # noqa: F821
    p.out_dir,
    dicom=p.source["dicom"],
    image=p.source["image"],
    modalities=p.modalities,
    min_slices=p.min_slices,
    pet_suv=p.pet_suv,
)
