"""ONNX export and the ONNX Runtime backend agree with PyTorch on the tiny preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxtell.inference.onnx_backend import OnnxBackend, choose_providers, load_onnx_backend
from voxtell.model import ModelMeta, get_preset, load_model_dir, save_model_dir
from voxtell.model.network import VoxTellNetwork
from voxtell.model.onnx_export import OnnxModelError, default_onnx_path, export_onnx, read_onnx_metadata


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = get_preset("tiny", deep_supervision=False)
    net = VoxTellNetwork(cfg).eval()
    out = tmp_path_factory.mktemp("tiny_model")
    save_model_dir(net, cfg, out, ModelMeta(model_id="tiny-onnx-test", preset="tiny", text_encoder="test", embedding_dim=cfg.text_embedding_dim))
    return out


@pytest.fixture(scope="module")
def exported(tiny_model_dir):
    return export_onnx(tiny_model_dir)


def _inputs(batch, prompts, cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 1, *cfg.patch_size, generator=g)
    text = torch.randn(prompts, cfg.text_embedding_dim, generator=g)
    return image, text


@pytest.mark.parametrize("batch,prompts", [(1, 1), (1, 3), (2, 2), (3, 5)])
def test_onnx_matches_torch_fp32(tiny_model_dir, exported, batch, prompts):
    loaded = load_model_dir(tiny_model_dir)
    backend = OnnxBackend(exported.path, loaded.meta.sha256)
    image, text = _inputs(batch, prompts, loaded.config, seed=batch * 10 + prompts)
    with torch.inference_mode():
        ref = loaded.network(image, text[None].expand(batch, -1, -1)).numpy()
    out = backend.forward(image, text)
    assert out.shape == (batch, prompts, *loaded.config.patch_size)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_export_is_checked_and_records_the_model(tiny_model_dir, exported):
    import onnx

    assert exported.path == default_onnx_path(tiny_model_dir)
    proto = onnx.load(str(exported.path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    meta = read_onnx_metadata(exported.path)
    assert meta["voxtell_model_sha256"] == load_model_dir(tiny_model_dir).meta.sha256
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert inputs["image"][0] == "batch" and inputs["text_embeddings"][:2] == ["batch", "prompts"]


FP16_TOLERANCE = 0.02  # of the largest |logit|


def _check_fp16(out, ref):
    """fp16 keeps ~3 significant digits; InstanceNorm renormalises every stage, so errors
    do not grow with depth but stay relative to the logit scale: we accept 2 % of the
    largest |logit| and equal masks on >= 99 % of voxels (the rest sit near logit 0)."""
    scale = float(np.abs(ref).max())
    assert float(np.abs(out - ref).max()) <= FP16_TOLERANCE * scale
    assert float(((out > 0) == (ref > 0)).mean()) >= 0.99


def _fp16_emulated(network, image, text):
    """Weights and every module output rounded to fp16 (fp32 accumulation, as on tensor
    cores): CPU PyTorch lacks some fp16 kernels (avg_pool3d), so emulate the storage."""
    for p in network.parameters():
        p.data = p.data.half().float()
    hooks = [m.register_forward_hook(lambda _m, _i, out: out.half().float() if torch.is_tensor(out) else None)
             for m in network.modules() if not list(m.children())]
    try:
        return network(image.half().float(), text.half().float()).numpy()
    finally:
        for h in hooks:
            h.remove()


def test_fp16_export_within_tolerance(tiny_model_dir, tmp_path):
    import onnx

    loaded = load_model_dir(tiny_model_dir)
    result = export_onnx(tiny_model_dir, tmp_path / "m16.onnx", precision="fp16")
    proto = onnx.load(str(result.path))
    assert {i.data_type for i in proto.graph.initializer} >= {onnx.TensorProto.FLOAT16}
    image, text = _inputs(1, 2, loaded.config)
    with torch.inference_mode():
        ref = loaded.network(image, text[None]).numpy()
        # the same half-precision arithmetic in PyTorch justifies the tolerance on any host
        _check_fp16(_fp16_emulated(load_model_dir(tiny_model_dir).network, image, text[None]), ref)
    # onnxruntime's CPU provider has no fp16 Conv3D: the graph itself runs in gpu_bench.sh
    with pytest.raises(OnnxModelError, match="only on CUDA"):
        OnnxBackend(result.path, loaded.meta.sha256, device="cpu")


def test_mismatched_and_corrupt_onnx_are_refused(tiny_model_dir, exported, tmp_path):
    with pytest.raises(OnnxModelError, match="export it again"):
        OnnxBackend(exported.path, expected_sha256="0" * 64)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(exported.path.read_bytes()[:2000])
    with pytest.raises(OnnxModelError):
        OnnxBackend(bad, None)
    with pytest.raises(OnnxModelError, match="does not exist"):
        OnnxBackend(tmp_path / "missing.onnx", None)
    with pytest.raises(OnnxModelError, match="precision"):
        export_onnx(tiny_model_dir, tmp_path / "x.onnx", precision="int8")


def test_backend_for_model_dir_and_providers(tiny_model_dir, exported):
    backend = load_onnx_backend(tiny_model_dir, device="cpu")
    assert backend.providers == ["CPUExecutionProvider"]
    assert choose_providers(None, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"], "cuda")[-1] == "CPUExecutionProvider"


def test_whole_volume_masks_agree_with_torch(tiny_model_dir, exported, totalseg_dir):
    """The ONNX backend shares preprocessing, sliding window and output with PyTorch."""
    from voxtell.inference.predictor import Predictor, PredictorConfig

    image = totalseg_dir / "example_ct_sm.nii.gz"
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((3, 16)).astype(np.float32)
    results = {}
    for backend in ("torch", "onnx"):
        cfg = PredictorConfig(device="cpu", backend=backend, progress=False, threshold=0.5)
        predictor = Predictor.from_model_dir(tiny_model_dir, cfg)
        assert predictor.backend.name == ("onnxruntime" if backend == "onnx" else "torch")
        results[backend] = predictor.predict(image, embeddings=emb).masks
    a, b = np.asarray(results["torch"]), np.asarray(results["onnx"])
    assert a.shape == b.shape and a.sum() > 0
    assert float((a == b).mean()) >= 0.999
