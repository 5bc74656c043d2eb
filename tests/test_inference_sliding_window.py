"""Window positions, Gaussian weights, streaming accumulation and batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from voxtell.inference.sliding_window import OutputMode, compute_steps, importance_map, sliding_window


class PatchIndexBackend:
    """Deterministic backend: every prompt of patch k gets the constant logit ``k % 7 - 3 + p``.

    It records the patches it saw, so the test can check the windows themselves.
    """

    name = "patch-index"
    device = "cpu"

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def forward(self, patches, embeddings):
        out = torch.empty((patches.shape[0], embeddings.shape[0], *patches.shape[2:]))
        for i in range(patches.shape[0]):
            k = len(self.seen)
            self.seen.append(patches[i, 0].numpy().copy())
            for p in range(embeddings.shape[0]):
                out[i, p] = k % 7 - 3 + p
        return out.numpy()  # numpy out is allowed by the protocol


def dense_reference(image, patch, step, n_prompts):
    """The released rule, written out densely: weighted sum / summed weights (float64)."""
    delta = np.zeros(patch)
    delta[tuple(p // 2 for p in patch)] = 1
    g = gaussian_filter(delta, [p / 8 for p in patch], 0, mode="constant", cval=0)
    g /= g.max()
    g[g == 0] = g[g > 0].min()
    positions = []
    for size, p in zip(image.shape, patch):
        n = math.ceil((size - p) / (step * p)) + 1
        positions.append([round((size - p) / (n - 1) * i) if n > 1 else 0 for i in range(n)])
    acc = np.zeros((n_prompts, *image.shape))
    wsum = np.zeros(image.shape)
    k = 0
    windows = []
    for z in positions[0]:
        for y in positions[1]:
            for x in positions[2]:
                sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                windows.append(image[sl])
                for p in range(n_prompts):
                    acc[(p, *sl)] += (k % 7 - 3 + p) * g
                wsum[sl] += g
                k += 1
    return acc / wsum, positions, windows


def test_steps_follow_the_released_rule():
    assert compute_steps((64, 65, 100), (64, 64, 64)) == [[0], [0, 1], [0, 18, 36]]
    assert compute_steps((129, 11, 7), (64, 5, 7)) == [[0, 22, 43, 65], [0, 2, 4, 6], [0]]
    with pytest.raises(ValueError):
        compute_steps((10, 64, 64), (64, 64, 64))


@pytest.mark.parametrize("patch", [(7, 9, 5), (8, 6, 10), (64, 64, 64)])
def test_gaussian_matches_scipy_3d_filter(patch):
    delta = np.zeros(patch)
    delta[tuple(p // 2 for p in patch)] = 1
    ref = gaussian_filter(delta, [p / 8 for p in patch], 0, mode="constant", cval=0)
    ref /= ref.max()
    ours = importance_map(patch)
    assert ours.max() == pytest.approx(1.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sw_batch_size", [1, 3, 50])
@pytest.mark.parametrize("shape,patch", [((23, 17, 30), (8, 6, 10)), ((9, 7, 11), (9, 7, 11)), ((31, 8, 9), (7, 8, 5))])
def test_windows_and_weights_on_odd_sizes(shape, patch, sw_batch_size):
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    backend = PatchIndexBackend()
    out = sliding_window(image, np.zeros((2, 4), np.float32), backend, patch,
                         sw_batch_size=sw_batch_size, output=OutputMode("logit"), progress=False)
    ref, positions, windows = dense_reference(image, patch, 0.5, 2)
    assert len(backend.seen) == np.prod([len(p) for p in positions])
    for seen, window in zip(backend.seen, windows):
        np.testing.assert_array_equal(seen, window)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_masks_and_probabilities_follow_the_threshold():
    image = np.zeros((20, 12, 12), np.float32)
    out_logit = sliding_window(image, np.zeros((3, 4), np.float32), PatchIndexBackend(), (8, 8, 8),
                               output=OutputMode("logit"), progress=False)
    prob = sliding_window(image, np.zeros((3, 4), np.float32), PatchIndexBackend(), (8, 8, 8),
                          output=OutputMode("probability"), progress=False)
    mask = sliding_window(image, np.zeros((3, 4), np.float32), PatchIndexBackend(), (8, 8, 8),
                          output=OutputMode("mask", threshold=0.3), progress=False)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-out_logit)), rtol=1e-5)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, (prob > 0.3).astype(np.uint8))


def test_image_must_be_padded_to_the_patch():
    with pytest.raises(ValueError):
        sliding_window(np.zeros((4, 8, 8), np.float32), np.zeros((1, 4), np.float32), PatchIndexBackend(), (8, 8, 8),
                       progress=False)
