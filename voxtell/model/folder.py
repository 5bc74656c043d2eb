"""The model folder, read without torch: file names, metadata, and the checkpoint's sha256.

One reader for everyone who needs to know what a model folder is: the workflow (its
checksum is a parameter of the segmentation jobs, known when the DAG is built), the segment
stage, the predictor and the checkpoint loader. It reads only small JSON files; the
checkpoint is hashed at most once per (path, size, modification time) when a cache file is
given (the workflow keeps one under ``.snakemake/voxtell/``), so the shard jobs of a cohort
reuse the checksum instead of re-reading gigabytes each.

Layout: ``plans.json`` (network), ``fold_0/checkpoint_final.pth`` (weights) and, in our
folders, ``voxtell_model.json`` (model id, preset, text encoder, embedding size, sha256).
A released folder has no ``voxtell_model.json``: its text encoder is Qwen3-Embedding-4B.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from voxtell.errors import ConfigError, InputError
from voxtell.io.atomic import write_json_atomic
from voxtell.io.hashing import file_sha256

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


def checkpoint_sha256(ckpt: str | os.PathLike, cache_file: str | os.PathLike | None = None) -> str:
    """sha256 of a checkpoint file; with ``cache_file``, computed once per (path, size, mtime)."""
    ckpt = Path(ckpt)
    st = ckpt.stat()
    key = f"{ckpt.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache: dict[str, str] = {}
    cache_path = Path(cache_file) if cache_file else None
    if cache_path is not None and cache_path.is_file():
        try:
            loaded = json.loads(cache_path.read_text(encoding="utf-8"))
            cache = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    sha = file_sha256(ckpt)
    if cache_path is not None:
        cache[key] = sha
        write_json_atomic(cache_path, cache)
    return sha


def read_meta(model_dir: str | os.PathLike) -> dict | None:
    """The folder's ``voxtell_model.json`` as a dict, None for a released folder."""
    path = Path(model_dir) / META
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); restore it from the model release") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object; restore it from the model release")
    return data


def model_ref(model_dir: str | os.PathLike, cache_file: str | os.PathLike | None = None) -> ModelRef:
    """Describe the model folder; raises ``ModelFolderError`` with what to do if it is unusable.

    The sha256 is the one ``voxtell_model.json`` records (the loader checks the weights
    against it), else the checkpoint's, hashed once per ``cache_file``."""
    root = Path(model_dir)
    ckpt = root / CHECKPOINT
    if not ckpt.is_file():
        raise ModelFolderError(
            f"model folder {root} has no {CHECKPOINT}; point 'model.dir' at a VoxTell model folder "
            "(released weights: the folder holding plans.json and fold_0/), or enable 'demo.train'"
        )
    meta = read_meta(root)
    if meta is not None:
        try:
            return ModelRef(
                path=str(root),
                model_id=str(meta.get("model_id") or root.resolve().name),
                sha256=meta.get("sha256") or checkpoint_sha256(ckpt, cache_file),
                text_encoder=str(meta["text_encoder"]),
                embedding_dim=int(meta["embedding_dim"]),
                preset=meta.get("preset"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{root / META} is incomplete ({exc}); restore it or remove it") from exc
    if not (root / PLANS).is_file():
        raise ModelFolderError(f"{root} has neither {META} nor {PLANS}; it is not a VoxTell model folder")
    return ModelRef(
        path=str(root),
        model_id=root.resolve().name,
        sha256=checkpoint_sha256(ckpt, cache_file),
        text_encoder=RELEASED_TEXT_ENCODER,
        embedding_dim=RELEASED_EMBEDDING_DIM,
    )
