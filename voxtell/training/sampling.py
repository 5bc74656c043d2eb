"""Patch and prompt sampling: what the network sees at each training step.

A patch is centred, with probability ``foreground_oversample``, on a random voxel of a
concept present in the case (the concept drawn uniformly, so small lesions get as many
patches as the body; ``focus_concepts`` are drawn ``focus_weight`` times as often),
otherwise placed uniformly. Each patch gets K prompts: the concept it was centred on,
other positives from concepts visible in the patch, each as a random training
paraphrase, and negatives (empty target) from concepts absent from the patch or from the
vocabulary's negative prompts. No mirroring augmentation: flipping left-right would make "left kidney" wrong.

Two choices make short CPU runs learn laterality and unseen paraphrases:
- contrast groups: when a concept is a part of a partition ("left kidney", "right kidney"
  of "kidneys"), its siblings and the whole are often asked about in the same patch, so
  the only thing telling the targets apart is the side named in the prompt. Text
  embeddings of "left kidney" and "right kidney" are close (cosine 0.87 with MiniLM), and
  sampled at random they rarely meet in one patch.
- paraphrase mixing: a prompt's embedding is sometimes a normalised blend of two training
  paraphrases of its concept, which fills the space between them where unseen phrasings
  tend to land. Only embeddings from the bank are blended; the text encoder never runs.
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
    mix_index: np.ndarray  # (B, K) int64 second row blended in (== prompt_index: no blend)
    mix_weight: np.ndarray  # (B, K) float32 weight of prompt_index's row (1.0: no blend)
    targets: np.ndarray  # (B, K, *patch) float32 in {0, 1}
    prompts: list[list[str]]


class PromptTable:
    """Prompt <-> row of the embedding matrix (all vocabulary prompts, embedded once)."""

    def __init__(self, prompts: Sequence[str]) -> None:
        self.prompts = list(dict.fromkeys(prompts))
        self.index = {p: i for i, p in enumerate(self.prompts)}

    def __getitem__(self, prompt: str) -> int:
        return self.index[prompt]


def contrast_groups(concepts: dict[str, tuple[int, ...]]) -> dict[str, list[str]]:
    """Concept -> the concepts to contrast it with: siblings and whole of every partition.

    A partition is a concept whose labels are exactly the disjoint union of two or more
    other concepts' labels ("kidneys" = "left kidney" + "right kidney"); the body, whose
    parts overlap each other, is not one.
    """
    groups: dict[str, list[str]] = {}
    sets = {c: frozenset(v) for c, v in concepts.items()}
    for whole, labels in sets.items():
        parts = [c for c, s in sets.items() if c != whole and s and s < labels]
        if len(parts) < 2 or sum(len(sets[c]) for c in parts) != len(labels) or frozenset().union(
                *(sets[c] for c in parts)) != labels:
            continue
        for c in parts:
            groups.setdefault(c, []).extend([o for o in parts if o != c] + [whole])
        groups.setdefault(whole, []).extend(parts)
    return {c: list(dict.fromkeys(v)) for c, v in groups.items()}


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
        self.contrast = contrast_groups(self.concepts)
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

    def _corner(self, case_idx: int) -> tuple[tuple[int, ...], str | None]:
        """Patch corner, and the concept the patch was centred on (None: placed uniformly)."""
        case = self.data.cases[case_idx]
        shape = case.image.shape
        fg = self._fg[case_idx]
        concept = None
        if fg and self.rng.random() < self.cfg.foreground_oversample:
            names = list(fg)
            weights = np.array([self.cfg.focus_weight if c in self.cfg.focus_concepts else 1.0 for c in names])
            concept = names[int(self.rng.choice(len(names), p=weights / weights.sum()))]
            coords = fg[concept]
            centre = coords[int(self.rng.integers(len(coords)))]
            corner = [int(c) - p // 2 + int(self.rng.integers(-(p // 4), p // 4 + 1)) for c, p in zip(centre, self.patch)]
        else:
            corner = [int(self.rng.integers(0, max(s - p, 0) + 1)) for s, p in zip(shape, self.patch)]
        return tuple(min(max(c, 0), max(s - p, 0)) for c, s, p in zip(corner, shape, self.patch)), concept

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

    def _prompts(self, labels: np.ndarray, anchor: str | None = None
                 ) -> tuple[list[str], list[str | None], list[tuple[int, ...] | None]]:
        """K prompts for a label patch, a paraphrase to blend each with (or None) and the
        label values each one should segment (None: empty).

        ``anchor``, the concept the patch was centred on, is asked first when visible: a
        small lesion's patch would otherwise mostly be spent on the organs around it.
        """
        k = self.cfg.prompts_per_patch
        present_vals = set(np.unique(labels).tolist()) - {0}
        visible = [c for c, vals in self.concepts.items() if present_vals & set(vals)]
        absent = [c for c in self.concepts if c not in visible]
        n_pos = k - int(self.rng.binomial(k, self.cfg.negative_fraction)) if visible else 0
        chosen: list[tuple[str, tuple[int, ...] | None]] = []
        taken: set[str] = set()
        while len(chosen) < n_pos:
            pool = [c for c in visible if c not in taken] or visible
            c = anchor if anchor in visible and not chosen else pool[int(self.rng.integers(len(pool)))]
            chosen.append((c, self.concepts[c]))
            taken.add(c)
            if self.contrast.get(c) and self.rng.random() < self.cfg.contrast_rate:
                # Siblings absent from the patch are hard negatives: their target is empty.
                for other in self.contrast[c]:
                    if len(chosen) < k and other not in taken:
                        chosen.append((other, self.concepts[other]))
                        taken.add(other)
        n_neg = k - len(chosen)
        neg_pool = [(c, None) for c in absent if c not in taken] + [(p, None) for p in self.negative_prompts]
        if n_neg and neg_pool:
            # Focus concepts are asked where they are absent as often as they are centred on:
            # a new lesion concept otherwise learns "a blob near here" and fires on look-alikes.
            p = None
            if self.cfg.focus_concepts:
                w = np.array([self.cfg.focus_weight if c in self.cfg.focus_concepts else 1.0 for c, _ in neg_pool])
                p = w / w.sum()
            picks = self.rng.choice(len(neg_pool), size=n_neg, replace=n_neg > len(neg_pool), p=p)
            chosen += [neg_pool[i] for i in picks]
        while len(chosen) < k:  # nothing to negate: repeat positives
            c = visible[int(self.rng.integers(len(visible)))]
            chosen.append((c, self.concepts[c]))
        prompts, blends, targets = [], [], []
        for name, vals in chosen:
            blend = None
            if name in self.train_prompts:
                options = self.train_prompts[name]
                prompts.append(options[int(self.rng.integers(len(options)))])
                if len(options) > 1 and self.rng.random() < self.cfg.paraphrase_mix:
                    blend = options[int(self.rng.integers(len(options)))]
            else:
                prompts.append(name)  # a vocabulary negative prompt
            blends.append(blend)
            targets.append(vals if name in self.concepts else None)
        return prompts, blends, targets

    def sample(self) -> Batch:
        b, k = self.cfg.batch_size, self.cfg.prompts_per_patch
        images = np.zeros((b, 1, *self.patch), np.float32)
        targets = np.zeros((b, k, *self.patch), np.float32)
        index = np.zeros((b, k), np.int64)
        mix_index = np.zeros((b, k), np.int64)
        mix_weight = np.ones((b, k), np.float32)
        all_prompts = []
        for i in range(b):
            ci = int(self.rng.integers(len(self.data.cases)))
            case: PreparedCase = self.data.cases[ci]
            corner, anchor = self._corner(ci)
            images[i, 0] = self._augment(self._crop(case.image, corner))
            lab = self._crop(case.labels, corner)
            prompts, blends, vals = self._prompts(lab, anchor)
            for j, (p, q, v) in enumerate(zip(prompts, blends, vals)):
                index[i, j] = mix_index[i, j] = self.table[p]
                if q is not None:
                    mix_index[i, j] = self.table[q]
                    mix_weight[i, j] = self.rng.uniform(0.0, 1.0)
                if v is not None:
                    targets[i, j] = np.isin(lab, v)
            all_prompts.append(prompts)
        return Batch(images, index, mix_index, mix_weight, targets, all_prompts)
