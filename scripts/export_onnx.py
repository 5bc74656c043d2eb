"""Rule export_onnx: trace the model's image network to ONNX."""

from _wf import setup

log = setup(snakemake, torch_threads=True)  # noqa: F821

from voxtell.model.onnx_export import export_onnx

result = export_onnx(snakemake.params.model_dir, snakemake.output.onnx, precision=snakemake.wildcards.precision)  # noqa: F821
log.info("exported %s", result.path)
