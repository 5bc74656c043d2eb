"""Predictor and ``voxtell predict`` on the tiny preset: geometry, contract, batching, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxtell.cli import main as cli_main
from voxtell.inference.errors import PromptError, UnreadableImageError
from voxtell.inference.predictor import (
    RELEASED_TEXT_ENCODER,
    ModelInfo,
    Predictor,
    PredictorConfig,
)
from voxtell.inference.preprocessing import preprocess
from voxtell.model import ModelMeta, VoxTellNetwork, get_preset, save_model_dir
from voxtell.prompts import prompt_id
from voxtell.text import EmbeddingBank

from test_inference_preprocessing import STORAGES, oblique, ras_phantom

PROMPTS = ["liver", "left kidney", "Spleen with a small hypodense lesion"]
FAKE_ENCODER = "not-a-real/encoder"  # loading it would fail: proves the bank was used


class ThresholdBackend:
    """Deterministic backend: logit = z-scored intensity - t, for every prompt.

    The weighted window average of a voxel's constant logit is that logit, so the mask is
    the thresholded input: any orientation mistake shows up voxel by voxel.
    """

    name = "threshold"
    device = "cpu"

    def __init__(self, t: float) -> None:
        self.t = t
        self.calls = 0

    def forward(self, patches, embeddings):
        self.calls += 1
        return (patches - self.t).expand(-1, embeddings.shape[0], -1, -1, -1)


def threshold_predictor(image: nib.Nifti1Image, raw_threshold: float, patch=(16, 16, 16)) -> Predictor:
    _, pre = preprocess(image, patch)
    t = (raw_threshold - pre.state.mean) / pre.state.std
    return Predictor(ThresholdBackend(t), patch, ModelInfo("threshold", embedding_dim=4),
                     PredictorConfig(device="cpu", progress=False))


@pytest.fixture(scope="module")
def tiny_network():
    torch.manual_seed(0)
    return VoxTellNetwork(get_preset("tiny")).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_network):
    root = tmp_path_factory.mktemp("model") / "tiny"
    save_model_dir(tiny_network, get_preset("tiny"), root,
                   ModelMeta(model_id="tiny-test", preset="tiny", text_encoder=FAKE_ENCODER, embedding_dim=16))
    return root


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    bank = EmbeddingBank(dim=16, encoder_id=FAKE_ENCODER)
    bank.add(PROMPTS, np.random.default_rng(0).normal(size=(len(PROMPTS), 16)).astype(np.float32))
    path = tmp_path_factory.mktemp("bank") / "bank.npz"
    bank.save(path)
    return path


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory, totalseg_dir):
    """A crop of the real CT (keeps the tests fast), saved as NIfTI."""
    img = nib.load(totalseg_dir / "example_ct_sm.nii.gz")
    data = np.asanyarray(img.dataobj)[20:110, 20:80, 2:28]  # 2 windows of 64^3
    path = tmp_path_factory.mktemp("ct") / "ct_crop.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)
    return path


# ---------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("storage", sorted(STORAGES) + ["oblique"])
def test_phantom_round_trip_keeps_left_on_the_left(tmp_path, storage):
    data, affine = ras_phantom()
    stored, aff = oblique(data, affine) if storage == "oblique" else STORAGES[storage](data, affine)
    image = nib.Nifti1Image(stored, aff)
    predictor = threshold_predictor(image, 50)
    predictor.predict_to_folder(image, ["object"], tmp_path / storage, embeddings=np.zeros((1, 4), np.float32))
    out = nib.load(tmp_path / storage / f"{prompt_id('object')}.nii.gz")
    mask = np.asanyarray(out.dataobj)
    assert out.shape == stored.shape and mask.dtype == np.uint8
    np.testing.assert_allclose(out.affine, aff, atol=1e-5)
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(aff)
    np.testing.assert_array_equal(mask, stored == 100)
    # the object is on the patient's left: world x (RAS+) below the body's centre
    world = lambda m: (aff @ np.r_[np.argwhere(m).mean(axis=0), 1])[:3]  # noqa: E731
    assert world(mask > 0)[0] < world(stored > 0)[0] - 5


def test_real_las_label_map_spleen_stays_left(tmp_path, totalseg_dir):
    """example_seg_dicom is stored LAS; spleen (label 1) is on the patient's left (-x)."""
    src = nib.load(totalseg_dir / "example_seg_dicom.nii.gz")
    assert nib.aff2axcodes(src.affine) == ("L", "A", "S")
    labels = np.asanyarray(src.dataobj)
    image = nib.Nifti1Image(np.where(labels == 1, 100, np.where(labels > 0, 10, 0)).astype(np.int16), src.affine)
    # the same voxels stored RAS must give the same network input and mask
    ras_data, ras_aff = np.flip(image.get_fdata(), 0).astype(np.int16), src.affine @ np.diag([-1, 1, 1, 1.0])
    ras_aff[:3, 3] = src.affine[:3, :3] @ [labels.shape[0] - 1, 0, 0] + src.affine[:3, 3]
    ras = nib.Nifti1Image(ras_data, ras_aff)
    _, a = preprocess(image, (64, 64, 64))
    _, b = preprocess(ras, (64, 64, 64))
    np.testing.assert_array_equal(a.data, b.data)
    for name, img in (("las", image), ("ras", ras)):
        predictor = threshold_predictor(img, 50, patch=(64, 64, 64))
        manifest = predictor.predict_to_folder(img, ["spleen"], tmp_path / name, embeddings=np.zeros((1, 4), np.float32))
        out = nib.load(tmp_path / name / manifest["prompts"][0]["file"])
        mask = np.asanyarray(out.dataobj)
        np.testing.assert_array_equal(out.affine, img.affine)
        np.testing.assert_array_equal(mask, np.asanyarray(img.dataobj) == 100)
        centroid = out.affine @ np.r_[np.argwhere(mask).mean(axis=0), 1]
        assert centroid[0] < -50  # spleen: patient's left
        assert manifest["prompts"][0]["voxels"] == int((labels == 1).sum())


