"""The VoxTell network: released parity, parameter layout, prompt batching, model folders, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from voxtell.cli import main as cli_main
from voxtell.errors import ConfigError
from voxtell.model.checkpoint import (
    CHECKPOINT_RELPATH,
    META_FILENAME,
    ModelMeta,
    load_checkpoint_state_dict,
    load_model_dir,
    read_model_meta,
    save_model_dir,
    weights_sha256,
)
from voxtell.model.config import PRESETS, NetworkConfig, config_from_plans, get_preset
from voxtell.model.errors import (
    CheckpointError,
    EmbeddingDimensionError,
    ModelInputError,
    ModelNotFoundError,
    StateDictMismatchError,
    UnsafeCheckpointError,
)
from voxtell.model.network import VoxTellNetwork, sinusoidal_position_encoding_3d

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny_dir(reference_dir: Path) -> Path:
    return reference_dir / "tiny"


@pytest.fixture(scope="module")
def tiny_config(tiny_dir: Path) -> NetworkConfig:
    return NetworkConfig.from_dict(json.loads((tiny_dir / "config.json").read_text()), deep_supervision=True)


@pytest.fixture(scope="module")
def tiny_state(tiny_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_state_dict(tiny_dir / "checkpoint.pth")


@pytest.fixture(scope="module")
def tiny_io(tiny_dir: Path) -> dict[str, np.ndarray]:
    with np.load(tiny_dir / "io.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def tiny_net(tiny_config: NetworkConfig, tiny_state) -> VoxTellNetwork:
    net = VoxTellNetwork(tiny_config)
    net.load_state_dict(tiny_state, strict=True)
    return net.eval()


@pytest.fixture()
def tiny_model_dir(tmp_path: Path, tiny_config: NetworkConfig, tiny_net: VoxTellNetwork) -> Path:
    meta = ModelMeta(model_id="tiny-parity", preset="tiny", text_encoder="test/none", embedding_dim=16,
                     training={"source": "reference fixture"})
    save_model_dir(tiny_net, tiny_config, tmp_path / "model", meta)
    return tmp_path / "model"


def _read_tsv(path: Path) -> list[dict[str, str]]:
    lines = [ln.rstrip("\n") for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    header = lines[0].split("\t")
    return [dict(zip(header, ln.split("\t") + [""] * (len(header) - len(ln.split("\t"))))) for ln in lines[1:]]


def _assert_layout(net: VoxTellNetwork, tsv: Path) -> None:
    rows = _read_tsv(tsv)
    state = net.state_dict(keep_vars=True)
    assert [r["name"] for r in rows] == list(state), "names or order differ from the released state dict"
    for r in rows:
        assert "x".join(map(str, state[r["name"]].shape)) == r["shape"], r["name"]
    owners: dict[int, str] = {}
    for r in rows:
        tensor = state[r["name"]]
        if r["alias_of"]:
            assert tensor is state[r["alias_of"]], f"{r['name']} should alias {r['alias_of']}"
        else:
            assert id(tensor) not in owners, f"{r['name']} unexpectedly shares storage with {owners.get(id(tensor))}"
            owners[id(tensor)] = r["name"]


# ---------------------------------------------------------------------------- parity
def test_tiny_reproduces_released_logits(tiny_net: VoxTellNetwork, tiny_io) -> None:
    """THE acceptance test: released weights, released forward, five scales within 1e-4."""
    with torch.inference_mode():
        outs = tiny_net(torch.from_numpy(tiny_io["image"]), torch.from_numpy(tiny_io["text_embedding"]))
    assert len(outs) == 5
    for scale, out in enumerate(outs):
        ref = tiny_io[f"logits_scale{scale}"]
        assert tuple(out.shape) == ref.shape
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-4, rtol=0, err_msg=f"logits_scale{scale}")


def test_tiny_config_equals_preset(tiny_config: NetworkConfig) -> None:
    assert tiny_config.replace(deep_supervision=False) == get_preset("tiny")
    assert NetworkConfig.from_dict(tiny_config.to_dict()) == tiny_config


def test_pos_embed_matches_released_encoding(tiny_state) -> None:
    grid = get_preset("tiny").token_grid
    torch.testing.assert_close(sinusoidal_position_encoding_3d(grid, 32), tiny_state["pos_embed"], rtol=0, atol=1e-6)


def test_tiny_layout_matches_fixture(tiny_net: VoxTellNetwork, tiny_dir: Path) -> None:
    _assert_layout(tiny_net, tiny_dir / "layout.tsv")


def test_v1_preset_layout_matches_released(reference_dir: Path) -> None:
    with torch.device("meta"):  # shapes and aliases without allocating 1.7 GB
        net = VoxTellNetwork(get_preset("voxtell-v1"))
    _assert_layout(net, reference_dir / "voxtell_v1_state_dict.tsv")
    assert net.pos_embed.shape == (12 ** 3, 1, 2048)


def test_presets_scale_with_patch_size() -> None:
    small = get_preset("small")
    assert small.text_embedding_dim == 384 and small.num_tokens == (64 // 16) ** 3
    odd = get_preset("small", patch_size=(32, 64, 96))
    assert odd.token_grid == (2, 4, 6)
    with torch.device("meta"):
        net = VoxTellNetwork(odd)
    assert net.pos_embed.shape == (48, 1, odd.query_dim)


# ---------------------------------------------------------------------------- batching
def test_batched_prompts_equal_one_by_one(tiny_net: VoxTellNetwork, tiny_io) -> None:
    image = torch.from_numpy(tiny_io["image"])
    text = torch.from_numpy(tiny_io["text_embedding"])  # (2, 3, 1, 16)
    with torch.inference_mode():
        feats = tiny_net.encode(image)
        together = tiny_net.decode(feats, text)
        chunked = tiny_net.decode(feats, text[:, :, 0], prompt_chunk=2)
        singles = [tiny_net.decode(feats, text[:, p:p + 1]) for p in range(text.shape[1])]
    for scale in range(5):
        one_by_one = torch.cat([s[scale] for s in singles], dim=1)
        torch.testing.assert_close(together[scale], one_by_one, rtol=0, atol=1e-5)
        torch.testing.assert_close(chunked[scale], together[scale], rtol=0, atol=1e-5)


def test_small_preset_runs_and_batches() -> None:
    torch.manual_seed(0)
    net = VoxTellNetwork(get_preset("small")).eval()
    image = torch.randn(1, 1, 64, 64, 64)
    text = torch.randn(1, 4, 384)
    with torch.inference_mode():
        feats = net.encode(image)
        batched = net.decode(feats, text)
        singles = torch.cat([net.decode(feats, text[:, p:p + 1]) for p in range(4)], dim=1)
    assert batched.shape == (1, 4, 64, 64, 64)
    torch.testing.assert_close(batched, singles, rtol=0, atol=1e-5)
    assert not torch.allclose(batched[:, 0], batched[:, 1])  # prompts matter


def test_training_backward_reaches_every_used_parameter(tiny_config: NetworkConfig) -> None:
    torch.manual_seed(0)
    net = VoxTellNetwork(tiny_config).train()
    outs = net(torch.randn(1, 1, 64, 64, 64), torch.randn(1, 2, 16))
    sum(o.float().pow(2).mean() for o in outs).backward()
    unused = ("self_attn", "norm1", "seg_layers.4")
    for name, param in net.named_parameters():
        if any(u in name for u in unused):
            assert param.grad is None, name
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name


# ---------------------------------------------------------------------------- model folders
def test_model_dir_round_trip(tiny_model_dir: Path, tiny_net: VoxTellNetwork, tiny_config, tiny_io) -> None:
    meta_json = json.loads((tiny_model_dir / META_FILENAME).read_text())
    assert meta_json["sha256"] == weights_sha256(tiny_model_dir / CHECKPOINT_RELPATH)
    assert meta_json["preset"] == "tiny" and meta_json["embedding_dim"] == 16
    assert (tiny_model_dir / "plans.json").is_file()

    loaded = load_model_dir(tiny_model_dir)
    assert loaded.config == tiny_config
    assert loaded.meta.sha256 == meta_json["sha256"] and loaded.meta.training == {"source": "reference fixture"}
    assert not loaded.network.training
    for key, value in tiny_net.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key
    with torch.inference_mode():
        out = loaded.network(torch.from_numpy(tiny_io["image"]), torch.from_numpy(tiny_io["text_embedding"]))
    np.testing.assert_allclose(out[0].numpy(), tiny_io["logits_scale0"], atol=1e-4, rtol=0)

    # Written as the released checkpoint is: aliases present and sharing one tensor.
    raw = torch.load(tiny_model_dir / CHECKPOINT_RELPATH, weights_only=True)["network_weights"]
    a, b = raw["encoder.stem.convs.0.conv.weight"], raw["decoder.encoder.stem.convs.0.all_modules.0.weight"]
    assert a.data_ptr() == b.data_ptr()


def test_released_layout_reads_plans(tmp_path: Path) -> None:
    plans = json.loads(json.dumps(_released_plans()))
    assert config_from_plans(plans) == get_preset("voxtell-v1")
    folder = tmp_path / "released"
    folder.mkdir()
    (folder / "plans.json").write_text(json.dumps(plans))
    config, meta = read_model_meta(folder)
    assert config == get_preset("voxtell-v1")
    assert meta.text_encoder == "Qwen/Qwen3-Embedding-4B" and meta.embedding_dim == 2560


def test_model_info_cli(tiny_model_dir: Path, capsys) -> None:
    assert cli_main(["model-info", str(tiny_model_dir), "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["preset"] == "tiny" and info["sha256_matches_meta"] and info["verified"]
    assert info["network"]["features_per_stage"] == [4, 8, 16, 32, 32, 32]


def test_numpy_values_in_checkpoint_are_allowed(tmp_path: Path, tiny_state) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({"network_weights": tiny_state, "logging": {"loss": [np.float64(0.5)], "arr": np.zeros(3)}}, path)
    assert set(load_checkpoint_state_dict(path)) == set(tiny_state)


# ---------------------------------------------------------------------------- errors
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path, tiny_model_dir: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = tiny_model_dir / CHECKPOINT_RELPATH
    torch.save({"network_weights": {"w": torch.zeros(1)}, "payload": _Exploit(marker)}, ckpt)
    (tiny_model_dir / META_FILENAME).write_text(
        json.dumps({**json.loads((tiny_model_dir / META_FILENAME).read_text()), "sha256": None}))
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_model_dir(tiny_model_dir)
    assert not marker.exists()


def test_missing_things_raise_model_not_found(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model_dir(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="plans.json"):
        load_model_dir(empty)
    (tiny_model_dir / CHECKPOINT_RELPATH).unlink()
    with pytest.raises(ModelNotFoundError, match="checkpoint_final.pth"):
        load_model_dir(tiny_model_dir)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint(tmp_path: Path, tiny_dir: Path, damage: str) -> None:
    path = tmp_path / "ckpt.pth"
    data = (tiny_dir / "checkpoint.pth").read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00not a checkpoint" * 100)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint_state_dict(path)


def test_weights_changed_after_writing_is_detected(tiny_model_dir: Path, tiny_state) -> None:
    torch.save({"network_weights": {k: v + 1 for k, v in tiny_state.items()}}, tiny_model_dir / CHECKPOINT_RELPATH)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model_dir(tiny_model_dir)


@pytest.mark.parametrize("edit, words", [
    ("drop", "missing (first: decoder.seg_layers.4.bias"),
    ("extra", "unexpected (first: extra.weight"),
    ("reshape", "project_text_embed.0.weight: checkpoint [2048, 17] vs network [2048, 16]"),
])
def test_state_dict_mismatch_names_keys(tiny_model_dir: Path, tiny_state, edit: str, words: str) -> None:
    state = dict(tiny_state)
    if edit == "drop":
        del state["decoder.seg_layers.4.bias"]
    elif edit == "extra":
        state["extra.weight"] = torch.zeros(2)
    else:
        state["project_text_embed.0.weight"] = torch.zeros(2048, 17)
    torch.save({"network_weights": state}, tiny_model_dir / CHECKPOINT_RELPATH)
    with pytest.raises(StateDictMismatchError) as info:
        load_model_dir(tiny_model_dir, verify_sha256=False)
    assert words in str(info.value)


def test_inconsistent_aliases_are_refused(tiny_model_dir: Path, tiny_state) -> None:
    state = {k: v.clone() for k, v in tiny_state.items()}
    state["decoder.encoder.stem.convs.0.conv.weight"] += 1
    torch.save({"network_weights": state}, tiny_model_dir / CHECKPOINT_RELPATH)
    with pytest.raises(CheckpointError, match="should repeat"):
        load_model_dir(tiny_model_dir, verify_sha256=False)


def test_wrong_inputs_raise_typed_errors(tiny_net: VoxTellNetwork) -> None:
    image = torch.zeros(1, 1, 64, 64, 64)
    with pytest.raises(EmbeddingDimensionError, match="dimension 2560 but this network expects 16"):
        tiny_net(image, torch.zeros(1, 2, 1, 2560))
    with pytest.raises(ModelInputError, match="patch"):
        tiny_net(torch.zeros(1, 1, 32, 64, 64), torch.zeros(1, 2, 16))
    with pytest.raises(ModelInputError, match="image batch"):
        tiny_net(image, torch.zeros(2, 2, 16))


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown network preset"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="unknown network config field"):
        NetworkConfig.from_dict({**get_preset("tiny").to_dict(), "colour": "blue"})
    with pytest.raises(ConfigError, match="divisible"):
        get_preset("small", patch_size=(60, 64, 64))
    with pytest.raises(ConfigError, match="one entry per stage"):
        get_preset("small", features_per_stage=(8, 16))
    assert set(PRESETS) >= {"voxtell-v1", "tiny", "small"}


def _released_plans() -> dict:
    k, s = [3, 3, 3], [2, 2, 2]
    return {"configurations": {"3d_fullres": {
        "patch_size": [192, 192, 192],
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
            "arch_kwargs": {
                "n_stages": 6, "features_per_stage": [32, 64, 128, 256, 320, 320],
                "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": [k] * 6,
                "strides": [[1, 1, 1]] + [s] * 5, "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
                "n_conv_per_stage_decoder": [1, 1, 1, 1, 1], "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}


def test_inference_path_equals_autograd_path(tiny_net: VoxTellNetwork, tiny_io) -> None:
    """The in-place (no-grad) decoder path and the autograd path compute the same logits."""
    image = torch.from_numpy(tiny_io["image"][:1])
    text = torch.from_numpy(tiny_io["text_embedding"][:1])
    with torch.inference_mode():
        fast = tiny_net(image, text)
    with torch.enable_grad():
        slow = tiny_net(image.clone().requires_grad_(True), text)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=1e-5)


def test_decode_consume_features_releases_skips(tiny_net: VoxTellNetwork, tiny_io) -> None:
    image = torch.from_numpy(tiny_io["image"][:1])
    text = torch.from_numpy(tiny_io["text_embedding"][:1])
    with torch.inference_mode():
        kept = tiny_net.encode(image)
        reference = tiny_net.decode(kept, text, deep_supervision=False)
        assert all(f is not None for f in kept)
        consumed = tiny_net.encode(image)
        out = tiny_net.decode(consumed, text, deep_supervision=False, consume_features=True)
    assert all(f is None for f in consumed)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)


# ---------------------------------------------------------------------------- fast CPU inference
def _wide_net() -> VoxTellNetwork:
    """Released architecture at small size, wide enough (16 channels) to take fast_forward."""
    config = get_preset("tiny").replace(patch_size=(64, 64, 64), features_per_stage=(16, 16, 24, 32, 32, 32),
                                        deep_supervision=True)
    torch.manual_seed(0)
    net = VoxTellNetwork(config).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                p.normal_(0, (2.0 / p[0].numel()) ** 0.5)
            elif "norm" not in name:
                p.normal_(0, 0.05)
    return net


def test_fast_inference_equals_module_forward() -> None:
    """fast_forward (channels-last, in place, folded attention) vs the plain modules, released format."""
    net = _wide_net()
    assert net._fast_supported
    image = torch.randn(2, 1, 64, 64, 64)
    text = torch.randn(2, 3, 1, net.config.text_embedding_dim)
    with torch.inference_mode():
        fast = net(image, text)
        features = net.encode(image[:1])
        assert all(f.is_contiguous(memory_format=torch.channels_last_3d) for f in features)
        net.fast_inference = False
        plain = net(image, text)
    for a, b in zip(fast, plain):  # float rounding only (summation order)
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    agree = ((fast[0] > 0) == (plain[0] > 0)).float().mean().item()
    assert agree >= 0.999
    assert 0.01 < (plain[0] > 0).float().mean().item() < 0.99  # masks are not trivially empty or full


def test_fast_decode_consumes_features_and_keeps_them_otherwise() -> None:
    net = _wide_net()
    image = torch.randn(1, 1, 64, 64, 64)
    text = torch.randn(1, 2, net.config.text_embedding_dim)
    with torch.inference_mode():
        kept = net.encode(image)
        copies = [f.clone() for f in kept]
        first = net.decode(kept, text, deep_supervision=False)
        assert all(torch.equal(a, b) for a, b in zip(kept, copies))  # not overwritten
        consumed = net.encode(image)
        second = net.decode(consumed, text, deep_supervision=False, consume_features=True)
    assert all(f is None for f in consumed)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_fast_primitives_match_torch() -> None:
    from voxtell.model import fast_forward as ff

    torch.manual_seed(1)
    cl = torch.channels_last_3d
    x = torch.randn(1, 8, 19, 7, 6).contiguous(memory_format=cl)
    w, b = torch.randn(8, 8, 3, 3, 3), torch.randn(8)
    ref = torch.nn.functional.conv3d(x, w, b, padding=1)
    ff._SLAB_BYTES, saved = 8 * 7 * 6 * 4 * 4, ff._SLAB_BYTES  # four rows per slab: many slabs
    try:
        torch.testing.assert_close(ff.conv_same_(x.clone(memory_format=cl), w, b), ref, rtol=0, atol=1e-5)
        one = torch.randn(1, 1, 11, 5, 4)
        w1 = torch.randn(8, 1, 3, 3, 3)
        torch.testing.assert_close(ff._single_channel_conv(one, w1, b), torch.nn.functional.conv3d(one, w1, b, padding=1),
                                   rtol=0, atol=1e-5)
    finally:
        ff._SLAB_BYTES = saved
    norm = torch.nn.InstanceNorm3d(8, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.normal_()
    y = x * 30 + 100  # a large mean: the two-pass statistics must not cancel
    expected = torch.nn.functional.leaky_relu(norm(y.contiguous()), 0.01)
    torch.testing.assert_close(ff.norm_act_(y.clone(memory_format=cl), norm, 0.01), expected, rtol=0, atol=1e-4)
    mha = torch.nn.MultiheadAttention(32, 4).eval()
    q, k, v = torch.randn(3, 2, 32), torch.randn(20, 2, 32), torch.randn(20, 2, 32)
    from voxtell.model.network import folded_cross_attention
    with torch.no_grad():
        torch.testing.assert_close(folded_cross_attention(mha, q, k, v), mha(q, k, v, need_weights=False)[0],
                                   rtol=0, atol=1e-5)
