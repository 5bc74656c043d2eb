"""Radiotherapy-style report text for a phantom, written from its ground truth.

The demo runs the whole report-driven pipeline, so its reports must look like the real
thing: sections, positive findings with sizes and sides, negations ("No pulmonary
nodules."), normal statements ("The spleen is unremarkable.") and an impression that
repeats the findings. Each positive finding sentence is recorded with the concept whose
label it refers to, so the demo can score the masks it gets back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxtell.data.phantoms import Lesion, Phantom

#: Lesion kind (label name) -> vocabulary concept name.
LESION_CONCEPT = {
    "lung_nodule": "lung nodule",
    "liver_lesion": "liver lesion",
    "lymph_node": "lymph node",
    "adrenal_lesion": "adrenal lesion",
}


@dataclass(frozen=True)
class ReportSentence:
    """A positive finding sentence, the concept it names and the lesion it describes (an
    index into ``Phantom.lesions``), so the demo can score the mask of each finding."""

    sentence: str
    concept: str
    section: str
    lesion: int | None = None


@dataclass(frozen=True)
class DemoReport:
    text: str
    findings: tuple[ReportSentence, ...]


def _a(number: int) -> str:
    """Article before a spoken number: "an 8 mm", "an 11 mm", "a 12 mm"."""
    return "an" if str(number).startswith("8") or number in (11, 18) or 80 <= number < 90 else "a"


def _finding_sentence(les: Lesion, rng: np.random.Generator) -> str:
    d = int(round(les.diameter_mm))
    a = _a(d)
    A = a.capitalize()
    if les.kind == "lung_nodule":
        forms = [f"There is {a} {d} mm solid nodule in the {les.location}.",
                 f"{A} {d} mm pulmonary nodule is seen in the {les.location}.",
                 f"Spiculated {d} mm nodule in the {les.location}, suspicious for malignancy."]
    elif les.kind == "liver_lesion":
        forms = [f"A hypodense lesion measuring {d} mm is present in the {les.location}.",
                 f"There is {a} {d} mm hypoattenuating liver lesion in the {les.location}, consistent with a metastasis.",
                 f"Focal liver lesion of {d} mm in the {les.location}."]
    elif les.kind == "lymph_node":
        forms = [f"Enlarged {les.location} lymph node measuring {d} mm in short axis.",
                 f"There is a pathologically enlarged {les.location} lymph node of {d} mm."]
    else:
        forms = [f"There is {a} {d} mm mass in the {les.location}.",
                 f"{A} {d} mm nodule of the {les.location} is noted, likely an adenoma."]
    return str(forms[int(rng.integers(len(forms)))])


def write_report(phantom: Phantom, study_id: str, seed: int = 0) -> DemoReport:
    """Report text for ``phantom``; deterministic in ``(seed, study_id)``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, *study_id.encode()]))
    by_kind: dict[str, list[tuple[int, Lesion]]] = {}
    for index, les in enumerate(phantom.lesions):
        by_kind.setdefault(les.kind, []).append((index, les))
    findings: list[ReportSentence] = []
    lines: list[str] = []

    def section(title: str, kind: str | None, negative: str, normal: str = "") -> None:
        sentences = []
        for index, les in by_kind.get(kind, []) if kind else []:
            s = _finding_sentence(les, rng)
            sentences.append(s)
            findings.append(ReportSentence(s, LESION_CONCEPT[les.kind], "findings", index))
        if not sentences:
            sentences.append(negative)
        if normal:
            sentences.append(normal)
        lines.append(f"{title}: " + " ".join(sentences))

    sx, _, sz = phantom.spacing
    header = [
        "CT CHEST AND UPPER ABDOMEN WITH CONTRAST (RADIOTHERAPY PLANNING)",
        "",
        "Clinical indication: Staging before radiotherapy; assess for metastatic disease.",
        f"Technique: Axial CT from the lung apices to the kidneys, {sz:.1f} mm slices, intravenous contrast.",
        "Comparison: None available.",
        "",
        "Findings:",
    ]
    section("Lungs", "lung_nodule", "No pulmonary nodules.", "No pleural effusion or pneumothorax.")
    section("Mediastinum and lymph nodes", "lymph_node", "No enlarged lymph nodes.", "The heart is normal in size.")
    section("Liver", "liver_lesion", "No focal liver lesion.", "The liver is normal in size.")
    lines.append("Spleen: The spleen is unremarkable.")
    lines.append("Kidneys: Both kidneys are normal without hydronephrosis.")
    section("Adrenal glands", "adrenal_lesion", "The adrenal glands are unremarkable.")
    lines.append("Bones: No suspicious osseous lesion of the spine.")
    impression = [s.sentence for s in findings] or ["No evidence of metastatic disease."]
    body = "\n".join(header + lines + ["", "Impression:"] + [f"{i}. {s}" for i, s in enumerate(impression, 1)])
    return DemoReport(body + "\n", tuple(findings))
