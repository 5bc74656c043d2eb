"""The training loop: data checks, embeddings from a bank, patches + prompts, Dice+BCE
on every deep-supervision scale, SGD/AdamW with polynomial decay, periodic validation,
checkpoints with exact resume, and a model folder with its provenance at the end.

The text encoder never runs inside the loop: every vocabulary prompt (training
paraphrases, held-out paraphrases, negatives) is embedded once into
``<out>/training/embeddings.npz`` before the first step; the loop indexes that matrix.

Resume: ``<out>/training/checkpoint_latest.pt`` holds weights, optimizer, step, elapsed
time, history and the random states of the sampler and of torch, so an interrupted run
continues where its last checkpoint left off (in deterministic mode, bit for bit on the
same machine and thread count).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from voxtell.data.vocabulary import Vocabulary
from voxtell.errors import ConfigError, VoxTellError
from voxtell.inference.backends import resolve_device
from voxtell.io.atomic import atomic_path, write_json_atomic
from voxtell.training.config import TrainConfig
from voxtell.training.dataset import load_training_data, open_dataset, split_cases
from voxtell.training.evaluate import evaluate, format_table, mean_dice
from voxtell.training.losses import deep_supervision_loss
from voxtell.training.sampling import PatchSampler, PromptTable

log = logging.getLogger(__name__)

STATE_DIR = "training"
CHECKPOINT = "checkpoint_latest.pt"
BANK = "embeddings.npz"
MAX_BAD_STEPS = 25  # consecutive non-finite steps before training gives up


class TrainingDivergedError(VoxTellError):
    """Training kept producing non-finite losses or gradients."""


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    finished: bool  # False when stopped early by ``stop_after`` (resume to continue)
    step: int
    validation: dict[str, dict] = field(default_factory=dict)
    val_case_ids: tuple[str, ...] = ()
    meta: Any = None  # ModelMeta once the model folder is written


def seed_everything(seed: int, deterministic: bool) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def vocabulary_sha256(vocab: Vocabulary) -> str:
    return hashlib.sha256(json.dumps(vocab.to_dict(), sort_keys=True).encode()).hexdigest()


def build_embedding_table(vocab: Vocabulary, encoder_id: str, dim: int, bank_path: Path,
                          extra_banks: Sequence[Path] = ()) -> tuple[PromptTable, torch.Tensor]:
    """Embed every vocabulary prompt once (reusing any bank that has them) and save the bank."""
    from voxtell.text.bank import EmbeddingBank, resolve_embeddings

    bank = EmbeddingBank.load(bank_path) if bank_path.is_file() else None
    for extra in extra_banks:
        if bank is None and Path(extra).is_file():
            bank = EmbeddingBank.load(extra)
    prompts = vocab.all_prompts()
    emb = resolve_embeddings(prompts, bank=bank, encoder_id=encoder_id, expected_dim=dim)
    if bank is None:
        bank = EmbeddingBank(dim=dim, encoder_id=encoder_id)
        bank.add(prompts, emb)
    bank_path.parent.mkdir(parents=True, exist_ok=True)
    bank.save(bank_path)
    # The bank stores float16; train on exactly the values inference will read back.
    return PromptTable(prompts), torch.from_numpy(np.asarray(emb, dtype=np.float16).astype(np.float32))


@dataclass(frozen=True)
class TextStandardizer:
    """Per-dimension centring and scaling of prompt embeddings while training.

    Sentence embeddings share a large common component (MiniLM prompts of this vocabulary
    have cosine 0.87 between "left kidney" and "right kidney"); fed raw, the text MLP maps
    every prompt to nearly the same query (cosine 0.9996 after 600 steps) and laterality is
    never learned. Training on standardised embeddings removes that component. The
    transform is affine, so it is folded into ``project_text_embed[0]`` when the model is
    written: a saved model takes raw embeddings, as the released one does.
    """

    shift: torch.Tensor  # (D,)
    scale: torch.Tensor  # (D,)

    @classmethod
    def fit(cls, embeddings: torch.Tensor) -> "TextStandardizer":
        shift = embeddings.mean(0)
        sd = embeddings.std(0, unbiased=False)
        floor = 0.5 * float(sd.median())
        scale = sd.clamp_min(floor) if floor > 0 else torch.ones_like(sd)
        return cls(shift, scale)

    def __call__(self, text: torch.Tensor) -> torch.Tensor:
        return (text - self.shift.to(text.device)) / self.scale.to(text.device)

    @torch.no_grad()
    def fold_into(self, network: torch.nn.Module) -> None:
        """Weights that expect standardised input -> weights that take raw embeddings."""
        first = network.project_text_embed[0]
        weight = first.weight / self.scale.to(first.weight.device)[None, :]
        first.bias -= weight @ self.shift.to(weight.device)
        first.weight.copy_(weight)

    @torch.no_grad()
    def unfold_from(self, network: torch.nn.Module) -> None:
        """The inverse of ``fold_into``: a raw-embedding model continues on standardised input."""
        first = network.project_text_embed[0]
        first.bias += first.weight @ self.shift.to(first.weight.device)
        first.weight.mul_(self.scale.to(first.weight.device)[None, :])


def _he_init(module: torch.nn.Module) -> None:
    """He-normal weights for the leaky-ReLU convolutions, zero biases (nnU-Net's initialisation)."""
    if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
        torch.nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            torch.nn.init.zeros_(module.bias)


def _autocast_for(device: str, amp: bool) -> tuple[str, torch.dtype | None]:
    """Autocast device type and dtype for training (None: full fp32).

    bf16 on CPU only where the CPU computes it natively (AVX512-BF16 or AMX): there it
    nearly halves a `small` step (0.64 s vs 1.17 s, batch 2 x 3 prompts, 2 threads);
    elsewhere bf16 is emulated and slower than fp32. Weights and optimizer stay fp32.
    """
    if not amp:
        return "cpu", None
    if device.startswith("cuda"):
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "cpu", torch.bfloat16 if native else None


def _blend(emb_matrix: torch.Tensor, batch, device: str, unit_norm: bool) -> torch.Tensor:
    """(B, K, D) prompt embeddings: bank rows, some blended with another paraphrase's row."""
    first = emb_matrix[torch.from_numpy(batch.prompt_index).to(device)]
    second = emb_matrix[torch.from_numpy(batch.mix_index).to(device)]
    w = torch.from_numpy(batch.mix_weight).to(device).unsqueeze(-1)
    text = w * first + (1.0 - w) * second
    if unit_norm:  # blends of unit vectors are shorter: put them back on the sphere
        text = text / text.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return text


def _lr_at(cfg: TrainConfig, progress: float, step: int) -> float:
    lr = cfg.lr * max(0.0, 1.0 - min(progress, 1.0)) ** cfg.poly_exponent
    if cfg.warmup_steps and step < cfg.warmup_steps:
        lr *= (step + 1) / cfg.warmup_steps
    return lr


def _make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)


