"""Training mechanics on real phantoms, the real `small` network and the real MiniLM encoder.

Fast by construction: three phantoms, batch 1, one or two prompts per patch, a handful of
steps. Convergence to the Dice targets is in tests/test_training_slow.py (marked slow).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxtell.data.cohorts import write_phantom_dataset
from voxtell.data.phantoms import LABELS, PhantomConfig
from voxtell.data.vocabulary import PHANTOM_VOCABULARY, Vocabulary
from voxtell.training.config import TrainConfig
from voxtell.training.dataset import (
    EmptyDatasetError,
    GridMismatchError,
    UnknownLabelError,
    load_training_data,
    open_dataset,
)
from voxtell.training.losses import deep_supervision_loss, dice_bce, scale_weights
from voxtell.training.retrain import compare, promote, retrain
from voxtell.training.sampling import PatchSampler, PromptTable, contrast_groups
from voxtell.training.trainer import (
    BANK,
    CHECKPOINT,
    STATE_DIR,
    TextStandardizer,
    _blend,
    build_embedding_table,
    train,
)

torch.set_num_threads(min(2, os.cpu_count() or 1))

#: A small vocabulary for the retraining test (few concepts keep evaluation cheap).
SMALL_VOCAB = Vocabulary.from_dict({
    "negative_prompts": ["brain"],
    "concepts": [
        {"name": "body", "labels": [v for k, v in LABELS.items() if k != "background"], "prompts": ["patient body"],
         "eval_prompts": ["body contour"]},
        {"name": "left kidney", "labels": ["kidney_left"], "prompts": ["kidney left"], "eval_prompts": ["left-sided kidney"]},
        {"name": "adrenal lesion", "labels": ["adrenal_lesion"], "prompts": ["adrenal mass"],
         "eval_prompts": ["suprarenal mass"], "kind": "lesion"},
    ],
})

FAST = TrainConfig(max_steps=3, batch_size=1, prompts_per_patch=2, val_every=0, val_cases=0, checkpoint_every=2,
                   seed=3, deterministic=True, optimizer="adamw", lr=1e-3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 3, seed=1)
    return root


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> Path:
    """All phantom-vocabulary prompts embedded once with the real MiniLM encoder."""
    path = tmp_path_factory.mktemp("bank") / "bank.npz"
    build_embedding_table(PHANTOM_VOCABULARY, FAST.text_encoder, 384, path)
    build_embedding_table(SMALL_VOCAB, FAST.text_encoder, 384, path)
    return path


def _copy_dataset(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- data errors
def test_label_missing_from_vocabulary_fails_before_compute(dataset, tmp_path):
    vocab = Vocabulary(tuple(c for c in PHANTOM_VOCABULARY.concepts if c.name not in ("spleen", "body")))
    with pytest.raises(UnknownLabelError, match="spleen"):
        train(dataset, vocab, tmp_path / "m", FAST)
    assert not (tmp_path / "m").exists()  # nothing was written: no compute happened


def test_label_value_not_declared_is_a_typed_error(dataset, tmp_path):
    ds = _copy_dataset(dataset, tmp_path / "ds")
    lab_path = ds / "labelsTr" / "phantom_0000.nii.gz"
    lab = nib.load(lab_path)
    arr = np.asarray(lab.dataobj).copy()
    arr[0, 0, 0] = 42
    nib.save(nib.Nifti1Image(arr, lab.affine, lab.header), lab_path)
    with pytest.raises(UnknownLabelError, match="42"):
        load_training_data(ds, PHANTOM_VOCABULARY, (64, 64, 64), progress=False)


def test_grid_mismatch_fails_from_headers(dataset, tmp_path):
    ds = _copy_dataset(dataset, tmp_path / "ds")
    lab_path = ds / "labelsTr" / "phantom_0001.nii.gz"
    lab = nib.load(lab_path)
    affine = lab.affine.copy()
    affine[:3, :3] *= 1.5
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), affine), lab_path)
    with pytest.raises(GridMismatchError, match="phantom_0001"):
        train(ds, PHANTOM_VOCABULARY, tmp_path / "m", FAST)
    assert not (tmp_path / "m").exists()


def test_empty_dataset(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1},
                                                       "channel_names": {"0": "CT"}, "file_ending": ".nii.gz"}))
    with pytest.raises(EmptyDatasetError):
        open_dataset(tmp_path, PHANTOM_VOCABULARY)


# ----------------------------------------------------------------------------- preprocessing and sampling
def test_training_data_is_in_inference_network_space(dataset):
    data = load_training_data(dataset, PHANTOM_VOCABULARY, (64, 64, 64), progress=False)
    assert {"left kidney", "right kidney", "liver", "body"} <= set(data.concepts)
    assert "adrenal lesion" not in data.concepts  # not in this dataset's label table
    for case in data.cases:
        assert case.image.shape == case.labels.shape and min(case.image.shape) >= 64
        assert abs(float(case.image.mean())) < 0.5  # z-scored (padding aside)
        assert case.image[case.labels == LABELS["spine"]].mean() > case.image[case.labels == LABELS["liver"]].mean()
        # Network space is the RAS array transposed to (z, y, x): axis 2 grows towards the patient's right.
        xr = np.argwhere(case.labels == LABELS["kidney_right"])[:, 2].mean()
        xl = np.argwhere(case.labels == LABELS["kidney_left"])[:, 2].mean()
        assert xr > xl, case.case_id


def test_sampler_prompts_and_targets(dataset):
    data = load_training_data(dataset, PHANTOM_VOCABULARY, (64, 64, 64), progress=False)
    table = PromptTable(PHANTOM_VOCABULARY.all_prompts())
    cfg = replace(FAST, batch_size=2, prompts_per_patch=5, foreground_oversample=1.0, negative_fraction=0.4)
    a = PatchSampler(data, (64, 64, 64), cfg, np.random.default_rng(0), table).sample()
    b = PatchSampler(data, (64, 64, 64), cfg, np.random.default_rng(0), table).sample()
    assert np.array_equal(a.images, b.images) and a.prompts == b.prompts  # seeded
    assert a.images.shape == (2, 1, 64, 64, 64) and a.targets.shape == (2, 5, 64, 64, 64)
    owner = {}
    for c in PHANTOM_VOCABULARY.concepts:
        for p in c.all_train_prompts:
            owner[p] = c.name
    eval_prompts = {p for c in PHANTOM_VOCABULARY.concepts for p in c.eval_prompts}
    n_pos = n_neg = 0
    for i in range(2):
        for j, prompt in enumerate(a.prompts[i]):
            assert prompt not in eval_prompts  # held-out paraphrases never train
            assert table.prompts[a.prompt_index[i, j]] == prompt
            if a.targets[i, j].any():
                n_pos += 1
                assert prompt in owner
            else:
                n_neg += 1
    assert n_pos >= 1 and n_pos + n_neg == 10


def test_contrast_groups_are_the_partitions_of_the_vocabulary():
    concepts = PHANTOM_VOCABULARY.resolve({k: v for k, v in LABELS.items() if k != "background"})
    groups = contrast_groups(concepts)
    assert groups["left kidney"] == ["right kidney", "kidneys"]
    assert groups["right lung"] == ["left lung", "lungs"]
    assert sorted(groups["kidneys"]) == ["left kidney", "right kidney"]
    # The body's parts overlap ("lungs" and "left lung"), and the liver has one part only.
    assert "body" not in groups and "liver" not in groups and "spine" not in groups


def test_sampler_asks_the_centred_concept_first_with_its_siblings(dataset, bank):
    data = load_training_data(dataset, PHANTOM_VOCABULARY, (64, 64, 64), progress=False)
    table, emb = build_embedding_table(PHANTOM_VOCABULARY, FAST.text_encoder, 384, bank)
    cfg = replace(FAST, batch_size=4, prompts_per_patch=3, foreground_oversample=1.0, negative_fraction=0.0,
                  contrast_rate=1.0, paraphrase_mix=1.0, focus_concepts=("left kidney",), focus_weight=1e6)
    batch = PatchSampler(data, (64, 64, 64), cfg, np.random.default_rng(0), table).sample()
    owner = {p: c.name for c in PHANTOM_VOCABULARY.concepts for p in c.all_train_prompts}
    for i in range(4):
        assert [owner[p] for p in batch.prompts[i]] == ["left kidney", "right kidney", "kidneys"]
        assert batch.targets[i, 0].any()  # centred on the left kidney
        # Targets follow the concept, not the patch centre: the sibling's is its own side.
        kidneys = batch.targets[i, 2].astype(bool)
        assert np.array_equal(kidneys, batch.targets[i, 0].astype(bool) | batch.targets[i, 1].astype(bool))
        assert not (batch.targets[i, 0] * batch.targets[i, 1]).any()
        for j in range(3):  # blends stay within the concept
            assert owner[table.prompts[batch.mix_index[i, j]]] == owner[batch.prompts[i][j]]
            assert 0.0 <= batch.mix_weight[i, j] <= 1.0
    text = _blend(emb, batch, "cpu", unit_norm=True)
    assert text.shape == (4, 3, 384) and torch.allclose(text.norm(dim=-1), torch.ones(4, 3), atol=1e-5)
    w = torch.from_numpy(batch.mix_weight)[..., None]
    raw = w * emb[torch.from_numpy(batch.prompt_index)] + (1 - w) * emb[torch.from_numpy(batch.mix_index)]
    assert torch.allclose(text, raw / raw.norm(dim=-1, keepdim=True), atol=1e-6)


def test_focus_concepts_are_asked_as_negatives_where_they_are_absent(dataset, bank):
    """A new lesion concept must also learn where it is not, or it fires on look-alikes."""
    data = load_training_data(dataset, PHANTOM_VOCABULARY, (64, 64, 64), progress=False)
    table, _ = build_embedding_table(PHANTOM_VOCABULARY, FAST.text_encoder, 384, bank)
    owner = {p: c.name for c in PHANTOM_VOCABULARY.concepts for p in c.all_train_prompts}
    body_only = np.full((8, 8, 8), data.concepts["body"][0])

    def share_asking_liver(focus_weight: float) -> float:
        cfg = replace(FAST, prompts_per_patch=3, negative_fraction=1.0, focus_concepts=("liver",),
                      focus_weight=focus_weight)
        sampler = PatchSampler(data, (64, 64, 64), cfg, np.random.default_rng(0), table)
        asked = []
        for _ in range(200):
            prompts, _, targets = sampler._prompts(body_only)
            names = [owner.get(p, p) for p in prompts]
            assert all(t is None for n, t in zip(names, targets) if n == "liver")  # an empty target
            asked.append("liver" in names)
        return float(np.mean(asked))

    assert share_asking_liver(1e6) == 1.0
    assert share_asking_liver(1.0) < 0.5


def test_text_standardisation_folds_into_the_first_text_layer_exactly(bank):
    """Training sees standardised embeddings; the written model must give the same queries from raw ones."""
    from voxtell.model import VoxTellNetwork, get_preset

    torch.manual_seed(0)
    net = VoxTellNetwork(get_preset("small"))
    table, emb = build_embedding_table(PHANTOM_VOCABULARY, FAST.text_encoder, 384, bank)
    st = TextStandardizer.fit(emb)
    assert torch.allclose(st(emb).mean(0), torch.zeros(384), atol=1e-4) and (st.scale > 0).all()
    original = {k: v.clone() for k, v in net.project_text_embed.state_dict().items()}
    with torch.no_grad():
        raw = net.project_text_embed(emb)
        st.unfold_from(net)  # retraining: the parent's weights continue on standardised input
        assert torch.allclose(net.project_text_embed(st(emb)), raw, atol=1e-4)
        st.fold_into(net)  # writing the model: back to raw input
        assert torch.allclose(net.project_text_embed(emb), raw, atol=1e-4)
    for k, v in net.project_text_embed.state_dict().items():
        assert torch.allclose(v, original[k], atol=1e-5), k
    # Standardising is what separates the sides: raw "left kidney"/"right kidney" share most of their length.
    left, right = emb[table["left kidney"]], emb[table["right kidney"]]
    cos = torch.nn.functional.cosine_similarity
    assert cos(st(left), st(right), dim=0) < cos(left, right, dim=0) - 0.1


def test_losses():
    target = torch.zeros(1, 2, 8, 8, 8)
    target[0, 0, 2:6, 2:6, 2:6] = 1
    good = (target * 2 - 1) * 10
    bad = -good
    assert dice_bce(good, target)[0] < 0.05 < dice_bce(bad, target)[0]
    assert abs(sum(scale_weights(5)) - 1) < 1e-9 and scale_weights(3)[0] > scale_weights(3)[1]
    outs = [good, torch.nn.functional.avg_pool3d(good[0], 2)[None]]
    loss, _ = deep_supervision_loss(outs, target)
    assert loss < 0.2


def test_a_few_steps_decrease_the_loss(dataset, bank):
    """Fit one fixed batch with the real small network: the loss must go down."""
    from voxtell.model import VoxTellNetwork, get_preset

    torch.manual_seed(0)
    net = VoxTellNetwork(get_preset("small", deep_supervision=True)).train()
    data = load_training_data(dataset, PHANTOM_VOCABULARY, (64, 64, 64), progress=False)
    table, emb = build_embedding_table(PHANTOM_VOCABULARY, FAST.text_encoder, 384, bank)
    cfg = replace(FAST, prompts_per_patch=2, negative_fraction=0.0, foreground_oversample=1.0)
    batch = PatchSampler(data, (64, 64, 64), cfg, np.random.default_rng(1), table).sample()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(batch.images), torch.from_numpy(batch.targets)
    text = emb[torch.from_numpy(batch.prompt_index)]
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss, _ = deep_supervision_loss(net(x, text), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


# ----------------------------------------------------------------------------- checkpoints, resume, model folder
def test_interrupted_training_resumes_from_last_checkpoint(dataset, bank, tmp_path):
    from voxtell.model import load_model_dir

    full = train(dataset, PHANTOM_VOCABULARY, tmp_path / "full", FAST, bank=bank, progress=False)
    assert full.finished and full.step == 3

    part = train(dataset, PHANTOM_VOCABULARY, tmp_path / "part", FAST, bank=bank, progress=False, stop_after=1)
    assert not part.finished and part.step == 1
    assert (tmp_path / "part" / STATE_DIR / CHECKPOINT).is_file()
    assert not (tmp_path / "part" / "voxtell_model.json").exists()
    steps_seen = []
    done = train(dataset, PHANTOM_VOCABULARY, tmp_path / "part", FAST, bank=bank, progress=False,
                 on_step=lambda s, rec: steps_seen.append(s))
    assert done.finished and steps_seen == [2, 3]  # continued, did not restart
    history = json.loads((tmp_path / "part" / STATE_DIR / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3]

    a, b = load_model_dir(tmp_path / "full"), load_model_dir(tmp_path / "part")
    for (k, va), vb in zip(a.network.state_dict().items(), b.network.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-5), k  # same result as the uninterrupted run
    meta = b.meta
    assert meta.preset == "small" and meta.text_encoder == FAST.text_encoder and meta.embedding_dim == 384
    assert meta.training["steps"] == 3 and meta.training["config"]["seed"] == 3
    assert meta.training["vocabulary_sha256"] and "left kidney" in meta.training["concepts"]
    assert (tmp_path / "part" / STATE_DIR / BANK).is_file()

    with pytest.raises(Exception, match="different training config"):
        train(dataset, PHANTOM_VOCABULARY, tmp_path / "part", replace(FAST, lr=5e-3), bank=bank, progress=False)


def test_non_finite_steps_are_skipped_and_persistent_ones_stop(dataset, bank, tmp_path, monkeypatch):
    import voxtell.training.trainer as trainer_mod

    real = trainer_mod.deep_supervision_loss
    calls = {"n": 0}

    def nan_on_second_step(*args, **kwargs):
        calls["n"] += 1
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan"), parts) if calls["n"] == 2 else (loss, parts)

    monkeypatch.setattr(trainer_mod, "deep_supervision_loss", nan_on_second_step)
    res = train(dataset, PHANTOM_VOCABULARY, tmp_path / "m", FAST, bank=bank, progress=False)
    assert res.finished and res.step == 3 and res.meta.training["skipped_steps"] == 1
    history = json.loads((tmp_path / "m" / STATE_DIR / "history.json").read_text())
    assert [bool(h.get("skipped")) for h in history] == [False, True, False]
    from voxtell.model import load_model_dir

    assert all(torch.isfinite(v).all() for v in load_model_dir(tmp_path / "m").network.state_dict().values())

    monkeypatch.setattr(trainer_mod, "deep_supervision_loss", lambda *a, **k: (real(*a, **k)[0] * float("nan"), {}))
    monkeypatch.setattr(trainer_mod, "MAX_BAD_STEPS", 2)
    with pytest.raises(trainer_mod.TrainingDivergedError, match="non-finite"):
        train(dataset, PHANTOM_VOCABULARY, tmp_path / "m2", FAST, bank=bank, progress=False)


def test_cpu_bf16_training_runs_where_the_cpu_has_native_bf16(dataset, bank, tmp_path):
    from voxtell.model import load_model_dir
    from voxtell.training.trainer import _autocast_for

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert _autocast_for("cpu", True) == ("cpu", torch.bfloat16 if native else None)
    assert _autocast_for("cpu", False) == ("cpu", None)
    res = train(dataset, PHANTOM_VOCABULARY, tmp_path / "m", replace(FAST, deterministic=False), bank=bank,
                progress=False)
    assert res.finished and res.meta.training["config"]["amp"]
    weights = load_model_dir(tmp_path / "m").network.state_dict().values()
    assert all(torch.isfinite(v).all() for v in weights)  # written in fp32, whatever the autocast


def test_demo_model_is_made_by_the_command_in_its_readme():
    """models/demo-small: its README command, the command it recorded and its stored config agree."""
    import re

    from voxtell.training.cli import config_from_command

    root = Path(__file__).resolve().parents[1] / "models" / "demo-small"
    meta = json.loads((root / "voxtell_model.json").read_text())["training"]
    recorded = TrainConfig.from_dict(meta["config"])
    readme = (root / "README.md").read_text()
    documented = re.search(r"^(voxtell train .*?)(?<!\\)$", readme, re.S | re.M).group(1)
    ignore = dict(num_threads=None, device="auto")  # where it ran, not what it learned
    assert replace(config_from_command(documented), **ignore) == replace(recorded, **ignore)
    assert replace(config_from_command(meta["command"]), **ignore) == replace(recorded, **ignore)
    assert meta["steps"] > 0 and meta["validation"]


def test_retrain_writes_versioned_child_and_promotes(tmp_path, bank):
    base = tmp_path / "base"
    write_phantom_dataset(base, 2, seed=2)
    new = tmp_path / "new"
    write_phantom_dataset(new, 3, seed=2, start=10, config=PhantomConfig(adrenal_lesion_rate=1.0))
    held = tmp_path / "held"
    write_phantom_dataset(held, 1, seed=2, start=20, config=PhantomConfig(adrenal_lesion_rate=1.0))
    cfg = replace(FAST, max_steps=1)
    parent = train(base, SMALL_VOCAB, tmp_path / "models" / "v1", cfg, bank=bank, progress=False)
    assert "adrenal lesion" not in parent.meta.training["concepts"]
    res = retrain(tmp_path / "models" / "v1", new, tmp_path / "models" / "v2", SMALL_VOCAB, cfg, heldout=held,
                  tolerance=1.0, promote_link=tmp_path / "models" / "current", bank=bank, progress=False)
    assert res.promoted and res.new_concepts == ("adrenal lesion",) and "left kidney" in res.old_concepts
    assert set(res.parent_dice) == set(res.child_dice) == {"body", "left kidney", "adrenal lesion"}
    link = tmp_path / "models" / "current"
    assert link.is_symlink() and link.resolve() == (tmp_path / "models" / "v2").resolve()
    meta = json.loads((tmp_path / "models" / "v2" / "voxtell_model.json").read_text())
    assert meta["parent_sha256"] == parent.meta.sha256
    assert meta["training"]["config"]["focus_concepts"] == ["adrenal lesion"]  # new to the parent: sampled more
    assert meta["training"]["retrain_evaluation"]["parent"]["dice"] == res.parent_dice
    from voxtell.model import load_model_dir

    load_model_dir(tmp_path / "models" / "v2")  # metadata update kept the checksum valid


def test_promotion_rule_and_symlink(tmp_path):
    ok, _ = compare({"liver": 0.9, "spleen": 0.8}, {"liver": 0.86, "spleen": 0.9, "adrenal": 0.7}, ["liver", "spleen"], 0.05)
    assert ok
    ok, reason = compare({"liver": 0.9}, {"liver": 0.84}, ["liver"], 0.05)
    assert not ok and "liver" in reason
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    promote(tmp_path / "current", tmp_path / "a")
    promote(tmp_path / "current", tmp_path / "b")
    assert (tmp_path / "current").resolve() == (tmp_path / "b").resolve()
    assert not os.path.isabs(os.readlink(tmp_path / "current"))
