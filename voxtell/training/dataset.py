"""Training data: an nnU-Net raw dataset + a vocabulary, checked and brought into network space.

Every data problem a user can cause is raised as a typed error before any training
compute: an empty dataset, an image and label on different grids (checked from the
headers, before voxels are read), label values that no vocabulary concept names (checked
from ``dataset.json`` and then from every label file while loading). Images go through
``voxtell.inference.preprocessing.preprocess`` — the very function inference uses — and
labels through the same reorientation, crop and padding, so a model never sees a
convention at training time that it does not see at inference time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from voxtell.data.nnunet import NnunetDataset, read_nnunet_dataset
from voxtell.data.vocabulary import Vocabulary
from voxtell.errors import InputError

log = logging.getLogger(__name__)


class TrainingDataError(InputError):
    """The training data cannot be used as given."""


class EmptyDatasetError(TrainingDataError):
    """The dataset has no cases."""


class GridMismatchError(TrainingDataError):
    """An image and its label map are not on the same voxel grid."""


class UnknownLabelError(TrainingDataError):
    """A label value occurs in the data that no vocabulary concept names."""


@dataclass
class PreparedCase:
    """One case in network space (z, y, x): z-scored image and label map, same shape."""

    case_id: str
    image: np.ndarray  # float32
    labels: np.ndarray  # uint8 / int16
    present: frozenset[int]

    def mask(self, values: Sequence[int]) -> np.ndarray:
        return np.isin(self.labels, values)


@dataclass
class TrainingData:
    cases: list[PreparedCase]
    concepts: dict[str, tuple[int, ...]]  # concept name -> label values (present in the label table)
    vocabulary: Vocabulary
    label_table: dict[str, int]
    root: Path

    def concepts_in(self, case: PreparedCase) -> list[str]:
        return [c for c, vals in self.concepts.items() if case.present & set(vals)]


def check_vocabulary(ds: NnunetDataset, vocabulary: Vocabulary) -> dict[str, tuple[int, ...]]:
    """Concept -> label values; raise if a non-background label of the table has no concept."""
    concepts = vocabulary.resolve(ds.labels)
    covered = {v for vals in concepts.values() for v in vals}
    missing = {name: v for name, v in ds.labels.items() if v != 0 and v not in covered}
    if missing:
        raise UnknownLabelError(
            f"dataset.json labels {missing} are not named by any vocabulary concept; add a concept for each "
            "(e.g. {\"name\": ..., \"labels\": [...], \"prompts\": [...]}) before training"
        )
    if 0 not in ds.label_values:
        raise TrainingDataError(f"{ds.root}/dataset.json must define background as label 0")
    return concepts


def check_grids(ds: NnunetDataset, atol_mm: float = 1e-3) -> None:
    """Image and label share shape and affine, from the headers only (no voxel data read)."""
    import nibabel as nib

    for case in ds.cases:
        lab = nib.load(str(case.label))
        for path in case.images:
            img = nib.load(str(path))
            if tuple(img.shape[:3]) != tuple(lab.shape[:3]) or not np.allclose(img.affine, lab.affine, atol=atol_mm):
                raise GridMismatchError(
                    f"case {case.case_id!r}: image {path.name} (shape {tuple(img.shape)}, voxel size "
                    f"{np.round(img.header.get_zooms()[:3], 3).tolist()}) and label {case.label.name} (shape "
                    f"{tuple(lab.shape)}, voxel size {np.round(lab.header.get_zooms()[:3], 3).tolist()}) are not on "
                    "the same grid; resample the label onto the image grid (nearest neighbour) first"
                )


def open_dataset(root: str | Path, vocabulary: Vocabulary) -> tuple[NnunetDataset, dict[str, tuple[int, ...]]]:
    """Index and check a dataset without reading voxel data."""
    ds = read_nnunet_dataset(root)
    if not ds.cases:
        raise EmptyDatasetError(f"{root} has no training cases in imagesTr/; add cases or point --data elsewhere")
    if len(ds.channel_names) != 1:
        raise TrainingDataError(f"{root}: VoxTell takes one input channel, dataset.json declares {len(ds.channel_names)}")
    concepts = check_vocabulary(ds, vocabulary)
    check_grids(ds)
    return ds, concepts


def prepare_case(case, patch_size: Sequence[int], allowed: set[int]) -> PreparedCase:
    """Preprocess one case exactly as inference does (image) and the same way (labels)."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation

    from voxtell.inference.preprocessing import preprocess

    _, pre = preprocess(case.images[0], patch_size)
    st = pre.state
    raw = np.asanyarray(nib.load(str(case.label)).dataobj)
    raw = raw.reshape(st.original_shape)
    if raw.dtype.kind == "f":
        if not np.array_equal(raw, np.round(raw)):
            raise TrainingDataError(f"case {case.case_id!r}: label map has non-integer values; store labels as integers")
    raw = raw.astype(np.int16 if raw.max(initial=0) > 255 else np.uint8)
    values = {int(v) for v in np.unique(raw)}
    unknown = values - allowed
    if unknown:
        raise UnknownLabelError(
            f"case {case.case_id!r}: label values {sorted(unknown)} are not in dataset.json 'labels' nor in the "
            "vocabulary; add them to both, or remap them to background"
        )
    net = apply_orientation(raw, st.to_ras).transpose(2, 1, 0)
    out = np.zeros(st.network_shape, dtype=raw.dtype)
    inner = tuple(slice(b, b + c) for b, c in zip(st.pad_below, st.cropped_shape))
    out[inner] = net[tuple(slice(a, b) for a, b in st.bbox)]
    return PreparedCase(case.case_id, pre.data, out, frozenset(values - {0}))


def load_training_data(root: str | Path, vocabulary: Vocabulary, patch_size: Sequence[int],
                       case_ids: Sequence[str] | None = None, progress: bool = True) -> TrainingData:
    """Check, then load and preprocess every case (phantom cohorts fit in memory)."""
    ds, concepts = open_dataset(root, vocabulary)
    cases = [c for c in ds.cases if case_ids is None or c.case_id in set(case_ids)]
    allowed = {v for vals in concepts.values() for v in vals} | {0}
    prepared = [prepare_case(c, patch_size, allowed)
                for c in tqdm(cases, desc="loading cases", unit="case", disable=not progress or len(cases) < 5)]
    log.info("loaded %d cases from %s (%d concepts)", len(prepared), root, len(concepts))
    return TrainingData(prepared, concepts, vocabulary, dict(ds.labels), Path(root))


def split_cases(data: TrainingData, n_val: int, seed: int) -> tuple[TrainingData, TrainingData | None]:
    """Deterministic train/validation split of one dataset (validation gets ``n_val`` cases)."""
    if n_val <= 0 or len(data.cases) < 2:
        return data, None
    n_val = min(n_val, len(data.cases) // 4 or 1)
    order = np.random.default_rng(seed).permutation(len(data.cases))
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(data.cases) if i not in val_idx]
    val = [c for i, c in enumerate(data.cases) if i in val_idx]
    mk = lambda cs: TrainingData(cs, data.concepts, data.vocabulary, data.label_table, data.root)  # noqa: E731
    return mk(train), mk(val)
