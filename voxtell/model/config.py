"""Network hyper-parameters as one frozen dataclass, plus the named presets.

A model is a preset (or a released ``plans.json``) + a text encoder + weights. Everything
the network's shapes depend on lives here, so that a config dict stored beside a
checkpoint is enough to rebuild the exact module tree. Nothing is tied to 192³: the token
grid, the positional encoding and every projection follow from these numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from voxtell.errors import ConfigError

__all__ = [
    "NetworkConfig",
    "PRESETS",
    "SMALL_PRESET",
    "get_preset",
    "config_from_plans",
    "PLANS_PROMPT_DECODER_FALLBACK",
]

#: Norm and nonlinearity ops the network knows how to build (short torch.nn names).
SUPPORTED_NORMS = ("InstanceNorm3d", "BatchNorm3d")
SUPPORTED_NONLINS = ("LeakyReLU", "ReLU")


def _short_op_name(value: str | None) -> str | None:
    """``torch.nn.modules.instancenorm.InstanceNorm3d`` (plans.json style) -> ``InstanceNorm3d``."""
    if value is None:
        return None
    return str(value).rsplit(".", 1)[-1]


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"network config field {name!r} must be a list of integers, got {value!r}") from exc


def _nested_int_tuple(value: Any, name: str, n_dims: int = 3) -> tuple[tuple[int, ...], ...]:
    """Accept [[3,3,3], ...] or [3, ...] (isotropic) and return per-axis tuples."""
    out = []
    try:
        for item in value:
            if isinstance(item, (int, float)):
                out.append((int(item),) * n_dims)
            else:
                out.append(tuple(int(v) for v in item))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"network config field {name!r} must be a list of per-axis integer lists, got {value!r}") from exc
    return tuple(out)


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of a VoxTell network (field names follow the released ``config.json``).

    ``num_heads`` is G, the number of guidance channels appended per decoder scale (not
    attention heads); ``transformer_heads`` are the attention heads of the prompt decoder.
    ``decoder_layer`` is the encoder stage whose output becomes the prompt decoder's
    image tokens.
    """

    patch_size: tuple[int, int, int]
    n_stages: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, int, int], ...]
    strides: tuple[tuple[int, int, int], ...]
    n_blocks_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    conv_bias: bool = True
    norm_op: str = "InstanceNorm3d"
    norm_op_kwargs: Mapping[str, Any] = field(default_factory=lambda: {"eps": 1e-5, "affine": True})
    nonlin: str = "LeakyReLU"
    nonlin_kwargs: Mapping[str, Any] = field(default_factory=lambda: {"inplace": True})
    decoder_layer: int = 4
    text_embedding_dim: int = 2560
    num_maskformer_stages: int = 5
    num_heads: int = 32
    query_dim: int = 2048
    project_to_decoder_hidden_dim: int = 2048
    transformer_layers: int = 6
    transformer_heads: int = 8
    transformer_ffn: int = 2048
    text_hidden_dim: int = 2048
    transformer_dropout: float = 0.1  # DETR default of the released layers; inactive in eval mode
    input_channels: int = 1
    deep_supervision: bool = False

    def __post_init__(self) -> None:
        # Normalise container types so that equal configs compare equal, whatever the source.
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("patch_size", _int_tuple(self.patch_size, "patch_size"))
        set_("features_per_stage", _int_tuple(self.features_per_stage, "features_per_stage"))
        set_("n_blocks_per_stage", _int_tuple(self.n_blocks_per_stage, "n_blocks_per_stage"))
        set_("n_conv_per_stage_decoder", _int_tuple(self.n_conv_per_stage_decoder, "n_conv_per_stage_decoder"))
        set_("kernel_sizes", _nested_int_tuple(self.kernel_sizes, "kernel_sizes"))
        set_("strides", _nested_int_tuple(self.strides, "strides"))
        set_("norm_op", _short_op_name(self.norm_op))
        set_("nonlin", _short_op_name(self.nonlin))
        set_("norm_op_kwargs", dict(self.norm_op_kwargs or {}))
        set_("nonlin_kwargs", dict(self.nonlin_kwargs or {}))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"invalid network config: {msg}")

        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            bad(f"patch_size must be three positive integers, got {list(self.patch_size)}")
        if self.n_stages < 2:
            bad(f"n_stages must be at least 2, got {self.n_stages}")
        for name in ("features_per_stage", "kernel_sizes", "strides", "n_blocks_per_stage"):
            if len(getattr(self, name)) != self.n_stages:
                bad(f"{name} needs one entry per stage ({self.n_stages}), got {len(getattr(self, name))}")
        if len(self.n_conv_per_stage_decoder) != self.n_stages - 1:
            bad(f"n_conv_per_stage_decoder needs n_stages - 1 = {self.n_stages - 1} entries, "
                f"got {len(self.n_conv_per_stage_decoder)}")
        for name in ("kernel_sizes", "strides"):
            for item in getattr(self, name):
                if len(item) != 3 or min(item) < 1:
                    bad(f"every entry of {name} must be three positive integers, got {list(item)}")
        for k in self.kernel_sizes:
            if any(v % 2 == 0 for v in k):
                bad(f"kernel sizes must be odd (same padding), got {list(k)}")
        if min(self.features_per_stage) < 1 or min(self.n_blocks_per_stage) < 1 or min(self.n_conv_per_stage_decoder) < 1:
            bad("features_per_stage, n_blocks_per_stage and n_conv_per_stage_decoder must be positive")
        for axis in range(3):
            total = math.prod(s[axis] for s in self.strides)
            if self.patch_size[axis] % total:
                bad(f"patch_size {list(self.patch_size)} must be divisible by the total stride {total} on axis {axis}")
        if not 0 <= self.decoder_layer < self.n_stages:
            bad(f"decoder_layer must index an encoder stage (0..{self.n_stages - 1}), got {self.decoder_layer}")
        if self.num_maskformer_stages != self.n_stages - 1:
            bad(f"num_maskformer_stages must equal n_stages - 1 = {self.n_stages - 1} (one guidance MLP per "
                f"decoder scale, as released), got {self.num_maskformer_stages}")
        if self.norm_op not in SUPPORTED_NORMS:
            bad(f"norm_op {self.norm_op!r} is not supported; use one of {SUPPORTED_NORMS}")
        if self.nonlin not in SUPPORTED_NONLINS:
            bad(f"nonlin {self.nonlin!r} is not supported; use one of {SUPPORTED_NONLINS}")
        for name in ("text_embedding_dim", "num_heads", "query_dim", "project_to_decoder_hidden_dim",
                     "transformer_layers", "transformer_heads", "transformer_ffn", "text_hidden_dim",
                     "input_channels"):
            if int(getattr(self, name)) < 1:
                bad(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.query_dim % self.transformer_heads:
            bad(f"query_dim ({self.query_dim}) must be divisible by transformer_heads ({self.transformer_heads})")
        if not 0.0 <= float(self.transformer_dropout) < 1.0:
            bad(f"transformer_dropout must be in [0, 1), got {self.transformer_dropout}")

    # ------------------------------------------------------------------ derived sizes
    def stage_shapes(self) -> list[tuple[int, int, int]]:
        """Spatial shape of every encoder stage's output for one patch (stage 0 first)."""
        shapes, cur = [], list(self.patch_size)
        for stride in self.strides:
            cur = [c // s for c, s in zip(cur, stride)]
            shapes.append(tuple(cur))
        return shapes

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """Spatial shape (array axes 0, 1, 2) of the encoder stage that feeds the prompt decoder."""
        return self.stage_shapes()[self.decoder_layer]

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_grid)

    @property
    def token_channels(self) -> int:
        return self.features_per_stage[self.decoder_layer]

    def guidance_channels(self) -> list[int]:
        """Output width of each guidance MLP: ``.0`` full resolution (C), ``.i`` C_i·G."""
        feats = self.features_per_stage
        return [feats[0]] + [feats[i] * self.num_heads for i in range(1, self.num_maskformer_stages)]

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, not tuples) in the field order of the released config.json."""
        d = asdict(self)
        out: dict[str, Any] = {}
        for key, value in d.items():
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> "NetworkConfig":
        """Build from a dict (e.g. a ``config.json``); unknown keys are an error, not ignored."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"network config must be a JSON object, got {type(data).__name__}")
        merged = {**dict(data), **overrides}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"unknown network config field(s) {unknown}; known fields: {sorted(known)}")
        required = {"patch_size", "n_stages", "features_per_stage", "kernel_sizes", "strides",
                    "n_blocks_per_stage", "n_conv_per_stage_decoder"}
        missing = sorted(required - set(merged))
        if missing:
            raise ConfigError(f"network config is missing field(s) {missing}")
        try:
            return cls(**merged)
        except TypeError as exc:
            raise ConfigError(f"invalid network config: {exc}") from exc

    def replace(self, **changes: Any) -> "NetworkConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def __hash__(self) -> int:  # dict fields make the generated hash fail; hash the JSON form
        return hash(json.dumps(self.to_dict(), sort_keys=True))


