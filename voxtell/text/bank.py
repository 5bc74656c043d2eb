"""Embedding banks: prompt -> text embedding, computed once per cohort.

The on-disk format is the released one (``.npz`` with ``labels`` and float16
``embeddings``) plus ``encoder_id`` and ``dim``, so released banks load here and ours load
in the released code. Keys are normalised prompts (``voxtell.prompts.normalize_prompt``).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from voxtell.errors import VoxTellError
from voxtell.io.atomic import atomic_path
from voxtell.prompts import normalize_prompt

log = logging.getLogger(__name__)


class EmbeddingBankError(VoxTellError):
    """A bank is unreadable, from another encoder, or lacks prompts it must hold."""


def _unique(prompts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(normalize_prompt(p) for p in prompts))


@dataclass
class EmbeddingBank:
    """An in-memory bank. ``encoder_id`` is None for released banks, which do not record it."""

    dim: int
    encoder_id: str | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    _rows: list[np.ndarray] = field(default_factory=list, repr=False)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingBank":
        path = Path(path)
        if not path.is_file():
            raise EmbeddingBankError(f"embedding bank {path} does not exist; build it with `voxtell embed --bank {path}`")
        try:
            with np.load(path, allow_pickle=False) as data:
                labels = [str(x) for x in data["labels"]]
                embeddings = np.asarray(data["embeddings"])
                encoder_id = str(data["encoder_id"]) if "encoder_id" in data.files else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise EmbeddingBankError(
                f"cannot read embedding bank {path} ({exc}); it must be an .npz with 'labels' and 'embeddings'"
            ) from exc
        if embeddings.ndim != 2 or embeddings.shape[0] != len(labels):
            raise EmbeddingBankError(
                f"embedding bank {path}: {len(labels)} labels but embeddings of shape {embeddings.shape}"
            )
        bank = cls(dim=int(embeddings.shape[1]), encoder_id=encoder_id or None)
        added = bank.add(labels, embeddings)
        if added < len(labels):
            log.warning("embedding bank %s: %d labels collapse to the same normalised prompt", path, len(labels) - added)
        return bank

    def save(self, path: str | Path) -> None:
        """Write atomically in the released layout (+ encoder id and dimension)."""
        labels = np.array(list(self._index), dtype=str)
        embeddings = self.matrix().astype(np.float16)
        extra = {"encoder_id": np.array(self.encoder_id or "")}
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, labels=labels, embeddings=embeddings, dim=np.array(self.dim), **extra)

    # -- queries --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, prompt: str) -> bool:
        return normalize_prompt(prompt) in self._index

    @property
    def labels(self) -> list[str]:
        return list(self._index)

    def matrix(self) -> np.ndarray:
        if not self._rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(self._rows).astype(np.float32)

    def get(self, prompt: str) -> np.ndarray | None:
        i = self._index.get(normalize_prompt(prompt))
        return None if i is None else self._rows[i].astype(np.float32)

    def missing(self, prompts: Iterable[str]) -> list[str]:
        """Normalised prompts not in the bank, unique, in first-seen order."""
        return [p for p in _unique(prompts) if p not in self._index]

    def lookup(self, prompts: Sequence[str]) -> np.ndarray:
        """(P, dim) float32 in the order given; every prompt must be present."""
        absent = self.missing(prompts)
        if absent:
            raise EmbeddingBankError(
                f"{len(absent)} prompt(s) are not in the embedding bank, e.g. {absent[0][:80]!r}; "
                "run `voxtell embed` with the text encoder to add them"
            )
        return np.stack([self._rows[self._index[normalize_prompt(p)]] for p in prompts]).astype(np.float32)

    # -- updates --------------------------------------------------------------------------
    def add(self, prompts: Sequence[str], embeddings: np.ndarray) -> int:
        """Add prompts that are new; existing keys keep their vector. Returns how many were added."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape != (len(prompts), self.dim):
            raise EmbeddingBankError(
                f"cannot add embeddings of shape {embeddings.shape} for {len(prompts)} prompts to a bank of dimension {self.dim}"
            )
        added = 0
        for prompt, row in zip(prompts, embeddings):
            key = normalize_prompt(prompt)
            if key in self._index:
                continue
            self._index[key] = len(self._rows)
            self._rows.append(np.asarray(row, dtype=np.float16))
            added += 1
        return added

    def check_compatible(self, encoder_id: str | None, dim: int | None) -> None:
        """Refuse a bank from another encoder or of another dimension."""
        if dim is not None and dim != self.dim:
            raise EmbeddingBankError(
                f"embedding bank has dimension {self.dim} but the model expects {dim}; "
                "use a bank made with the model's text encoder"
            )
        if encoder_id is None:
            return
        if self.encoder_id is None:
            log.info(
                "embedding bank records no text encoder (released format); accepting it for %s because its dimension %d matches",
                encoder_id,
                self.dim,
            )
        elif self.encoder_id != encoder_id:
            raise EmbeddingBankError(
                f"embedding bank was made with {self.encoder_id!r}, not {encoder_id!r}; "
                "embeddings from different encoders are not interchangeable: build a new bank"
            )


def resolve_embeddings(
    prompts: Sequence[str],
    *,
    bank: EmbeddingBank | None = None,
    encoder_id: str | None = None,
    expected_dim: int | None = None,
    encoder_path: str | Path | None = None,
    device: str = "auto",
    allow_download: bool = False,
) -> np.ndarray:
    """Embeddings (P, D) float32 for ``prompts``, from the bank where possible.

    The text encoder is loaded only when a prompt is missing from the bank; new vectors
    are added to ``bank`` (the caller decides whether to save it).
    """
    if not prompts:
        raise EmbeddingBankError("no prompts given: there is nothing to segment")
    if bank is None:
        if encoder_id is None:
            raise EmbeddingBankError("neither an embedding bank nor a text encoder is configured")
        bank = EmbeddingBank(dim=expected_dim or 0, encoder_id=encoder_id)
    bank.check_compatible(encoder_id, expected_dim)
    absent = bank.missing(prompts)
    if absent:
        if encoder_id is None:
            raise EmbeddingBankError(
                f"{len(absent)} prompt(s) are missing from the bank and no text encoder is configured, "
                f"e.g. {absent[0][:80]!r}"
            )
        from voxtell.text.encoders import get_text_encoder

        encoder = get_text_encoder(encoder_id, encoder_path, device, allow_download)
        if bank.dim == 0 and len(bank) == 0:
            bank.dim = encoder.dim
        if encoder.dim != bank.dim:
            raise EmbeddingBankError(
                f"text encoder {encoder_id} gives dimension {encoder.dim}, but the bank/model needs {bank.dim}"
            )
        log.info("embedding %d new prompt(s) with %s", len(absent), encoder_id)
        bank.add(absent, encoder.encode(absent))
        if bank.encoder_id is None and len(bank) == len(absent):
            bank.encoder_id = encoder_id
    return bank.lookup(prompts)