def _schedule_key(cfg: TrainConfig) -> dict[str, Any]:
    """Fields that must not change between an interrupted run and its resume."""
    d = cfg.to_dict()
    for k in ("time_budget_min", "device", "num_threads", "val_every", "checkpoint_every", "model_id"):
        d.pop(k)
    return d


def _save_checkpoint(path: Path, network, optimizer, step: int, elapsed: float, rng: np.random.Generator,
                     cfg: TrainConfig, history: list, val_ids: Sequence[str],
                     standardizer: "TextStandardizer | None" = None) -> None:
    state = {
        "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "elapsed_s": elapsed,
        "rng_numpy": json.dumps(rng.bit_generator.state),
        "rng_torch": torch.get_rng_state(),
        "config": json.dumps(_schedule_key(cfg), sort_keys=True),
        "history": json.dumps(history),
        "val_case_ids": list(val_ids),
    }
    if standardizer is not None:
        state["text_shift"], state["text_scale"] = standardizer.shift.cpu(), standardizer.scale.cpu()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class _Run:
    """One training run: what ``_setup`` builds, and the step, clock and history the loop advances."""

    cfg: TrainConfig  # text_encoder follows the parent model when retraining
    vocab: Vocabulary
    out: Path
    device: str
    network: torch.nn.Module
    net_cfg: Any
    parent_meta: Any  # ModelMeta of ``init_from``, else None
    parent_sha256: str | None
    table: PromptTable
    emb_matrix: torch.Tensor  # every vocabulary prompt, on ``device``
    standardizer: TextStandardizer | None
    train_data: Any  # TrainingData
    val_set: Any  # TrainingData or None
    params: list
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    step: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.out / STATE_DIR

    @property
    def ckpt_path(self) -> Path:
        return self.state_dir / CHECKPOINT

    @property
    def patch(self) -> tuple[int, ...]:
        return self.net_cfg.patch_size

    @property
    def val_ids(self) -> tuple[str, ...]:
        return tuple(c.case_id for c in self.val_set.cases) if self.val_set else ()

    def embed_raw(self, prompts: Sequence[str]) -> np.ndarray:
        return self.emb_matrix[[self.table[p] for p in prompts]].cpu().numpy()

    def embed_train(self, prompts: Sequence[str]) -> np.ndarray:
        """What the network sees until it is written (standardised when configured)."""
        rows = self.embed_raw(prompts)
        return self.standardizer(torch.from_numpy(rows)).numpy() if self.standardizer else rows

    def progress(self) -> float:
        """Fraction of the schedule done: steps, or wall time when that is further along."""
        p = self.step / self.cfg.max_steps
        if self.cfg.time_budget_min and not self.cfg.deterministic:
            p = max(p, self.elapsed / (60.0 * self.cfg.time_budget_min))
        return p

    def save_checkpoint(self) -> None:
        _save_checkpoint(self.ckpt_path, self.network, self.optimizer, self.step, self.elapsed, self.rng,
                         self.cfg, self.history, self.val_ids, self.standardizer)


