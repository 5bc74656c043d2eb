"""The demo cohort: synthetic DICOM studies, reports and ground truth for the workflow.

``voxtell.data.write_demo_cohort`` draws the phantoms; this module adds what the workflow
needs on top: a reference map per study in the format ``voxtell.stats`` reads (a binary
mask on the converted image's grid per fixed prompt, the union of the concept's labels,
and per report finding, the lesion its sentence describes) and a samples table whose
``reference`` column points at it, so the cohort table gets Dice against the ground truth.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

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


def lesion_mask(labels: np.ndarray, affine: np.ndarray, lesion: Mapping, lesions: Sequence[Mapping] = ()) -> np.ndarray:
    """The voxels of one lesion: the connected component of its label nearest its centre.

    A finding sentence describes one lesion, and two liver lesions share a label value, so
    its ground truth is the lesion's own component, not every voxel of the label. Lesions
    that touch (two mediastinal nodes) share a component; its voxels are split between
    them by distance to each centre relative to each diameter.
    """
    from nibabel.affines import apply_affine
    from scipy import ndimage

    label = int(lesion["label"])
    components, n = ndimage.label(labels == label, structure=np.ones((3, 3, 3), bool))
    mask = np.zeros(labels.shape, bool)
    if n == 0:
        return mask
    voxels = np.argwhere(components > 0)
    world = apply_affine(affine, voxels)
    centre = np.asarray(lesion["center_ras_mm"], float)
    owner = components[tuple(voxels.T)]
    inside = owner == owner[int(np.argmin(((world - centre) ** 2).sum(axis=1)))]
    voxels, world = voxels[inside], world[inside]

    def scaled(o: Mapping) -> np.ndarray:
        return np.linalg.norm(world - np.asarray(o["center_ras_mm"], float), axis=1) / max(float(o["diameter_mm"]), 1.0)

    rivals = [o for o in lesions if int(o["label"]) == label and not np.allclose(o["center_ras_mm"], centre)]
    if rivals:
        voxels = voxels[scaled(lesion) <= np.min([scaled(o) for o in rivals], axis=0)]
    mask[tuple(voxels.T)] = True
    return mask


def finding_lesions(report: str | os.PathLike, reference: Mapping, settings: Mapping | None = None
                    ) -> list[tuple[str, list[dict]]]:
    """(prompt, lesions) for each finding the workflow's findings stage extracts from a demo
    report that names a lesion. The report is parsed with the workflow's own findings
    settings, so each prompt is exactly the text that will be segmented. A sentence written
    for two lesions alike (two 12 mm nodules in one lobe) is one prompt for both."""
    from voxtell.cohort.stage_findings import findings_config
    from voxtell.reports import extract_findings, gets_mask, read_report

    lesions = reference.get("lesions", [])
    by_sentence: dict[str, list[dict]] = {}
    for f in reference.get("findings", []):
        if f.get("lesion") is not None:
            by_sentence.setdefault(f["sentence"].strip(), []).append(lesions[f["lesion"]])
    found = extract_findings(read_report(report), reference.get("study_id", ""), findings_config(dict(settings or {})))
    return [(f.prompt, by_sentence[f.sentence.strip()]) for f in found
            if f.sentence.strip() in by_sentence and gets_mask(f)[0]]


def _save_mask(mask: np.ndarray, img, path: Path) -> None:
    import nibabel as nib

    out = nib.Nifti1Image(mask.astype(np.uint8), img.affine, img.header)
    out.set_data_dtype(np.uint8)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))


def write_reference_map(ref_dir: str | os.PathLike, concepts: dict[str, list[int]], prompts: Sequence[str],
                        findings: Sequence[tuple[str, Sequence[Mapping]]] = (), lesions: Sequence[Mapping] = ()
                        ) -> dict:
    """Binary reference masks for ``prompts`` (the union of their concept's labels) and for
    finding prompts (the lesions of ``lesions`` each describes) from the study's label map,
    plus the map JSON."""
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
        _save_mask(np.isin(labels, values), img, ref_dir / name)
        mapping[prompt] = {"file": name}
    for prompt, described in findings:
        mask = np.zeros(labels.shape, bool)
        for lesion in described:
            mask |= lesion_mask(labels, img.affine, lesion, lesions)
        if not mask.any():
            log.warning("finding %r: its lesion is not in the label map of %s", prompt, ref_dir)
            continue
        name = f"{prompt_id(prompt)}.nii.gz"
        _save_mask(mask, img, ref_dir / name)
        mapping[prompt] = {"file": name}
    write_json_atomic(ref_dir / REFERENCE_MAP, mapping)
    return mapping


def run_demo_cohort(out_dir: str | os.PathLike, n_studies: int, seed: int, fixed_prompts: Sequence[str],
                    findings_settings: Mapping | None = None) -> Path:
    """Write the demo cohort under ``out_dir`` and return its ``samples.tsv``.

    With ``findings_settings`` (the workflow's ``findings`` config; None when findings are
    off) the reference map also covers the report's finding prompts.
    """
    import json

    from voxtell.data.demo import write_demo_cohort

    out = Path(out_dir)
    studies = write_demo_cohort(out, n_studies, seed=seed)
    rows = ["study_id\tdicom\treport\treference"]
    for s in studies:
        ref = json.loads((s.reference / "reference.json").read_text(encoding="utf-8"))
        found = finding_lesions(s.report, ref, findings_settings) if findings_settings is not None else []
        write_reference_map(s.reference, ref.get("concepts", {}), fixed_prompts, found, ref.get("lesions", []))
        rows.append(
            "\t".join([s.study_id, os.path.relpath(s.dicom_dir, out), os.path.relpath(s.report, out),
                       os.path.relpath(s.reference / REFERENCE_MAP, out)])
        )
    samples = out / "samples.tsv"
    write_text_atomic(samples, "\n".join(rows) + "\n")
    log.info("demo cohort: %d studies in %s", len(studies), out)
    return samples
