"""Model folders: read released VoxTell folders and write our own in the same layout.

A folder holds ``plans.json`` and ``fold_0/checkpoint_final.pth`` (a dict whose
``network_weights`` is the state dict, aliases included). Ours add ``voxtell_model.json``:
preset, network config, text encoder id, embedding dimension, the weights' sha256 and the
training provenance, so a cohort run can record exactly which model made its masks.

Checkpoints are read with ``torch.load(weights_only=True)``: a pickle that needs code
execution is refused (``UnsafeCheckpointError``), never run. Plain numpy scalars/arrays
(which nnU-Net checkpoints carry in their training log) are the one allow-listed extra.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from voxtell.errors import ConfigError
from voxtell.io.hashing import file_sha256
from voxtell.io.atomic import atomic_path, write_json_atomic
from voxtell.model.config import NetworkConfig, config_from_plans
# The folder's file names and released defaults have one owner, the torch-free reader.
from voxtell.model.folder import CHECKPOINT as CHECKPOINT_RELPATH
from voxtell.model.folder import META as META_FILENAME
from voxtell.model.folder import PLANS as PLANS_FILENAME
from voxtell.model.folder import RELEASED_EMBEDDING_DIM, RELEASED_TEXT_ENCODER, checkpoint_sha256, read_meta
from voxtell.model.errors import (
    CheckpointError,
    ModelNotFoundError,
    StateDictMismatchError,
    UnsafeCheckpointError,
)
from voxtell.model.network import VoxTellNetwork

__all__ = [
    "ModelMeta",
    "LoadedModel",
    "load_model_dir",
    "save_model_dir",
    "read_model_meta",
    "weights_sha256",
    "model_info",
    "load_checkpoint_state_dict",
    "check_state_dict",
    "CHECKPOINT_RELPATH",
    "META_FILENAME",
    "RELEASED_TEXT_ENCODER",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

#: Globals a weights-only load may construct besides tensors: numpy data, no callables.
_SAFE_NUMPY_GLOBALS = {
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.ndarray", "numpy.dtype",
}
_SAFE_NUMPY_DTYPE_PREFIX = "numpy.dtypes."


@dataclass(frozen=True)
class ModelMeta:
    """What ``voxtell_model.json`` records about a model folder."""

    model_id: str
    preset: str | None
    text_encoder: str
    embedding_dim: int
    sha256: str | None = None
    parent_sha256: str | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    created: str | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self, config: NetworkConfig | None = None) -> dict[str, Any]:
        d = asdict(self)
        d["training"] = dict(self.training)
        out = {"format_version": d.pop("format_version"), "model_id": d.pop("model_id"), "preset": d.pop("preset")}
        if config is not None:
            out["network"] = config.to_dict()
        out.update(d)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelMeta":
        try:
            return cls(
                model_id=str(data["model_id"]),
                preset=data.get("preset"),
                text_encoder=str(data["text_encoder"]),
                embedding_dim=int(data["embedding_dim"]),
                sha256=data.get("sha256"),
                parent_sha256=data.get("parent_sha256"),
                training=dict(data.get("training") or {}),
                created=data.get("created"),
                format_version=int(data.get("format_version", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{META_FILENAME} is missing or has an invalid field: {exc}") from exc


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with the config and metadata it was loaded from."""

    network: VoxTellNetwork
    config: NetworkConfig
    meta: ModelMeta
    path: Path | None = None


# ---------------------------------------------------------------------------- hashing
def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 of the checkpoint file (the model's identity everywhere in the pipeline)."""
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise ModelNotFoundError(f"checkpoint {path} does not exist") from None


# ---------------------------------------------------------------------------- reading
def _safe_extra_globals(names: list[str]) -> list[Any] | None:
    """The objects for ``names`` if every one is allow-listed numpy data, else None."""
    objs = []
    for name in names:
        if name not in _SAFE_NUMPY_GLOBALS and not name.startswith(_SAFE_NUMPY_DTYPE_PREFIX):
            return None
        module, _, attr = name.rpartition(".")
        try:
            objs.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            return None
    # dtype classes (numpy.dtypes.Float64DType, ...) only show up while unpickling
    import numpy as np

    objs.extend(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))
    return objs


def _last_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "documentation" not in ln]
    return lines[-1] if lines else type(exc).__name__


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be scanned
        return []