# ---------------------------------------------------------------------------- presets
_3 = (3, 3, 3)
_S = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))

#: The released network (nnU-Net ResEnc-L encoder, Qwen3-Embedding-4B text embeddings).
VOXTELL_V1 = NetworkConfig(
    patch_size=(192, 192, 192),
    n_stages=6,
    features_per_stage=(32, 64, 128, 256, 320, 320),
    kernel_sizes=(_3,) * 6,
    strides=_S,
    n_blocks_per_stage=(1, 3, 4, 6, 6, 6),
    n_conv_per_stage_decoder=(1, 1, 1, 1, 1),
    decoder_layer=4,
    text_embedding_dim=2560,
    num_maskformer_stages=5,
    num_heads=32,
    query_dim=2048,
    project_to_decoder_hidden_dim=2048,
    transformer_layers=6,
    transformer_heads=8,
    transformer_ffn=2048,
    text_hidden_dim=2048,
)

#: The parity fixture's network (tests/data/reference/tiny/config.json).
TINY = NetworkConfig(
    patch_size=(64, 64, 64),
    n_stages=6,
    features_per_stage=(4, 8, 16, 32, 32, 32),
    kernel_sizes=(_3,) * 6,
    strides=_S,
    n_blocks_per_stage=(1, 1, 2, 2, 1, 1),
    n_conv_per_stage_decoder=(1, 1, 1, 1, 1),
    decoder_layer=4,
    text_embedding_dim=16,
    num_maskformer_stages=5,
    num_heads=4,
    query_dim=32,
    project_to_decoder_hidden_dim=24,
    transformer_layers=6,
    transformer_heads=8,
    transformer_ffn=2048,
    text_hidden_dim=2048,
)

