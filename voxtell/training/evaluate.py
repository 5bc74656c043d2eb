"""Dice per concept on whole volumes, with the inference sliding window.

Validation uses the same code path as inference (``voxtell.inference.sliding_window``
with a ``TorchBackend``), so a validation Dice is what a user would get. A concept is
scored on the cases whose ground truth contains it; its Dice is the mean over those
cases and over the prompts asked (e.g. held-out paraphrases).
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from voxtell.training.dataset import PreparedCase

log = logging.getLogger(__name__)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred.astype(bool), truth.astype(bool)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def predict_case(network: torch.nn.Module, case: PreparedCase, embeddings: np.ndarray, patch_size: Sequence[int],
                 device: str = "cpu") -> np.ndarray:
    """(P, z, y, x) uint8 masks of a network-space case."""
    from voxtell.inference.backends import TorchBackend
    from voxtell.inference.sliding_window import sliding_window

    was_training = network.training
    backend = TorchBackend(network, device=device, precision="fp32")
    try:
        return sliding_window(case.image, embeddings, backend, patch_size, progress=False)
    finally:
        network.train(was_training)


def evaluate(network: torch.nn.Module, cases: Sequence[PreparedCase], concepts: Mapping[str, Sequence[int]],
             prompts: Mapping[str, Sequence[str]], embed: Callable[[Sequence[str]], np.ndarray],
             patch_size: Sequence[int], device: str = "cpu", progress: bool = True) -> dict[str, dict]:
    """Per concept: mean Dice over cases containing it, per prompt and overall."""
    names = [c for c in concepts if prompts.get(c)]
    flat = [(c, p) for c in names for p in prompts[c]]
    if not flat or not cases:
        return {}
    emb = embed([p for _, p in flat])
    scores: dict[str, dict[str, list[float]]] = {c: {} for c in names}
    for case in tqdm(cases, desc="validation", unit="case", disable=not progress):
        wanted = [i for i, (c, _) in enumerate(flat) if case.present & set(concepts[c])]
        if not wanted:
            continue
        masks = predict_case(network, case, emb[wanted], patch_size, device)
        for m, i in zip(masks, wanted):
            c, p = flat[i]
            scores[c].setdefault(p, []).append(dice(m, case.mask(concepts[c])))
    out: dict[str, dict] = {}
    for c, per_prompt in scores.items():
        if not per_prompt:
            continue
        allv = [v for vs in per_prompt.values() for v in vs]
        out[c] = {"dice": float(np.mean(allv)), "n_cases": max(len(v) for v in per_prompt.values()),
                  "per_prompt": {p: float(np.mean(v)) for p, v in per_prompt.items()}}
    return out


def mean_dice(result: Mapping[str, Mapping], concepts: Sequence[str] | None = None) -> float:
    vals = [r["dice"] for c, r in result.items() if concepts is None or c in concepts]
    return float(np.mean(vals)) if vals else float("nan")


def format_table(results: Mapping[str, Mapping[str, Mapping]]) -> str:
    """Markdown table: one row per concept, one Dice column per named result."""
    names = list(results)
    concepts = sorted({c for r in results.values() for c in r})
    lines = ["| concept | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c in concepts:
        cells = [f"{results[n][c]['dice']:.3f}" if c in results[n] else "-" for n in names]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
