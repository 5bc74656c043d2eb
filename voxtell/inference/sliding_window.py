"""Gaussian-weighted sliding-window inference that streams along the first axis.

The window rule is the released one (nnU-Net's): per axis
``n = ceil((size - patch) / (step * patch)) + 1`` positions spread evenly over
``[0, size - patch]`` and rounded; each patch's logits are weighted by a Gaussian
(sigma = patch / 8, normalised to max 1, zeros replaced by the smallest nonzero value)
and the weighted sum is divided by the summed weights. No mirroring.

Two exact savings over the released loop:
- every prompt of a patch runs in one backend call, several patches per call;
- the Gaussian is a product of three 1-D factors and the window positions form a grid, so
  the summed weights are a product of three 1-D sums: no weight volume is kept.
Patches are visited in z-major order. Once the windows have moved past a z-slice it is
final: it is normalised, thresholded (or turned into probabilities) and handed to the
output, so the float32 accumulator only spans about one patch depth, not the volume.

The module knows nothing about how the model was loaded: it takes a ``Backend``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from tqdm.auto import tqdm

from voxtell.inference.backends import Backend

log = logging.getLogger(__name__)

SIGMA_SCALE = 1.0 / 8


def compute_steps(image_size: Sequence[int], patch_size: Sequence[int], tile_step: float = 0.5) -> list[list[int]]:
    """Window start positions per axis (the released rule; image_size >= patch_size)."""
    if not 0 < tile_step <= 1:
        raise ValueError(f"tile_step must be in (0, 1], got {tile_step}")
    steps = []
    for size, patch in zip(image_size, patch_size):
        if size < patch:
            raise ValueError(f"image size {tuple(image_size)} is smaller than the patch {tuple(patch_size)}; pad first")
        n = int(math.ceil((size - patch) / (tile_step * patch))) + 1
        if n > 1:
            actual = (size - patch) / (n - 1)
            steps.append([int(np.round(actual * i)) for i in range(n)])
        else:
            steps.append([0])
    return steps


def gaussian_factors(patch_size: Sequence[int], sigma_scale: float = SIGMA_SCALE) -> list[np.ndarray]:
    """1-D factors (float64, max 1) whose outer product is the importance map.

    Equals scipy's 3-D ``gaussian_filter`` of a centred delta normalised to max 1, because
    that filter is applied axis by axis. With sigma = patch/8 the filter's truncation radius
    (4 sigma) reaches every voxel, so no factor has zeros; if a caller's sigma makes zeros,
    they are replaced per factor by the smallest nonzero value.
    """
    factors = []
    for p in patch_size:
        delta = np.zeros(int(p), dtype=np.float64)
        delta[int(p) // 2] = 1.0
        g = gaussian_filter1d(delta, sigma=int(p) * sigma_scale, mode="constant", cval=0.0)
        g /= g.max()
        if (g == 0).any():
            g[g == 0] = g[g > 0].min()
        factors.append(g)
    return factors


def importance_map(patch_size: Sequence[int], sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
    """The 3-D Gaussian importance map (float32), max 1."""
    g0, g1, g2 = gaussian_factors(patch_size, sigma_scale)
    return (g0[:, None, None] * g1[None, :, None] * g2[None, None, :]).astype(np.float32)


def summed_weights(size: int, starts: Sequence[int], factor: np.ndarray) -> np.ndarray:
    """Sum over window positions of one axis's Gaussian factor (float64, length ``size``)."""
    w = np.zeros(size, dtype=np.float64)
    for s in starts:
        w[s : s + len(factor)] += factor
    return w