# ---------------------------------------------------------------------------- tiny network
def test_output_contract_and_bank_without_encoder(tmp_path, model_dir, bank_path, small_ct):
    predictor = Predictor.from_model_dir(model_dir, PredictorConfig(device="cpu", progress=False), bank=bank_path)
    prompts = [{"prompt": PROMPTS[0], "source": "config"}, {"prompt": PROMPTS[2], "source": "report", "finding_id": "f3"}]
    manifest = predictor.predict_to_folder(small_ct, prompts, tmp_path / "s1", study_id="s1")
    files = sorted(p.name for p in (tmp_path / "s1").iterdir())
    assert files == sorted([f"{prompt_id(PROMPTS[0])}.nii.gz", f"{prompt_id(PROMPTS[2])}.nii.gz", "manifest.json"])
    on_disk = json.loads((tmp_path / "s1" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["study_id"] == "s1" and on_disk["image"] == str(small_ct)
    assert on_disk["model"]["model_id"] == "tiny-test" and len(on_disk["model"]["sha256"]) == 64
    assert on_disk["model"]["preset"] == "tiny" and on_disk["model"]["text_encoder"] == FAKE_ENCODER
    assert (on_disk["backend"], on_disk["device"], on_disk["precision"]) == ("torch", "cpu", "fp32")
    assert set(on_disk["timings"]) == {"preprocess_s", "inference_s", "write_s", "total_s"}
    entry = on_disk["prompts"][1]
    assert entry["prompt"] == PROMPTS[2] and entry["finding_id"] == "f3" and entry["source"] == "report"
    src = nib.load(small_ct)
    for e in on_disk["prompts"]:
        img = nib.load(tmp_path / "s1" / e["file"])
        data = np.asanyarray(img.dataobj)
        assert img.shape == src.shape and data.dtype == np.uint8
        np.testing.assert_array_equal(img.affine, src.affine)
        assert set(np.unique(data)) <= {0, 1}
        assert e["voxels"] == int(data.sum()) and e["empty"] == (e["voxels"] == 0)


def test_batched_prompts_and_patches_agree_with_one_at_a_time(model_dir, bank_path, small_ct):
    def run(**kw):
        cfg = PredictorConfig(device="cpu", progress=False, **kw)
        return Predictor.from_model_dir(model_dir, cfg, bank=bank_path)

    batched = run(sw_batch_size=2, save_probabilities=True).predict(small_ct, PROMPTS)
    single = run(sw_batch_size=1, prompt_chunk=1, save_probabilities=True)
    for i in (0, 2):
        alone = single.predict(small_ct, [PROMPTS[i]]).masks[0]
        np.testing.assert_allclose(batched.masks[i], alone, atol=1e-4)
    masks = run(sw_batch_size=2).predict(small_ct, PROMPTS).masks
    for prob, mask in zip(batched.masks, masks):
        assert mask.dtype == np.uint8
        assert np.mean((prob > 0.5) == (mask > 0)) > 0.9999


def test_image_smaller_than_patch(tmp_path, tiny_network):
    data = np.zeros((20, 30, 10), np.float32)
    data[2:18, 5:25, 1:9] = np.random.default_rng(0).normal(size=(16, 20, 8))
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([-1.5, -1.5, 4, 1])), path)
    predictor = Predictor.from_network(tiny_network, PredictorConfig(device="cpu", progress=False))
    result = predictor.predict(path, ["x"], embeddings=np.ones((1, 16), np.float32))
    assert result.masks[0].shape == (20, 30, 10)
    assert not result.masks[0][:2].any() and not result.masks[0][18:].any()  # outside the crop


