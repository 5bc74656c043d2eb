"""Training hyper-parameters as one frozen dataclass (stored in every model's provenance)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Mapping

from voxtell.errors import ConfigError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class TrainConfig:
    """What a training or retraining run does. The defaults are the recipe of the demo model
    (measured on a 2-core CPU, see voxtell/training/README.md); loss, deep supervision,
    polynomial decay and initialisation follow nnU-Net.

    ``max_steps`` sets the length of the polynomial learning-rate schedule; with
    ``time_budget_min`` the schedule's progress is the larger of the step and the time
    fraction, so a run limited by wall time still decays to zero and ends cleanly.
    """

    preset: str = "small"
    text_encoder: str = MINILM
    max_steps: int = 1000
    time_budget_min: float | None = None
    batch_size: int = 2
    prompts_per_patch: int = 3  # K: positives from labels present, negatives from absent concepts
    negative_fraction: float = 0.25  # share of the K prompts that are negatives (when positives exist)
    foreground_oversample: float = 0.5  # share of patches centred on a voxel of a present concept
    contrast_rate: float = 0.5  # chance a part of a partition brings its siblings and whole along
    paraphrase_mix: float = 0.5  # chance a prompt's embedding is blended with another paraphrase
    focus_concepts: tuple[str, ...] = ()  # drawn more often as patch centres (retraining: new concepts)
    focus_weight: float = 4.0
    # AdamW: 0.56 held-out organ Dice after 8 CPU minutes where SGD (Nesterov 0.99, lr 1e-2,
    # nnU-Net's choice for days-long runs) reached 0.20; AdamW at 3e-3 collapsed (0.23).
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 1e-3
    momentum: float = 0.99  # SGD only
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    warmup_steps: int = 0
    grad_clip: float = 12.0
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    intensity_augmentation: bool = True  # scale/shift/noise only: mirroring would swap left and right
    val_every: int = 100  # steps between validations (0: only at the end)
    val_cases: int = 4  # cases held out from the training data when no validation set is given
    val_prompts_per_concept: int = 1  # held-out paraphrases per concept in periodic validation
    checkpoint_every: int = 25
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = True  # autocast: bf16/fp16 on CUDA, bf16 on CPUs with native bf16 (not with `deterministic`)
    num_threads: int | None = None
    freeze_encoder: bool = False
    standardize_text: bool = True  # train on centred/scaled embeddings, folded into the saved weights
    he_init: bool = True  # fresh networks: He-normal convolutions, zero biases (nnU-Net); ignored when retraining
    model_id: str | None = None

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"invalid training config: {msg}")

        if self.max_steps < 1:
            bad("max_steps must be >= 1")
        if self.batch_size < 1 or self.prompts_per_patch < 1:
            bad("batch_size and prompts_per_patch must be >= 1")
        for name in ("negative_fraction", "foreground_oversample", "contrast_rate", "paraphrase_mix"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(f"{name} must lie in [0, 1]")
        if self.optimizer not in ("sgd", "adamw"):
            bad(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.lr <= 0:
            bad("lr must be positive")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            bad("time_budget_min must be positive")
        if self.focus_weight <= 0:
            bad("focus_weight must be positive")
        object.__setattr__(self, "focus_concepts", tuple(self.focus_concepts))
        if self.checkpoint_every < 1:
            bad("checkpoint_every must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config field(s): {unknown}")
        return replace(cls(**dict(data)), **overrides)


#: Fine-tuning defaults: a 3x lower learning rate, a short schedule, and concepts new to the
#: parent (set by ``retrain``) centred on 8x as often.
RETRAIN_DEFAULTS = TrainConfig(lr=3e-4, max_steps=300, focus_weight=8.0)
