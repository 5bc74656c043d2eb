"""Demo cohort: DICOM studies + reports + ground truth, written from phantoms.

The demo has to exercise the real pipeline end to end (DICOM discovery, dcm2niix,
report parsing, embedding, segmentation, statistics), and still be scored against known
truth. Layout under ``out_dir``::

    dicom/{study}/IM*.dcm              one axial CT series per study (fake patient tags)
    reports/{study}.txt                radiotherapy-style report (findings, negations, normals)
    reference/{study}/labels.nii.gz    label map on the grid dcm2niix produces from the series
    reference/{study}/reference.json   concept -> label values; finding sentence -> concept and
                                       the lesion it describes (label value, centre in mm)
    samples.tsv                        study_id, dicom, report, reference
    vocabulary.json                    the phantom vocabulary

The reference grid: dcm2niix writes an axial series as the stored (i, j, k) array with the
row axis j flipped, so the label map is written with j flipped and the matching affine;
``tests/test_phantoms_demo.py`` checks this against a real dcm2niix conversion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxtell.data.phantoms import LABELS, PhantomConfig, generate_phantom
from voxtell.data.reports import write_report
from voxtell.data.vocabulary import PHANTOM_VOCABULARY
from voxtell.io.atomic import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoStudy:
    study_id: str
    dicom_dir: Path
    report: Path
    reference: Path


def flip_rows(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same volume with the j (row) axis reversed, as dcm2niix stores axial series."""
    flip = np.eye(4)
    flip[1, 1] = -1.0
    flip[1, 3] = array.shape[1] - 1
    return np.ascontiguousarray(array[:, ::-1, :]), affine @ flip


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_demo_cohort(out_dir: str | Path, n: int, seed: int = 0, config: PhantomConfig | None = None,
                      prefix: str = "demo") -> list[DemoStudy]:
    """Write ``n`` demo studies; the same arguments give the same images, reports and truth."""
    import nibabel as nib

    from voxtell.io.dicom_write import write_dicom_series

    out = Path(out_dir)
    cfg = config or PhantomConfig()
    studies: list[DemoStudy] = []
    concept_labels = PHANTOM_VOCABULARY.resolve(LABELS)
    for i in tqdm(range(n), desc="demo studies", unit="study", disable=n < 2):
        study = f"{prefix}{i + 1:03d}"
        ph = generate_phantom(seed, i, cfg, case_id=study)
        dicom_dir = out / "dicom" / study
        if dicom_dir.exists():
            for old in dicom_dir.glob("*.dcm"):
                old.unlink()
        write_dicom_series(
            ph.image.astype(np.float32), ph.affine, dicom_dir, modality="CT",
            study_uid=_uid("study", seed, study), series_uid=_uid("series", seed, study),
            frame_of_reference_uid=_uid("frame", seed, study), series_description="Phantom CT chest/abdomen",
            patient={"PatientName": f"Phantom^{study}", "PatientID": f"PHANTOM-{seed}-{i + 1:03d}"},
        )
        report = write_report(ph, study, seed)
        report_path = out / "reports" / f"{study}.txt"
        write_text_atomic(report_path, report.text)
        ref_dir = out / "reference" / study
        labels, affine = flip_rows(ph.labels, ph.affine)
        img = nib.Nifti1Image(labels, affine)
        img.set_qform(affine, 1)
        img.set_sform(affine, 1)
        with atomic_path(ref_dir / "labels.nii.gz") as tmp:
            nib.save(img, tmp)
        present = ph.label_values()
        write_json_atomic(ref_dir / "reference.json", {
            "study_id": study,
            "label_map": "labels.nii.gz",
            "concepts": {c: list(v) for c, v in concept_labels.items() if set(v) & present},
            "findings": [{"sentence": f.sentence, "concept": f.concept, "labels": list(concept_labels.get(f.concept, ())),
                          "lesion": f.lesion} for f in report.findings],
            "lesions": [{"kind": les.kind, "label": LABELS[les.kind], "side": les.side, "location": les.location,
                         "diameter_mm": les.diameter_mm, "center_ras_mm": [round(float(v), 2) for v in les.center_ras_mm]}
                        for les in ph.lesions],
        })
        studies.append(DemoStudy(study, dicom_dir, report_path, ref_dir))
    rows = ["study_id\tdicom\treport\treference"]
    rows += [f"{s.study_id}\tdicom/{s.study_id}\treports/{s.study_id}.txt\treference/{s.study_id}" for s in studies]
    write_text_atomic(out / "samples.tsv", "\n".join(rows) + "\n")
    PHANTOM_VOCABULARY.save(out / "vocabulary.json")
    log.info("wrote %d demo studies to %s", n, out)
    return studies