def test_released_folder_defaults_to_released_encoder(small_ct, tiny_network):
    predictor = Predictor.from_network(tiny_network, PredictorConfig(device="cpu", progress=False),
                                       model=ModelInfo("released", text_encoder=None, embedding_dim=16))
    assert predictor.encoder_id == RELEASED_TEXT_ENCODER


def test_cli_several_images_one_bad_goes_on(tmp_path, model_dir, bank_path, small_ct):
    """`voxtell predict` over several images: a bad one is logged and exits 1, the others are
    segmented (there is no skip rule here; cohorts go through the workflow's segment stage)."""
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(small_ct, images / "a.nii.gz")
    (images / "b.nii.gz").write_bytes(b"garbage")
    rc = cli_main(["predict", "--model", str(model_dir), "-i", str(images), "-o", str(tmp_path / "out"),
                   "-p", *PROMPTS[:2], "--bank", str(bank_path), "--device", "cpu", "--no-progress"])
    assert rc == 1
    assert (tmp_path / "out" / "a" / "manifest.json").is_file() and not (tmp_path / "out" / "b").exists()


class InterruptAfter:
    """Wraps a real backend and raises KeyboardInterrupt (Ctrl-C, SLURM cancel) at call ``n``."""

    def __init__(self, backend, n: int) -> None:
        self.backend, self.n, self.calls = backend, n, 0
        self.name, self.device = backend.name, backend.device

    def forward(self, patches, embeddings):
        self.calls += 1
        if self.calls >= self.n:
            raise KeyboardInterrupt
        return self.backend.forward(patches, embeddings)


def test_cancelled_run_leaves_no_partial_output(tmp_path, model_dir, bank_path, small_ct):
    predictor = Predictor.from_model_dir(model_dir, PredictorConfig(device="cpu", progress=False, sw_batch_size=1),
                                         bank=bank_path)
    real = predictor.backend
    predictor.backend = InterruptAfter(real, 2)
    with pytest.raises(KeyboardInterrupt):
        predictor.predict_to_folder(small_ct, PROMPTS, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    # an earlier complete result stays untouched when a rerun is cancelled
    predictor.backend = real
    predictor.predict_to_folder(small_ct, PROMPTS[:1], tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    predictor.backend = InterruptAfter(real, 2)
    with pytest.raises(KeyboardInterrupt):
        predictor.predict_to_folder(small_ct, PROMPTS, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_prompt_errors(tiny_network, small_ct):
    predictor = Predictor.from_network(tiny_network, PredictorConfig(device="cpu", progress=False))
    with pytest.raises(PromptError):
        predictor.predict(small_ct, [])
    with pytest.raises(PromptError):
        predictor.predict(small_ct, ["  "], embeddings=np.ones((1, 16), np.float32))
    with pytest.raises(PromptError):
        predictor.predict(small_ct, ["a", "b"], embeddings=np.ones((1, 16), np.float32))
    with pytest.raises(PromptError):
        predictor.predict(small_ct, ["a"], embeddings=np.ones((1, 8), np.float32))
    with pytest.raises(UnreadableImageError):
        predictor.predict(small_ct.parent / "nope.nii.gz", ["a"], embeddings=np.ones((1, 16), np.float32))


# ---------------------------------------------------------------------------- CLI
def test_cli_predict_and_prompt_metadata(tmp_path, model_dir, bank_path, small_ct):
    rc = cli_main(["predict", "--model", str(model_dir), "-i", str(small_ct), "-o", str(tmp_path / "one"),
                   "-p", PROMPTS[0], PROMPTS[1], "--bank", str(bank_path), "--device", "cpu", "--no-progress",
                   "--sw-batch-size", "3"])
    assert rc == 0
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert [p["prompt"] for p in manifest["prompts"]] == PROMPTS[:2]
    predictor = Predictor.from_model_dir(model_dir, PredictorConfig(device="cpu", progress=False,
                                                                    save_probabilities=True), bank=bank_path)
    predictor.predict_to_folder(small_ct, [{"prompt": PROMPTS[2], "finding_id": "F-1"}], tmp_path / "j1", study_id="j1")
    manifest = json.loads((tmp_path / "j1" / "manifest.json").read_text())
    assert manifest["prompts"][0]["finding_id"] == "F-1" and manifest["study_id"] == "j1"
    prob = nib.load(tmp_path / "j1" / manifest["prompts"][0]["file"])
    assert prob.get_data_dtype() == np.float32
    # a prompt missing from the bank needs the (unavailable) encoder: typed error, exit 1
    rc = cli_main(["predict", "--model", str(model_dir), "-i", str(small_ct), "-o", str(tmp_path / "x"),
                   "-p", "a prompt not in the bank", "--bank", str(bank_path), "--device", "cpu", "--no-progress"])
    assert rc == 1 and not (tmp_path / "x").exists()