@dataclass(frozen=True)
class _StepTools:
    """What every step uses besides the run's state: the sampler and the precision settings."""

    sampler: PatchSampler
    amp_device: str
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    unit_norm: bool  # the bank holds unit vectors: blended prompts go back on the sphere


# ----------------------------------------------------------------------------- setup
def _build_network(cfg: TrainConfig, init_from: str | Path | None, parent_sha256: str | None,
                   device: str) -> tuple[torch.nn.Module, Any, TrainConfig, Any, str | None]:
    """A fresh preset network (He-initialised) or a copy of ``init_from``'s, in training mode on
    ``device``; returns (network, net_cfg, cfg, parent_meta, parent_sha256)."""
    from voxtell.model import VoxTellNetwork, get_preset, load_model_dir

    parent_meta = None
    if init_from is not None:
        parent = load_model_dir(init_from)
        parent_meta = parent.meta
        net_cfg = replace(parent.config, deep_supervision=True)
        if parent.meta.text_encoder != cfg.text_encoder:
            cfg = replace(cfg, text_encoder=parent.meta.text_encoder)
        network = VoxTellNetwork(net_cfg)
        network.load_state_dict(parent.network.state_dict(), strict=True)
        parent_sha256 = parent_sha256 or parent.meta.sha256
        del parent
    else:
        net_cfg = get_preset(cfg.preset, deep_supervision=True)
        network = VoxTellNetwork(net_cfg)
        if cfg.he_init:
            network.apply(_he_init)
    # channels-last 3-D lets oneDNN pick its fast convolutions for the few-channel early
    # stages (about 1.5x per step for `small` on CPU); values are unchanged.
    network.to(device=device, memory_format=torch.channels_last_3d).train()
    return network, net_cfg, cfg, parent_meta, parent_sha256


