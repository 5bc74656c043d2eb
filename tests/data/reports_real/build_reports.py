"""How the real-report test set was made (run once; its output is committed).

Reads three public sources from local git snapshots and writes one ``.txt`` per report:

- MedPix 2.0 (CHILab1/MedPix-2.0, ``MedPix-2-0/Case_topic.json``): teaching cases of the
  NLM MedPix database, CT and MR; the case's own "History" and "Findings" text.
- DRAGON sample reports (DIAGNijmegen/dragon_sample_reports, ``english/*.md``): anonymised
  Radboudumc CT/MR/PET-CT reports translated to English; CC BY-NC-SA 4.0.
- The NegEx/ConText test kit (chapmanbe/negex, ``negex.python/Annotations-1-120.txt``):
  de-identified University of Pittsburgh reports; the radiology (RAD) ones, as the
  annotated sentences in report order; Apache License 2.0.

Usage: ``python build_reports.py MEDPIX_JSON DRAGON_REPO_DIR NEGEX_TSV`` (see PROVENANCE.md).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).parent
DRAGON_FILES = {  # unique radiology reports (several tasks share one report)
    "Task001_adhesion_clf.md": "mr_abdomen", "Task002_nodule_clf.md": "ct_thorax_abdomen",
    "Task003_kidney_clf.md": "ct_kidney", "Task005_recist_timeline_clf.md": "ct_petct_lymphoma",
    "Task007_nodule_diameter_presence_clf.md": "ct_chest_nodule", "Task008_pdac_size_presence_clf.md": "ct_pancreas",
}


def medpix(path: Path, n: int = 85, extra: int = 30) -> None:
    """``n`` cases spread over the id range, with 80-700 characters of findings (all that mention
    PET), then ``extra`` more from between them."""
    cases = sorted(json.loads(path.read_text()), key=lambda c: c["U_id"])
    usable = [c for c in cases if 80 <= len((c["Case"].get("Findings") or "").strip()) <= 700]
    pet = [c for c in usable if "PET" in c["Case"]["Findings"]]
    rest = [c for c in usable if c not in pet]
    step = len(rest) / (n - len(pet))
    chosen = pet + [rest[int(i * step)] for i in range(n - len(pet))]
    # a second draw (labelled later): the cases half-way between those of the first
    left = [c for c in rest if c not in chosen]
    chosen += [left[int((i + 0.5) * len(left) / extra)] for i in range(extra)]
    for c in chosen:
        mod = ("ct" if c["TAC"] else "") + ("mr" if c["MRI"] else "")
        hist = " ".join((c["Case"].get("History") or "").split())
        text = f"HISTORY: {hist}\n\nFINDINGS:\n{c['Case']['Findings'].strip()}\n"
        (OUT / f"medpix_{c['U_id']}_{mod}.txt").write_text(text, encoding="utf-8")


def dragon(repo: Path) -> None:
    for name, kind in DRAGON_FILES.items():
        md = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:english/{name}"], capture_output=True,
                            text=True, check=True).stdout
        block = md.split("```", 2)[1].lstrip("\n")
        (OUT / f"dragon_{name[:7].lower()}_{kind}.txt").write_text(block, encoding="utf-8")


def negex(path: Path) -> None:
    rows = list(csv.reader(path.open(encoding="latin-1"), delimiter="\t"))[1:]
    kinds: dict[str, str] = {}
    for r in rows:
        m = re.search(r"Classifier\s+[\w,]+\s+([A-Z]+)\s", r[2])
        if m:
            kinds.setdefault(r[0], m.group(1))
    for report in sorted({k for k, v in kinds.items() if v == "RAD"}, key=int):
        sentences: list[str] = []
        for r in rows:
            s = r[2].strip().strip('"')
            if r[0] == report and s.lower() not in [x.lower() for x in sentences]:
                sentences.append(s)
        # the test kit marks the annotated phrase in capitals; the report text is otherwise kept
        (OUT / f"negex_rad{int(report):03d}.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")


if __name__ == "__main__":
    medpix(Path(sys.argv[1]))
    dragon(Path(sys.argv[2]))
    negex(Path(sys.argv[3]))