#: CPU training / demo preset: same architecture, 64³ patch, MiniLM (384-d) text embeddings.
#: Training may retune these numbers: this dict is the one place they live.
SMALL_PRESET: dict[str, Any] = dict(
    patch_size=(64, 64, 64),
    n_stages=6,
    features_per_stage=(8, 16, 32, 64, 64, 64),
    kernel_sizes=(_3,) * 6,
    strides=_S,
    n_blocks_per_stage=(1, 1, 2, 2, 2, 2),
    n_conv_per_stage_decoder=(1, 1, 1, 1, 1),
    decoder_layer=4,
    text_embedding_dim=384,
    num_maskformer_stages=5,
    num_heads=8,
    query_dim=128,
    project_to_decoder_hidden_dim=128,
    transformer_layers=2,
    transformer_heads=4,
    transformer_ffn=256,
    text_hidden_dim=256,
)
SMALL = NetworkConfig(**SMALL_PRESET)

PRESETS: dict[str, NetworkConfig] = {"voxtell-v1": VOXTELL_V1, "tiny": TINY, "small": SMALL}


def get_preset(name: str, **overrides: Any) -> NetworkConfig:
    """A named preset, optionally with fields changed (e.g. ``deep_supervision=True``)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown network preset {name!r}; choose one of {sorted(PRESETS)}") from None
    if not overrides:
        return base
    unknown = sorted(set(overrides) - {f.name for f in fields(NetworkConfig)})
    if unknown:
        raise ConfigError(f"unknown network config field(s) {unknown} in overrides for preset {name!r}")
    return replace(base, **overrides)


#: Fields a released ``plans.json`` does not carry; they come from the voxtell-v1 preset
#: (the released predictor passes the same constants to its network).
PLANS_PROMPT_DECODER_FALLBACK = (
    "decoder_layer", "text_embedding_dim", "num_maskformer_stages", "num_heads", "query_dim",
    "project_to_decoder_hidden_dim", "transformer_layers", "transformer_heads", "transformer_ffn",
    "text_hidden_dim", "transformer_dropout",
)


def config_from_plans(plans: Mapping[str, Any], configuration: str = "3d_fullres", **overrides: Any) -> NetworkConfig:
    """Network config of a released nnU-Net-style ``plans.json``.

    The image encoder/decoder come from ``configurations[configuration].architecture.arch_kwargs``
    and ``patch_size``; the prompt-decoder hyper-parameters (``PLANS_PROMPT_DECODER_FALLBACK``)
    are not in plans.json and are taken from the ``voxtell-v1`` preset.
    """
    try:
        conf = plans["configurations"][configuration]
        arch = conf["architecture"]["arch_kwargs"]
        patch = conf["patch_size"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"plans.json has no configurations/{configuration}/architecture/arch_kwargs or patch_size ({exc}); "
            "is this a VoxTell/nnU-Net model folder?") from exc
    network_class = str(conf["architecture"].get("network_class_name", ""))
    if network_class and "ResidualEncoder" not in network_class:
        raise ConfigError(f"plans.json describes a {network_class!r}; VoxTell needs a residual-encoder U-Net")
    for key in ("dropout_op",):
        if arch.get(key) not in (None, "None"):
            raise ConfigError(f"plans.json arch_kwargs.{key}={arch.get(key)!r} is not supported (released VoxTell has none)")
    values: dict[str, Any] = {name: getattr(VOXTELL_V1, name) for name in PLANS_PROMPT_DECODER_FALLBACK}
    values.update(
        patch_size=patch,
        n_stages=arch["n_stages"],
        features_per_stage=arch["features_per_stage"],
        kernel_sizes=arch["kernel_sizes"],
        strides=arch["strides"],
        n_blocks_per_stage=arch["n_blocks_per_stage"],
        n_conv_per_stage_decoder=arch["n_conv_per_stage_decoder"],
        conv_bias=bool(arch.get("conv_bias", True)),
        norm_op=arch.get("norm_op") or "InstanceNorm3d",
        norm_op_kwargs=arch.get("norm_op_kwargs") or {},
        nonlin=arch.get("nonlin") or "LeakyReLU",
        nonlin_kwargs=arch.get("nonlin_kwargs") or {},
    )
    values.update(overrides)
    return NetworkConfig.from_dict(values)
