"""Identify a model folder cheaply: id, text encoder, embedding dimension and sha256.

The workflow needs the model's checksum when it builds the DAG (it is a parameter of the
segmentation jobs, so a new model re-segments the cohort), so this reads only small JSON
files and never imports torch. Our folders record the checksum in ``voxtell_model.json``;
a released folder (``plans.json`` only) has its checkpoint hashed once, and the result is
cached beside other workflow state keyed by the file's size and modification time.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from voxtell.cohort.hashing import file_sha256
from voxtell.errors import ConfigError, InputError
from voxtell.io.atomic import write_json_atomic

CHECKPOINT = Path("fold_0") / "checkpoint_final.pth"
META = "voxtell_model.json"
PLANS = "plans.json"
RELEASED_TEXT_ENCODER = "Qwen/Qwen3-Embedding-4B"
RELEASED_EMBEDDING_DIM = 2560


class ModelFolderError(InputError):
    """The configured model folder is missing or incomplete."""


@dataclass(frozen=True)
class ModelRef:
    path: str
    model_id: str
    sha256: str
    text_encoder: str
    embedding_dim: int
    preset: str | None = None

    @property
    def checkpoint(self) -> str:
        return str(Path(self.path) / CHECKPOINT)


def model_exists(model_dir: str | os.PathLike) -> bool:
    """True if the folder holds a checkpoint (ours or a released one)."""
    return (Path(model_dir) / CHECKPOINT).is_file()


def _cached_sha(ckpt: Path, cache_file: Path | None) -> str:
    st = ckpt.stat()
    key = f"{ckpt.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache: dict[str, str] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
        except ValueError:
            cache = {}
    if key in cache:
        return cache[key]
    sha = file_sha256(ckpt)
    if cache_file is not None:
        cache[key] = sha
        write_json_atomic(cache_file, cache)
    return sha


def model_ref(model_dir: str | os.PathLike, cache_file: str | os.PathLike | None = None) -> ModelRef:
    """Describe the model folder; raises ``ModelFolderError`` with what to do if it is unusable."""
    root = Path(model_dir)
    ckpt = root / CHECKPOINT
    if not ckpt.is_file():
        raise ModelFolderError(
            f"model folder {root} has no {CHECKPOINT}; point 'model.dir' at a VoxTell model folder "
            "(released weights: the folder holding plans.json and fold_0/), or enable 'demo.train'"
        )
    meta_path = root / META
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            sha = meta.get("sha256") or _cached_sha(ckpt, Path(cache_file) if cache_file else None)
            return ModelRef(
                path=str(root),
                model_id=str(meta.get("model_id") or root.resolve().name),
                sha256=sha,
                text_encoder=str(meta["text_encoder"]),
                embedding_dim=int(meta["embedding_dim"]),
                preset=meta.get("preset"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{meta_path} is unreadable or incomplete ({exc}); restore it or remove it") from exc
    if not (root / PLANS).is_file():
        raise ModelFolderError(f"{root} has neither {META} nor {PLANS}; it is not a VoxTell model folder")
    return ModelRef(
        path=str(root),
        model_id=root.resolve().name,
        sha256=_cached_sha(ckpt, Path(cache_file) if cache_file else None),
        text_encoder=RELEASED_TEXT_ENCODER,
        embedding_dim=RELEASED_EMBEDDING_DIM,
    )
