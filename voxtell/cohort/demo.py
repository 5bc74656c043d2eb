"""The demo cohort: synthetic DICOM studies, reports and ground truth for the workflow.

``voxtell.data.write_demo_cohort`` draws the phantoms; this module adds what the workflow
needs on top: a reference map per study in the format ``voxtell.stats`` reads (one
binary mask per fixed prompt, the union of the concept's labels, on the converted image's
grid) and a samples table whose ``reference`` column points at it, so the cohort table
gets Dice against the ground truth.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from voxtell.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from voxtell.prompts import normalize_prompt, prompt_id

log = logging.getLogger(__name__)

REFERENCE_MAP = "reference_map.json"


def _concept_of_prompt() -> dict[str, str]:
    from voxtell.data.vocabulary import PHANTOM_VOCABULARY

    table: dict[str, str] = {}
    for c in PHANTOM_VOCABULARY.concepts:
        for p in (c.name, *c.prompts, *c.eval_prompts):
            table.setdefault(normalize_prompt(p), c.name)
    return table


def write_reference_map(ref_dir: str | os.PathLike, concepts: dict[str, list[int]], prompts: Sequence[str]) -> dict:
    """Binary reference masks for ``prompts`` from the study's label map, plus the map JSON."""
    import nibabel as nib

    ref_dir = Path(ref_dir)
    img = nib.load(str(ref_dir / "labels.nii.gz"))
    labels = np.asarray(img.dataobj)
    lookup = _concept_of_prompt()
    mapping: dict[str, dict[str, str]] = {}
    for prompt in prompts:
        concept = lookup.get(normalize_prompt(prompt))
        values = concepts.get(concept or "", [])
        if not values:
            log.info("no ground truth for prompt %r in %s", prompt, ref_dir)
            continue
        name = f"{prompt_id(prompt)}.nii.gz"
        mask = np.isin(labels, values).astype(np.uint8)
        out = nib.Nifti1Image(mask, img.affine, img.header)
        out.set_data_dtype(np.uint8)
        with atomic_path(ref_dir / name) as tmp:
            nib.save(out, str(tmp))
        mapping[prompt] = {"file": name}
    write_json_atomic(ref_dir / REFERENCE_MAP, mapping)
    return mapping


def run_demo_cohort(out_dir: str | os.PathLike, n_studies: int, seed: int, fixed_prompts: Sequence[str]) -> Path:
    """Write the demo cohort under ``out_dir`` and return its ``samples.tsv``."""
    import json

    from voxtell.data.demo import write_demo_cohort

    out = Path(out_dir)
    studies = write_demo_cohort(out, n_studies, seed=seed)
    rows = ["study_id\tdicom\treport\treference"]
    for s in studies:
        ref = json.loads((s.reference / "reference.json").read_text(encoding="utf-8"))
        write_reference_map(s.reference, ref.get("concepts", {}), fixed_prompts)
        rows.append(
            "\t".join([s.study_id, os.path.relpath(s.dicom_dir, out), os.path.relpath(s.report, out),
                       os.path.relpath(s.reference / REFERENCE_MAP, out)])
        )
    samples = out / "samples.tsv"
    write_text_atomic(samples, "\n".join(rows) + "\n")
    log.info("demo cohort: %d studies in %s", len(studies), out)
    return samples