def load_checkpoint_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, loaded without executing pickled code.

    Accepts ``{"network_weights": state_dict}`` (released/nnU-Net layout) or a bare
    state dict. Raises ``ModelNotFoundError``, ``UnsafeCheckpointError`` or ``CheckpointError``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"checkpoint {path} does not exist; a model folder needs {CHECKPOINT_RELPATH}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_last_line(exc)}); "
                                  "re-copy or re-download it") from exc
        names = _unsafe_globals(path) or re.findall(r"GLOBAL ([\w.]+)", str(exc))[:1]
        if not names and not any(w in str(exc) for w in ("Unsupported global", "allowlisted", "GLOBAL")):
            # e.g. "Unsupported operand": random bytes, not a refused callable
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_last_line(exc)}); "
                                  "re-copy or re-download it") from None
        extra = _safe_extra_globals(names) if names else None
        if extra is None:
            shown = ", ".join(names[:5]) or "unknown globals"
            raise UnsafeCheckpointError(
                f"checkpoint {path} refers to code that loading would execute ({shown}); refused. "
                "Only load checkpoints from a source you trust, and re-save their network_weights "
                "as a plain state dict (voxtell never unpickles arbitrary objects)") from None
        with torch.serialization.safe_globals(extra):
            try:
                obj = torch.load(path, map_location=map_location, weights_only=True)
            except Exception as exc2:  # noqa: BLE001
                raise CheckpointError(f"checkpoint {path} could not be read: {exc2}") from exc2
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_last_line(exc)}); "
                              "re-copy or re-download it") from exc
    if isinstance(obj, Mapping) and "network_weights" in obj:
        obj = obj["network_weights"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path} holds no state dict (expected a dict with 'network_weights' of tensors)")
    return dict(obj)


def check_state_dict(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict key + shape comparison; the error names the first offending keys."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [(k, tuple(found[k].shape), tuple(expected[k].shape))
                  for k in expected if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
    if mismatched:
        shown = "; ".join(f"{k}: checkpoint {list(a)} vs network {list(b)}" for k, a, b in mismatched[:3])
        parts.append(f"{len(mismatched)} with a different shape (first: {shown})")
    raise StateDictMismatchError(
        f"{source} does not match the network built from its config: " + ", ".join(parts)
        + ". Check that plans.json/voxtell_model.json belong to these weights (e.g. preset and text-embedding dim).",
        missing=missing, unexpected=unexpected, mismatched=mismatched)


def read_model_meta(model_dir: str | os.PathLike) -> tuple[NetworkConfig, ModelMeta]:
    """Config and metadata of a model folder, without reading the weights."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelNotFoundError(f"model folder {root} does not exist; set the model path in the config")
    meta_path, plans_path = root / META_FILENAME, root / PLANS_FILENAME
    data = read_meta(root)
    if data is not None:
        if "network" not in data:
            raise ConfigError(f"{meta_path} has no 'network' config")
        config = NetworkConfig.from_dict(data["network"])
        meta = ModelMeta.from_dict(data)
        if meta.embedding_dim != config.text_embedding_dim:
            raise ConfigError(f"{meta_path}: embedding_dim {meta.embedding_dim} differs from the network's "
                              f"text_embedding_dim {config.text_embedding_dim}")
        return config, meta
    if plans_path.is_file():
        config = config_from_plans(_read_json(plans_path))
        if config.text_embedding_dim != RELEASED_EMBEDDING_DIM:  # pragma: no cover - fallback is v1
            raise ConfigError(f"{plans_path}: unexpected text-embedding dim {config.text_embedding_dim}")
        meta = ModelMeta(model_id=root.resolve().name, preset=None, text_encoder=RELEASED_TEXT_ENCODER,
                         embedding_dim=RELEASED_EMBEDDING_DIM)
        return config, meta
    raise ModelNotFoundError(
        f"{root} is not a model folder: it has neither {META_FILENAME} nor {PLANS_FILENAME}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); restore it from the model release") from exc


def _check_aliases(state: Mapping[str, torch.Tensor], network: VoxTellNetwork, source: str) -> None:
    """Aliased names (decoder.encoder.*, all_modules.*) must hold the same values."""
    seen: dict[int, str] = {}
    for name, param in network.state_dict(keep_vars=True).items():
        first = seen.setdefault(id(param), name)
        if first == name:
            continue
        a, b = state[first], state[name]
        if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
            continue
        if not torch.equal(a, b):
            raise CheckpointError(f"{source}: {name} should repeat {first} but holds different values; "
                                  "the checkpoint was edited inconsistently")


def load_model_dir(path: str | os.PathLike, device: str | torch.device = "cpu",
                   prompt_chunk: int | None = None, verify_sha256: bool = True,
                   sha_cache: str | os.PathLike | None = None) -> LoadedModel:
    """Load a released or project model folder strictly (every key, every shape), eval mode.

    ``sha_cache``: a checksum cache file (``voxtell.model.folder.checkpoint_sha256``), so that
    a cohort's shard jobs hash the checkpoint once, not once per job."""
    root = Path(path)
    config, meta = read_model_meta(root)
    ckpt = root / CHECKPOINT_RELPATH
    if not ckpt.is_file():
        raise ModelNotFoundError(f"model folder {root} has no {CHECKPOINT_RELPATH}")
    sha = checkpoint_sha256(ckpt, sha_cache)
    if verify_sha256 and meta.sha256 and meta.sha256 != sha:
        raise CheckpointError(
            f"{ckpt} has sha256 {sha[:12]}… but {META_FILENAME} records {meta.sha256[:12]}…; the weights were "
            "replaced or damaged after the folder was written")
    meta = ModelMeta(**{**asdict(meta), "sha256": sha})
    state = load_checkpoint_state_dict(ckpt, map_location="cpu")
    with torch.device("meta"):
        network = VoxTellNetwork(config, prompt_chunk=prompt_chunk)
    check_state_dict(network.state_dict(), state, str(ckpt))
    _check_aliases(state, network, str(ckpt))
    state = {k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v) for k, v in state.items()}
    network.load_state_dict(state, strict=True, assign=True)
    network = network.to(device).eval()
    log.info("loaded model %s (sha256 %s, %s) on %s", meta.model_id, sha[:12], meta.preset or "released", device)
    return LoadedModel(network=network, config=config, meta=meta, path=root)


