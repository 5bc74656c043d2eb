"""Phantom cohorts on disk: nnU-Net raw datasets (training) and demo studies."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm import tqdm

from voxtell.data.nnunet import NnunetDataset, write_case, read_nnunet_dataset, dataset_json
from voxtell.data.phantoms import LABELS, OPTIONAL_LABELS, PhantomConfig, generate_cohort
from voxtell.data.vocabulary import PHANTOM_VOCABULARY
from voxtell.io.atomic import write_json_atomic

log = logging.getLogger(__name__)


def phantom_label_table(config: PhantomConfig) -> dict[str, int]:
    """dataset.json labels: optional labels only when the generator can draw them, so a
    dataset without adrenal lesions does not claim the concept."""
    table = dict(LABELS)
    if config.adrenal_lesion_rate <= 0:
        for name in OPTIONAL_LABELS:
            table.pop(name)
    return table


def write_phantom_dataset(out_dir: str | Path, n: int, seed: int = 0, config: PhantomConfig | None = None,
                          start: int = 0, prefix: str = "phantom") -> NnunetDataset:
    """Write phantoms ``start .. start+n-1`` as an nnU-Net raw dataset plus ``vocabulary.json``."""
    cfg = config or PhantomConfig()
    out = Path(out_dir)
    for ph in tqdm(generate_cohort(n, seed, cfg, start=start, prefix=prefix), total=n, desc="phantoms", unit="case",
                   disable=n < 5):
        img, seg = ph.to_nifti()
        write_case(out, ph.case_id, img, seg)
    PHANTOM_VOCABULARY.save(out / "vocabulary.json")
    meta = dataset_json(
        phantom_label_table(cfg), n, name="VoxTellPhantoms",
        description="Synthetic CT-like torso phantoms (voxtell phantoms); labels drawn analytically, see voxtell/data/phantoms.py",
        licence="CC0", generator={"seed": seed, "start": start, "n": n, "adrenal_lesion_rate": cfg.adrenal_lesion_rate},
    )
    write_json_atomic(out / "dataset.json", meta)
    log.info("wrote %d phantoms to %s", n, out)
    return read_nnunet_dataset(out)