@dataclass(frozen=True)
class OutputMode:
    """What the finished slices become: ``mask`` (uint8, sigmoid > threshold),
    ``probability`` (float32 sigmoid) or ``logit`` (float32)."""

    kind: str = "mask"
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("mask", "probability", "logit"):
            raise ValueError(f"output kind must be mask, probability or logit, got {self.kind!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.kind == "mask" else np.dtype(np.float32)


def _batches(positions: list[tuple[int, int, int]], size: int) -> list[list[tuple[int, int, int]]]:
    return [positions[i : i + size] for i in range(0, len(positions), size)]


def sliding_window(
    image: np.ndarray,
    embeddings: torch.Tensor | np.ndarray,
    backend: Backend,
    patch_size: Sequence[int],
    *,
    tile_step: float = 0.5,
    sw_batch_size: int = 1,
    output: OutputMode = OutputMode(),
    accumulate_device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "sliding window",
) -> np.ndarray:
    """Segment a network-space image (z, y, x; float32; >= patch) for P prompts.

    Returns ``(P, z, y, x)``: uint8 masks, or float32 probabilities/logits (``output``).
    The accumulator (float32) lives on ``accumulate_device`` (default: the backend's device)
    and spans ``P x depth x y x x`` with depth about one patch (see module docstring).
    """
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (z, y, x), got shape {image.shape}")
    if sw_batch_size < 1:
        raise ValueError("sw_batch_size must be >= 1")
    patch = tuple(int(p) for p in patch_size)
    shape = tuple(int(s) for s in image.shape)
    emb = torch.as_tensor(embeddings, dtype=torch.float32)
    if emb.ndim != 2 or emb.shape[0] < 1:
        raise ValueError(f"embeddings must be (P, D) with P >= 1, got {tuple(emb.shape)}")
    n_prompts = emb.shape[0]
    device = torch.device(accumulate_device if accumulate_device is not None else backend.device)

    steps = compute_steps(shape, patch, tile_step)
    factors = gaussian_factors(patch)
    gauss = torch.from_numpy(importance_map(patch)).to(device)
    wz, wy, wx = (summed_weights(s, st, f) for s, st, f in zip(shape, steps, factors))
    norm_yx = torch.from_numpy((wy[:, None] * wx[None, :]).astype(np.float32)).to(device)
    wz_t = torch.from_numpy(wz.astype(np.float32)).to(device)
    logit_threshold = math.log(output.threshold / (1.0 - output.threshold))

    positions = [(z, y, x) for z in steps[0] for y in steps[1] for x in steps[2]]
    batches = _batches(positions, sw_batch_size)
    depth = min(shape[0], max(b[-1][0] + patch[0] - b[0][0] for b in batches))
    acc = torch.zeros((n_prompts, depth, shape[1], shape[2]), dtype=torch.float32, device=device)
    result = np.empty((n_prompts, *shape), dtype=output.dtype)
    lo = 0  # first z-slice held by the accumulator

    def finish(stop: int) -> None:
        """Normalise slices [lo, stop) of the accumulator, emit them, shift the rest down."""
        nonlocal lo
        d = stop - lo
        if d <= 0:
            return
        block = acc[:, :d]
        block /= wz_t[lo:stop, None, None]
        block /= norm_yx
        if output.kind == "mask":
            out = (block > logit_threshold).to(torch.uint8)
        elif output.kind == "probability":
            out = torch.sigmoid(block)
        else:
            out = block
        result[:, lo:stop] = out.cpu().numpy()
        for k in range(0, depth - d, d):  # non-overlapping chunk copies, front to back
            n = min(d, depth - d - k)
            acc[:, k : k + n] = acc[:, k + d : k + d + n]
        acc[:, max(depth - d, 0) :] = 0
        lo = stop

    with torch.inference_mode():
        bar = tqdm(total=len(positions), desc=desc, unit="patch", disable=not progress, leave=False)
        try:
            for batch in batches:
                z_first = batch[0][0]
                if z_first > lo:
                    finish(z_first)
                tiles = np.stack(
                    [image[z : z + patch[0], y : y + patch[1], x : x + patch[2]] for z, y, x in batch]
                )[:, None]
                logits = backend.forward(torch.from_numpy(tiles), emb)
                # out of place: a backend may return a view (expanded, or numpy-backed memory)
                logits = torch.as_tensor(logits).to(device=device, dtype=torch.float32) * gauss
                for i, (z, y, x) in enumerate(batch):
                    acc[:, z - lo : z - lo + patch[0], y : y + patch[1], x : x + patch[2]] += logits[i]
                bar.update(len(batch))
            finish(shape[0])
        finally:
            bar.close()
    return result
