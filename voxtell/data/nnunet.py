"""nnU-Net raw dataset layout: ``imagesTr/``, ``labelsTr/``, ``dataset.json``.

This is the format segmentation groups already keep their curated training data in, so
training reads it as is. Images are ``{case}_{channel:04d}{file_ending}``, labels
``{case}{file_ending}``, and ``dataset.json`` holds ``channel_names``, ``labels`` (name ->
value, background 0), ``numTraining`` and ``file_ending``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from voxtell.errors import InputError
from voxtell.io.atomic import atomic_path

log = logging.getLogger(__name__)


class DatasetLayoutError(InputError):
    """The folder is not a usable nnU-Net raw dataset."""


@dataclass(frozen=True)
class Case:
    case_id: str
    images: tuple[Path, ...]  # one per channel, in channel order
    label: Path


@dataclass(frozen=True)
class NnunetDataset:
    root: Path
    labels: dict[str, int]
    channel_names: dict[str, str]
    file_ending: str
    cases: tuple[Case, ...]
    meta: dict[str, Any]

    @property
    def label_values(self) -> set[int]:
        return {int(v) for v in self.labels.values()}


def read_nnunet_dataset(root: str | Path) -> NnunetDataset:
    """Index a raw dataset (reads only ``dataset.json`` and file names; no image is opened)."""
    root = Path(root)
    dj = root / "dataset.json"
    if not dj.is_file():
        raise DatasetLayoutError(f"{root} has no dataset.json; expected an nnU-Net raw dataset (imagesTr/, labelsTr/, dataset.json)")
    try:
        meta = json.loads(dj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetLayoutError(f"{dj} is not valid JSON: {exc}") from exc
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DatasetLayoutError(f"{dj} needs a 'labels' object (name -> integer value, background 0)")
    labels_int: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, list):
            raise DatasetLayoutError(f"{dj}: region-based labels ({name!r}: {value}) are not supported; use integer labels "
                                     "and express regions as vocabulary concepts with several labels")
        try:
            labels_int[str(name)] = int(value)
        except (TypeError, ValueError) as exc:
            raise DatasetLayoutError(f"{dj}: label {name!r} has non-integer value {value!r}") from exc
    channels = {str(k): str(v) for k, v in (meta.get("channel_names") or meta.get("modality") or {"0": "CT"}).items()}
    ending = str(meta.get("file_ending", ".nii.gz"))
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise DatasetLayoutError(f"{root} needs imagesTr/ and labelsTr/ folders")
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    by_case: dict[str, dict[int, Path]] = {}
    for p in sorted(images_dir.iterdir()):
        m = pattern.match(p.name)
        if m:
            by_case.setdefault(m["case"], {})[int(m["ch"])] = p
        elif p.name.endswith(ending):
            raise DatasetLayoutError(f"{p} does not follow {{case}}_{{channel:04d}}{ending}; rename it")
    label_files = {p.name[: -len(ending)]: p for p in labels_dir.iterdir() if p.name.endswith(ending)}
    cases = []
    n_ch = len(channels)
    for case_id in sorted(by_case):
        chans = by_case[case_id]
        if sorted(chans) != list(range(n_ch)):
            raise DatasetLayoutError(f"case {case_id!r}: channels {sorted(chans)} found, dataset.json declares {n_ch}")
        if case_id not in label_files:
            raise DatasetLayoutError(f"case {case_id!r} has an image but no label file labelsTr/{case_id}{ending}")
        cases.append(Case(case_id, tuple(chans[c] for c in range(n_ch)), label_files[case_id]))
    orphans = sorted(set(label_files) - set(by_case))
    if orphans:
        raise DatasetLayoutError(f"label files without images: {orphans[:5]}{' ...' if len(orphans) > 5 else ''}")
    declared = meta.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        log.warning("%s: numTraining is %s but %d cases were found; using the files", dj, declared, len(cases))
    return NnunetDataset(root, labels_int, channels, ending, tuple(cases), meta)


def dataset_json(labels: Mapping[str, int], num_training: int, name: str = "", description: str = "",
                 channel_names: Mapping[str, str] | None = None, file_ending: str = ".nii.gz", **extra: Any) -> dict:
    return {
        "name": name,
        "description": description,
        "channel_names": dict(channel_names or {"0": "CT"}),
        "labels": dict(labels),
        "numTraining": int(num_training),
        "file_ending": file_ending,
        **extra,
    }


def write_case(root: str | Path, case_id: str, image, label, file_ending: str = ".nii.gz") -> Case:
    """Write one case (nibabel images) atomically into ``imagesTr/`` and ``labelsTr/``."""
    import nibabel as nib

    root = Path(root)
    img_path = root / "imagesTr" / f"{case_id}_0000{file_ending}"
    lab_path = root / "labelsTr" / f"{case_id}{file_ending}"
    for path, im in ((img_path, image), (lab_path, label)):
        with atomic_path(path) as tmp:
            nib.save(im, tmp)
    return Case(case_id, (img_path,), lab_path)

