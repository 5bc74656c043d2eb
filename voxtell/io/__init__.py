"""Input and output: DICOM discovery and conversion, NIfTI I/O, manifests, atomic writes."""
