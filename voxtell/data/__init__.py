"""Synthetic phantom cohorts, the phantom vocabulary, nnU-Net raw layout I/O, demo studies.

``phantoms`` (generate_phantom, generate_cohort, LABELS, PhantomConfig), ``vocabulary``
(Vocabulary, PHANTOM_VOCABULARY), ``nnunet`` (read/write raw datasets), ``cohorts``
(write_phantom_dataset), ``demo`` (write_demo_cohort), ``reports`` (write_report).
"""
