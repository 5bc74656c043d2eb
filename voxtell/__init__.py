"""VoxTell at cohort scale: free-text prompted 3-D segmentation of CT, MR and PET.

The package is importable without Snakemake; the workflow in ``workflow/`` only calls it.
"""

__version__ = "0.1.0"