# ---------------------------------------------------------------------------- writing
def _cpu_state_dict(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict on the CPU with aliased entries still sharing one tensor (as released)."""
    module = getattr(network, "_orig_mod", network)  # torch.compile wrapper
    out: dict[str, torch.Tensor] = {}
    copies: dict[tuple, torch.Tensor] = {}
    for name, tensor in module.state_dict().items():
        key = (tensor.device, tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if key not in copies:
            copies[key] = tensor.detach().cpu().contiguous()  # released layout, whatever the training memory format
        out[name] = copies[key]
    return out


def _plans_for(config: NetworkConfig) -> dict[str, Any]:
    """An nnU-Net-style plans.json describing the image network (as the released folder has)."""
    return {
        "dataset_name": "VoxTell",
        "plans_name": "voxtell-pipeline",
        "configurations": {"3d_fullres": {
            "patch_size": list(config.patch_size),
            "normalization_schemes": ["ZScoreNormalization"],
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                "arch_kwargs": {
                    "n_stages": config.n_stages,
                    "features_per_stage": list(config.features_per_stage),
                    "conv_op": "torch.nn.modules.conv.Conv3d",
                    "kernel_sizes": [list(k) for k in config.kernel_sizes],
                    "strides": [list(s) for s in config.strides],
                    "n_blocks_per_stage": list(config.n_blocks_per_stage),
                    "n_conv_per_stage_decoder": list(config.n_conv_per_stage_decoder),
                    "conv_bias": config.conv_bias,
                    "norm_op": f"torch.nn.{config.norm_op}",
                    "norm_op_kwargs": dict(config.norm_op_kwargs),
                    "dropout_op": None,
                    "dropout_op_kwargs": None,
                    "nonlin": f"torch.nn.{config.nonlin}",
                    "nonlin_kwargs": dict(config.nonlin_kwargs),
                },
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
            },
        }},
    }


def save_model_dir(network: torch.nn.Module, config: NetworkConfig, out_dir: str | os.PathLike,
                   meta: ModelMeta) -> ModelMeta:
    """Write ``plans.json``, ``fold_0/checkpoint_final.pth`` and ``voxtell_model.json`` atomically.

    Returns the metadata as written (``sha256`` and ``created`` filled in). The checkpoint
    holds ``{"network_weights": state_dict}`` with the released aliased keys, so it also
    loads in the released code (for the voxtell-v1 architecture).
    """
    if meta.embedding_dim != config.text_embedding_dim:
        raise ConfigError(f"meta.embedding_dim {meta.embedding_dim} differs from the network's "
                          f"text_embedding_dim {config.text_embedding_dim}")
    root = Path(out_dir)
    ckpt = root / CHECKPOINT_RELPATH
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(ckpt) as tmp:
        torch.save({"network_weights": _cpu_state_dict(network)}, tmp)
    sha = weights_sha256(ckpt)
    created = meta.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    written = ModelMeta(**{**asdict(meta), "sha256": sha, "created": created})
    write_json_atomic(root / PLANS_FILENAME, _plans_for(config))
    write_json_atomic(root / META_FILENAME, written.to_dict(config))
    log.info("saved model %s to %s (sha256 %s)", written.model_id, root, sha[:12])
    return written


def model_info(model_dir: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
    """Config, metadata and checksum of a model folder (``voxtell model-info``)."""
    root = Path(model_dir)
    config, meta = read_model_meta(root)
    ckpt = root / CHECKPOINT_RELPATH
    sha = weights_sha256(ckpt)
    info: dict[str, Any] = {
        "path": str(root.resolve()),
        "released_layout_only": not (root / META_FILENAME).is_file(),
        **meta.to_dict(config),
        "checkpoint": str(CHECKPOINT_RELPATH),
        "checkpoint_sha256": sha,
        "sha256_matches_meta": meta.sha256 in (None, sha),
        "tokens": config.num_tokens,
    }
    if verify:
        loaded = load_model_dir(root)
        info["n_parameters"] = sum(p.numel() for p in loaded.network.parameters())
        info["verified"] = True
    return info