def _setup(data: str | Path, vocab: Vocabulary, out: Path, cfg: TrainConfig, *, val_data: str | Path | None,
           init_from: str | Path | None, parent_sha256: str | None, bank: str | Path | None,
           progress: bool) -> _Run:
    """Check the data, then build network, prompt embeddings, data split and optimizer.

    The order is part of the recipe: it fixes what the seeded random streams are used for."""
    # -- checks first: nothing below runs if the data is unusable ------------------------
    open_dataset(data, vocab)
    if val_data is not None:
        open_dataset(val_data, vocab)

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    network, net_cfg, cfg, parent_meta, parent_sha256 = _build_network(cfg, init_from, parent_sha256, device)

    extra_banks = [Path(bank)] if bank else []
    if init_from is not None:
        extra_banks.append(Path(init_from) / STATE_DIR / BANK)
    table, emb_matrix = build_embedding_table(vocab, cfg.text_encoder, net_cfg.text_embedding_dim,
                                              out / STATE_DIR / BANK, extra_banks)
    emb_matrix = emb_matrix.to(device)
    train_rows = [table[p] for c in vocab.concepts for p in c.all_train_prompts] + [
        table[p] for p in vocab.negative_prompts]
    standardizer = TextStandardizer.fit(emb_matrix[train_rows].cpu()) if cfg.standardize_text else None

    everything = load_training_data(data, vocab, net_cfg.patch_size, progress=progress)
    if val_data is not None:
        train_data, val_set = everything, load_training_data(val_data, vocab, net_cfg.patch_size, progress=progress)
    else:
        train_data, val_set = split_cases(everything, cfg.val_cases, cfg.seed)

    if cfg.freeze_encoder:
        for p in network.encoder.parameters():
            p.requires_grad_(False)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, cfg)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    if standardizer is not None and init_from is not None:
        standardizer.unfold_from(network)
    return _Run(cfg, vocab, out, device, network, net_cfg, parent_meta, parent_sha256, table, emb_matrix,
                standardizer, train_data, val_set, params, optimizer, rng)


