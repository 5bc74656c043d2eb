"""Export a model folder's image network to ONNX for ONNX Runtime / TensorRT.

The exported graph is the whole image network (encoder, prompt decoder, image decoder)
for one patch size: inputs ``image`` (batch, 1, *patch) and ``text_embeddings`` (batch,
prompts, dim), output ``logits`` (batch, prompts, *patch), with dynamic batch and prompt
axes. Text encoding stays outside (embedding bank). The file records the sha256 of the
weights it came from, so a backend refuses to pair it with another model.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from voxtell.errors import VoxTellError
from voxtell.io.atomic import atomic_path
from voxtell.model.checkpoint import LoadedModel, load_model_dir
from voxtell.model.network import VoxTellNetwork

log = logging.getLogger(__name__)

OPSET = 17
ONNX_SUBDIR = "onnx"
PRECISIONS = ("fp32", "fp16")


class OnnxModelError(VoxTellError):
    """An ONNX file is missing, corrupt, or does not belong to the model it is used with."""


def default_onnx_path(model_dir: str | os.PathLike, precision: str = "fp32") -> Path:
    """Where ``voxtell export-onnx`` puts the graph by default, and where the backend looks."""
    return Path(model_dir) / ONNX_SUBDIR / f"voxtell_{precision}.onnx"


class _ExportWrapper(nn.Module):
    """All prompts in one pass (no chunk loop, no deep supervision): a trace-friendly forward.

    The prompt-chunk loop of ``VoxTellNetwork.decode`` would be unrolled by the tracer with
    the example's prompt count baked in; here the decoder is called once on every prompt,
    so the prompt axis stays symbolic. Inputs and outputs stay float32 whatever the
    internal precision.
    """

    def __init__(self, network: VoxTellNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, text_embeddings: Tensor) -> Tensor:
        net = self.network
        features = list(net.encoder(image))
        guidance = net.guidance(features[net.config.decoder_layer], text_embeddings)
        shared = net._shared_decoder_terms(features, consume=False)
        return net._decode_chunk(shared, guidance, False)[0]


@dataclass(frozen=True)
class OnnxExportResult:
    path: Path
    precision: str
    model_sha256: str
    opset: int


def export_onnx(
    model: str | os.PathLike | LoadedModel,
    out_path: str | os.PathLike | None = None,
    precision: str = "fp32",
    opset: int = OPSET,
) -> OnnxExportResult:
    """Trace the image network and write a checked ONNX file (atomically)."""
    import onnx

    if precision not in PRECISIONS:
        raise OnnxModelError(f"ONNX export precision must be one of {PRECISIONS}, got {precision!r}")
    if opset < 17:
        raise OnnxModelError("opset must be >= 17 (LayerNormalization)")
    loaded = model if isinstance(model, LoadedModel) else load_model_dir(model, device="cpu")
    if loaded.meta.sha256 is None:
        raise OnnxModelError("the model has no weights checksum; load it from a model folder")
    if out_path is None:
        if loaded.path is None:
            raise OnnxModelError("give an output path for an in-memory model")
        out_path = default_onnx_path(loaded.path, precision)
    cfg = loaded.config
    wrapper = _ExportWrapper(loaded.network.float().eval()).eval()
    image = torch.zeros(1, cfg.input_channels, *cfg.patch_size)
    text = torch.zeros(1, 2, cfg.text_embedding_dim)
    with atomic_path(out_path, suffix=".onnx") as tmp, torch.no_grad():
        torch.onnx.export(
            wrapper,
            (image, text),
            str(tmp),
            input_names=["image", "text_embeddings"],
            output_names=["logits"],
            dynamic_axes={
                "image": {0: "batch"},
                "text_embeddings": {0: "batch", 1: "prompts"},
                "logits": {0: "batch", 1: "prompts"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        if precision == "fp16":
            proto = _to_fp16(proto)
        meta = {
            "voxtell_model_sha256": loaded.meta.sha256,
            "voxtell_model_id": loaded.meta.model_id,
            "voxtell_text_encoder": loaded.meta.text_encoder,
            "voxtell_precision": precision,
            "voxtell_network": json.dumps(cfg.to_dict(), sort_keys=True),
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
    log.info("exported %s (%s, opset %d) to %s", loaded.meta.model_id, precision, opset, out_path)
    return OnnxExportResult(Path(out_path), precision, loaded.meta.sha256, opset)


def _to_fp16(proto):
    """fp16 weights and compute with float32 inputs/outputs (the backend contract).

    The fp32 graph is traced and then converted (onnxconverter-common), because PyTorch's
    CPU kernels cannot trace every op in half precision. Normalisations keep fp32
    statistics where the converter's block list says fp16 is unsafe.
    """
    from onnxconverter_common import float16

    import onnx

    converted = float16.convert_float_to_float16(proto, keep_io_types=True)
    # Casts traced from the model (the attention scale is a shape cast to float) still
    # produce float32 and would feed fp16 arithmetic: retarget them to fp16. Only the
    # converter's own casts at the graph outputs must keep producing float32.
    outputs = {o.name for o in converted.graph.output}
    for node in converted.graph.node:
        if node.op_type != "Cast" or any(o in outputs for o in node.output):
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                attr.i = onnx.TensorProto.FLOAT16
    del converted.graph.value_info[:]  # stale annotations; shape inference recomputes them
    return converted


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The voxtell metadata of an exported file; typed error when it is not a valid export."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"ONNX file {path} does not exist; create it with `voxtell export-onnx MODEL_DIR`")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise OnnxModelError(f"{path} is not a readable ONNX file ({exc}); export it again") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if "voxtell_model_sha256" not in meta:
        raise OnnxModelError(f"{path} was not exported by `voxtell export-onnx` (no model checksum recorded)")
    return meta
