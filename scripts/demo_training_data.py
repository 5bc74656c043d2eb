"""Rule demo_training_data: synthetic phantoms in nnU-Net raw layout for the demo model."""

from _wf import setup

setup(snakemake)  # noqa: F821

from voxtell.data.cohorts import write_phantom_dataset

p = snakemake.params  # noqa: F821
write_phantom_dataset(p.out_dir, p.n_cases, seed=p.seed)
