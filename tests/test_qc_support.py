"""The demo cohort segmented by the demo model, shared by the QC tests (built once per session).

Real pieces throughout: the demo's phantom studies, reports and ground truth
(``voxtell.cohort.demo``), the findings extractor, the predictor with ``models/demo-small``
on the CPU, and the statistics stage. The image is the phantom written on the grid dcm2niix
gives its DICOM series (``voxtell.data.demo.flip_rows``), the grid of the reference masks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "demo-small"
FIXED = ["liver", "spleen", "left kidney", "right kidney", "aorta", "left lung"]
SETTINGS = {"vocabulary": None, "spacy_model": None, "keep_negated": True, "expand_abbreviations": True,
            "max_chars": 200000}
N_STUDIES = 4

_CACHE: dict[str, "DemoCohort"] = {}


@dataclass(frozen=True)
class DemoStudy:
    study_id: str
    image: Path
    masks: Path
    reference: Path
    findings: Path


@dataclass(frozen=True)
class DemoCohort:
    root: Path
    studies: list[DemoStudy]


def demo_cohort(tmp_path_factory) -> DemoCohort:
    """The segmented demo cohort (4 studies, seed 0), built on first use in this session."""
    if "demo" not in _CACHE:
        _CACHE["demo"] = _build(tmp_path_factory.mktemp("qc_demo"))
    return _CACHE["demo"]


def _build(root: Path) -> DemoCohort:
    from voxtell.cohort.demo import run_demo_cohort
    from voxtell.cohort.stage_findings import findings_config
    from voxtell.data.demo import flip_rows
    from voxtell.data.phantoms import PhantomConfig, generate_phantom
    from voxtell.inference.predictor import Predictor, PredictorConfig
    from voxtell.reports import extract_findings, gets_mask, read_report

    run_demo_cohort(root / "demo", N_STUDIES, seed=0, fixed_prompts=FIXED, findings_settings=SETTINGS)
    predictor = Predictor.from_model_dir(MODEL, PredictorConfig(device="cpu", progress=False))
    studies = []
    for i in range(N_STUDIES):
        sid = f"demo{i + 1:03d}"
        ph = generate_phantom(0, i, PhantomConfig(), case_id=sid)
        data, affine = flip_rows(ph.image.astype(np.int16), ph.affine)
        image = root / "convert" / sid / "image.nii.gz"
        image.parent.mkdir(parents=True)
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, 1)
        img.set_sform(affine, 1)
        nib.save(img, image)
        (image.parent / "series.json").write_text(json.dumps({"modality": "CT", "warnings": []}))
        found = [f.to_dict() for f in extract_findings(read_report(root / "demo" / "reports" / f"{sid}.txt"), sid,
                                                       findings_config(SETTINGS))]
        findings = root / "findings" / sid / "findings.jsonl"
        findings.parent.mkdir(parents=True)
        findings.write_text("".join(json.dumps(f) + "\n" for f in found))
        prompts = [{"prompt": p, "source": "config"} for p in FIXED]
        prompts += [{"prompt": f["prompt"], "source": "finding", "finding_id": f["finding_id"], "finding": f}
                    for f in found if gets_mask(f)[0]]
        masks = root / "segment" / sid
        predictor.predict_to_folder(str(image), prompts, masks, study_id=sid)
        studies.append(DemoStudy(sid, image, masks, root / "demo" / "reference" / sid / "reference_map.json", findings))
    return DemoCohort(root, studies)