def _resume(run: _Run) -> None:
    """Continue from the run's last checkpoint (weights, optimizer, step, clock, history and
    random states), which must have been written with the same schedule."""
    ck = _load_checkpoint(run.ckpt_path)
    if json.loads(ck["config"]) != json.loads(json.dumps(_schedule_key(run.cfg))):  # tuples saved as lists
        raise ConfigError(
            f"{run.ckpt_path} was written with a different training config; use the same settings to resume, "
            "or pass --no-resume (or another output folder) to start over")
    run.network.load_state_dict(ck["network"])
    if run.standardizer is not None:  # the weights in the checkpoint expect exactly this transform
        run.standardizer = TextStandardizer(ck["text_shift"], ck["text_scale"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.step, run.elapsed = int(ck["step"]), float(ck["elapsed_s"])
    run.rng.bit_generator.state = json.loads(ck["rng_numpy"])
    torch.set_rng_state(ck["rng_torch"])
    run.history = json.loads(ck["history"])
    log.info("resumed from %s at step %d (%.0f s trained)", run.ckpt_path, run.step, run.elapsed)


def _step_tools(run: _Run) -> _StepTools:
    cfg = run.cfg
    sampler = PatchSampler(run.train_data, run.patch, cfg, run.rng, run.table)
    # Deterministic CPU runs stay in fp32: bf16 convolutions do not resume bit for bit.
    amp_device, amp_dtype = _autocast_for(run.device, cfg.amp and not (cfg.deterministic and run.device == "cpu"))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    unit_norm = bool(torch.allclose(run.emb_matrix.norm(dim=-1), torch.ones(()), atol=1e-2))
    return _StepTools(sampler, amp_device, amp_dtype, scaler, unit_norm)


# ----------------------------------------------------------------------------- one step
def _train_step(run: _Run, tools: _StepTools) -> tuple[float, float, dict, bool]:
    """Sample a batch and take one optimizer step; returns (loss, lr, loss parts, updated).

    A batch with a non-finite loss or gradient (bf16 convolution bias gradients on CPU, say)
    must not poison the weights: its update is skipped (``updated`` False)."""
    cfg, device, optimizer = run.cfg, run.device, run.optimizer
    lr = _lr_at(cfg, run.progress(), run.step)
    for g in optimizer.param_groups:
        g["lr"] = lr
    batch = tools.sampler.sample()
    images = torch.from_numpy(batch.images).to(device).contiguous(memory_format=torch.channels_last_3d)
    targets = torch.from_numpy(batch.targets).to(device)
    text = _blend(run.emb_matrix, batch, device, tools.unit_norm)
    if run.standardizer is not None:
        text = run.standardizer(text)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(tools.amp_device, dtype=tools.amp_dtype, enabled=tools.amp_dtype is not None):
        outputs = run.network(images, text)
    loss, parts = deep_supervision_loss(outputs, targets, cfg.dice_weight, cfg.bce_weight)
    scaler = tools.scaler
    finite = bool(torch.isfinite(loss))
    if finite:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
        finite = bool(torch.isfinite(grad_norm)) or scaler.is_enabled()  # the fp16 scaler skips on its own
    if finite:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), lr, parts, finite


# ----------------------------------------------------------------------------- validation
def _validate(run: _Run, val_prompts: dict[str, list[str]]) -> None:
    """Periodic validation on the held-out cases (training paraphrases); adds it to the history."""
    res = evaluate(run.network, run.val_set.cases, run.val_set.concepts, val_prompts, run.embed_train, run.patch,
                   run.device, progress=False)
    run.network.train()
    run.history.append({"step": run.step, "validation": {c: r["dice"] for c, r in res.items()},
                        "mean_dice": mean_dice(res)})
    log.info("step %d validation mean Dice %.3f", run.step, mean_dice(res))


# ----------------------------------------------------------------------------- model folder
def _write_model(run: _Run, data: str | Path, val_data: str | Path | None, final_validation: bool,
                 progress: bool, extra_provenance: dict[str, Any] | None) -> TrainResult:
    """Fold the text standardisation into the weights, validate on held-out paraphrases and
    write the model folder with its provenance."""
    from voxtell.model.checkpoint import ModelMeta, save_model_dir

    cfg, vocab, network = run.cfg, run.vocab, run.network
    if run.standardizer is not None:
        run.standardizer.fold_into(network)  # from here on the network takes raw embeddings
    validation: dict[str, dict] = {}
    if final_validation and run.val_set is not None:
        full_prompts = {c: list(vocab.concept(c).eval_prompts) or [c] for c in run.val_set.concepts}
        validation = evaluate(network, run.val_set.cases, run.val_set.concepts, full_prompts, run.embed_raw,
                              run.patch, run.device, progress)
        write_json_atomic(run.state_dir / "validation.json", validation)
        log.info("final validation (held-out paraphrases):\n%s", format_table({"dice": validation}))

    import voxtell

    parent_meta = run.parent_meta
    provenance = {
        "data": str(Path(data).resolve()),
        "val_data": str(Path(val_data).resolve()) if val_data else None,
        "n_train_cases": len(run.train_data.cases),
        "val_case_ids": list(run.val_ids),
        "vocabulary_sha256": vocabulary_sha256(vocab),
        "concepts": sorted(run.train_data.concepts),
        "config": cfg.to_dict(),
        "steps": run.step,
        "skipped_steps": sum(1 for r in run.history if r.get("skipped")),
        "elapsed_s": round(run.elapsed, 1),
        "device": run.device,
        "torch": torch.__version__,
        "pipeline_version": getattr(voxtell, "__version__", None),
        "parent_model_id": parent_meta.model_id if parent_meta else None,
        "validation": {c: round(r["dice"], 4) for c, r in validation.items()},
        "validation_mean_dice": round(mean_dice(validation), 4) if validation else None,
        **(extra_provenance or {}),
    }
    model_id = cfg.model_id or run.out.name
    meta = ModelMeta(model_id=model_id, preset=(parent_meta.preset if parent_meta else cfg.preset),
                     text_encoder=cfg.text_encoder, embedding_dim=run.net_cfg.text_embedding_dim,
                     parent_sha256=run.parent_sha256, training=provenance)
    network.eval()
    written = save_model_dir(network, replace(run.net_cfg, deep_supervision=False), run.out, meta)
    return TrainResult(run.out, True, run.step, validation, run.val_ids, written)


def train(
    data: str | Path,
    vocabulary: Vocabulary | str | Path,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    val_data: str | Path | None = None,
    init_from: str | Path | None = None,
    parent_sha256: str | None = None,
    bank: str | Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    final_validation: bool = True,
    progress: bool = True,
    extra_provenance: dict[str, Any] | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train a VoxTell network on an nnU-Net raw dataset; write a model folder to ``out_dir``.

    ``init_from`` starts from another model folder's weights (retraining). ``stop_after``
    runs at most that many steps in this call, checkpoints and returns unfinished (for
    time-limited jobs; call again to resume). Data problems raise before any compute.
    """
    vocab = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary.load(vocabulary)
    run = _setup(data, vocab, Path(out_dir), config, val_data=val_data, init_from=init_from,
                 parent_sha256=parent_sha256, bank=bank, progress=progress)
    if resume and run.ckpt_path.is_file():
        _resume(run)
    tools = _step_tools(run)
    cfg = run.cfg
    val_prompts = {c: list(vocab.concept(c).eval_prompts or vocab.concept(c).all_train_prompts)[: cfg.val_prompts_per_concept]
                   for c in run.train_data.concepts}

    from tqdm import tqdm

    bar = tqdm(total=cfg.max_steps, initial=run.step, desc="training", unit="step", disable=not progress)
    ran = bad_steps = 0
    t_start = time.perf_counter() - run.elapsed
    while run.progress() < 1.0:
        if stop_after is not None and ran >= stop_after:
            break
        loss, lr, parts, updated = _train_step(run, tools)
        if updated:
            bad_steps = 0
        else:
            bad_steps += 1
            log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", run.step + 1, bad_steps)
            if bad_steps >= MAX_BAD_STEPS:
                raise TrainingDivergedError(
                    f"{bad_steps} steps in a row had a non-finite loss or gradient; lower --lr, or train in fp32 "
                    "(--no-amp) if the CPU or GPU runs bf16")
        run.step += 1
        ran += 1
        run.elapsed = time.perf_counter() - t_start
        rec = {"step": run.step, "loss": loss, "lr": lr, "elapsed_s": round(run.elapsed, 2), **parts}
        if not updated:
            rec["skipped"] = True
        run.history.append(rec)
        bar.update(1)
        bar.set_postfix(loss=f"{rec['loss']:.3f}")
        if on_step:
            on_step(run.step, rec)
        if cfg.val_every and run.step % cfg.val_every == 0 and run.val_set is not None and run.progress() < 1.0:
            _validate(run, val_prompts)
            run.elapsed = time.perf_counter() - t_start
        if run.step % cfg.checkpoint_every == 0:
            run.save_checkpoint()
    bar.close()
    finished = run.progress() >= 1.0
    run.save_checkpoint()
    write_json_atomic(run.state_dir / "history.json", run.history)
    if not finished:
        log.info("stopped at step %d of %d; run again with the same settings to resume", run.step, cfg.max_steps)
        return TrainResult(run.out, False, run.step, {}, run.val_ids)
    return _write_model(run, data, val_data, final_validation, progress, extra_provenance)
