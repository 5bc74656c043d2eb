"""Patch and prompt sampling: what the network sees at each training step.

A patch is centred, with probability ``foreground_oversample``, on a random voxel of a
concept present in the case (the concept drawn uniformly, so small lesions get as many
patches as the body), otherwise placed uniformly. Each patch gets K prompts: positives
from concepts visible in the patch, each as a random training paraphrase, and negatives
(empty target) from concepts absent from the patch or from the vocabulary's negative
prompts. No mirroring augmentation: flipping left-right would make "left kidney" wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from voxtell.training.config import TrainConfig
from voxtell.training.dataset import PreparedCase, TrainingData


@dataclass
class Batch:
    images: np.ndarray  # (B, 1, *patch) float32
    prompt_index: np.ndarray  # (B, K) int64 rows of the embedding table
    targets: np.ndarray  # (B, K, *patch) float32 in {0, 1}
    prompts: list[list[str]]


class PromptTable:
    """Prompt <-> row of the embedding matrix (all vocabulary prompts, embedded once)."""

    def __init__(self, prompts: Sequence[str]) -> None:
        self.prompts = list(dict.fromkeys(prompts))
        self.index = {p: i for i, p in enumerate(self.prompts)}

    def __getitem__(self, prompt: str) -> int:
        return self.index[prompt]


class PatchSampler:
    def __init__(self, data: TrainingData, patch_size: Sequence[int], config: TrainConfig, rng: np.random.Generator,
                 table: PromptTable) -> None:
        self.data = data
        self.patch = tuple(int(p) for p in patch_size)
        self.cfg = config
        self.rng = rng
        self.table = table
        self.concepts = data.concepts
        self.train_prompts = {c: data.vocabulary.concept(c).all_train_prompts for c in self.concepts}
        self.negative_prompts = list(data.vocabulary.negative_prompts)
        # Voxel coordinates per case and concept, for foreground oversampling (subsampled).
        self._fg: list[dict[str, np.ndarray]] = []
        for case in data.cases:
            per = {}
            for c in data.concepts_in(case):
                coords = np.argwhere(case.mask(self.concepts[c]))
                if len(coords) > 4000:
                    coords = coords[np.random.default_rng(0).choice(len(coords), 4000, replace=False)]
                per[c] = coords.astype(np.int32)
            self._fg.append(per)

    def _corner(self, case_idx: int) -> tuple[int, ...]:
        case = self.data.cases[case_idx]
        shape = case.image.shape
        fg = self._fg[case_idx]
        if fg and self.rng.random() < self.cfg.foreground_oversample:
            concept = list(fg)[int(self.rng.integers(len(fg)))]
            coords = fg[concept]
            centre = coords[int(self.rng.integers(len(coords)))]
            corner = [int(c) - p // 2 + int(self.rng.integers(-(p // 4), p // 4 + 1)) for c, p in zip(centre, self.patch)]
        else:
            corner = [int(self.rng.integers(0, max(s - p, 0) + 1)) for s, p in zip(shape, self.patch)]
        return tuple(min(max(c, 0), max(s - p, 0)) for c, s, p in zip(corner, shape, self.patch))

    def _crop(self, arr: np.ndarray, corner: tuple[int, ...]) -> np.ndarray:
        sl = tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        return arr[sl]

    def _augment(self, img: np.ndarray) -> np.ndarray:
        if not self.cfg.intensity_augmentation:
            return img
        r = self.rng
        img = img * np.float32(r.uniform(0.85, 1.15)) + np.float32(r.uniform(-0.1, 0.1))
        if r.random() < 0.3:
            img = img + r.normal(0.0, r.uniform(0.0, 0.1), img.shape).astype(np.float32)
        return img.astype(np.float32, copy=False)

    def _prompts(self, labels: np.ndarray) -> tuple[list[str], list[tuple[int, ...] | None]]:
        """K prompts for a label patch and the label values each one should segment (None: empty)."""
        k = self.cfg.prompts_per_patch
        present_vals = set(np.unique(labels).tolist()) - {0}
        visible = [c for c, vals in self.concepts.items() if present_vals & set(vals)]
        absent = [c for c in self.concepts if c not in visible]
        n_neg = int(self.rng.binomial(k, self.cfg.negative_fraction)) if visible else k
        n_pos = k - n_neg
        chosen: list[tuple[str, tuple[int, ...] | None]] = []
        if n_pos:
            picks = self.rng.choice(len(visible), size=n_pos, replace=n_pos > len(visible))
            chosen += [(visible[i], self.concepts[visible[i]]) for i in picks]
        neg_pool = [(c, None) for c in absent] + [(p, None) for p in self.negative_prompts]
        if n_neg and neg_pool:
            picks = self.rng.choice(len(neg_pool), size=n_neg, replace=n_neg > len(neg_pool))
            chosen += [neg_pool[i] for i in picks]
        while len(chosen) < k:  # nothing to negate: repeat positives
            c = visible[int(self.rng.integers(len(visible)))]
            chosen.append((c, self.concepts[c]))
        prompts, targets = [], []
        for name, vals in chosen:
            if name in self.train_prompts:
                options = self.train_prompts[name]
                prompts.append(options[int(self.rng.integers(len(options)))])
            else:
                prompts.append(name)  # a vocabulary negative prompt
            targets.append(vals)
        return prompts, targets

    def sample(self) -> Batch:
        b, k = self.cfg.batch_size, self.cfg.prompts_per_patch
        images = np.zeros((b, 1, *self.patch), np.float32)
        targets = np.zeros((b, k, *self.patch), np.float32)
        index = np.zeros((b, k), np.int64)
        all_prompts = []
        for i in range(b):
            ci = int(self.rng.integers(len(self.data.cases)))
            case: PreparedCase = self.data.cases[ci]
            corner = self._corner(ci)
            images[i, 0] = self._augment(self._crop(case.image, corner))
            lab = self._crop(case.labels, corner)
            prompts, vals = self._prompts(lab)
            for j, (p, v) in enumerate(zip(prompts, vals)):
                index[i, j] = self.table[p]
                if v is not None:
                    targets[i, j] = np.isin(lab, v)
            all_prompts.append(prompts)
        return Batch(images, index, targets, all_prompts)
