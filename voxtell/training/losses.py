"""Dice + binary cross-entropy on every deep-supervision scale.

Each prompt is its own binary problem (one logit channel per prompt), so the loss is
sigmoid BCE plus soft Dice. Dice is averaged over prompts whose target is not empty:
for an empty target (a negative prompt) Dice is undefined and BCE alone pushes the
logits down. Scales get weights 1, 1/2, 1/4, ... normalised to sum to one (nnU-Net);
lower-resolution targets are the average-pooled full-resolution target (soft labels).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def scale_weights(n: int) -> list[float]:
    w = [0.5**i for i in range(n)]
    s = sum(w)
    return [x / s for x in w]


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(B, K, *full) -> (B, K, *shape) by average pooling (exact when the factor is integer)."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    b, k = target.shape[:2]
    flat = target.reshape(b * k, 1, *target.shape[2:])
    return F.adaptive_avg_pool3d(flat, tuple(shape)).reshape(b, k, *shape)


def dice_bce(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, bce_weight: float = 1.0,
             smooth: float = 1e-5) -> tuple[torch.Tensor, dict[str, float]]:
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dims = tuple(range(2, logits.ndim))
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    positive = target.sum(dims) > 0
    dice_loss = (1 - dice[positive]).mean() if positive.any() else logits.new_zeros(())
    loss = bce_weight * bce + dice_weight * dice_loss
    return loss, {"bce": float(bce.detach()), "dice_loss": float(dice_loss.detach())}


def deep_supervision_loss(outputs: Sequence[torch.Tensor] | torch.Tensor, target: torch.Tensor,
                          dice_weight: float = 1.0, bce_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum over scales (outputs highest resolution first)."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    weights = scale_weights(len(outputs))
    total = target.new_zeros(())
    parts: dict[str, float] = {}
    for i, (w, out) in enumerate(zip(weights, outputs)):
        loss, info = dice_bce(out, downsample_target(target, out.shape[2:]), dice_weight, bce_weight)
        total = total + w * loss
        if i == 0:
            parts = info
    return total, parts
