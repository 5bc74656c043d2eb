"""Vocabulary: which label values a prompt means, and the words a user may use for it.

Training data arrives as nnU-Net label maps (integers); the model is prompted with text.
The vocabulary joins the two. Each concept names one or more labels (a region: "kidneys"
is the union of the left and right kidney), lists the prompts used in training
(synonyms, paraphrases, left/right variants) and, separately, held-out paraphrases that
training never sees, so evaluation measures whether the model understands the words and
not just the strings. Negative prompts name structures that never appear in the data;
they teach the model to return an empty mask.

File format (JSON)::

    {"format_version": 1,
     "negative_prompts": ["brain", ...],
     "concepts": [{"name": "left kidney", "labels": ["kidney_left"] or [6],
                   "prompts": [...], "eval_prompts": [...], "kind": "organ"}]}

Labels may be given by value or by the name used in the dataset's ``dataset.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from voxtell.errors import InputError
from voxtell.io.atomic import write_json_atomic
from voxtell.prompts import normalize_prompt

FORMAT_VERSION = 1


class VocabularyError(InputError):
    """The vocabulary file is malformed or does not match the dataset's labels."""


@dataclass(frozen=True)
class Concept:
    """One promptable concept: a union of label values and its words."""

    name: str
    labels: tuple[int | str, ...]
    prompts: tuple[str, ...]
    eval_prompts: tuple[str, ...] = ()
    kind: str = "organ"

    @property
    def all_train_prompts(self) -> tuple[str, ...]:
        """The concept name is always a training prompt."""
        seen = dict.fromkeys([self.name, *self.prompts])
        return tuple(seen)


@dataclass(frozen=True)
class Vocabulary:
    concepts: tuple[Concept, ...]
    negative_prompts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [c.name for c in self.concepts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise VocabularyError(f"concept names must be unique; repeated: {dup}")
        owner: dict[str, str] = {}
        for c in self.concepts:
            for p in (*c.all_train_prompts, *c.eval_prompts):
                key = normalize_prompt(p)
                if owner.setdefault(key, c.name) != c.name:
                    raise VocabularyError(
                        f"prompt {p!r} belongs to both {owner[key]!r} and {c.name!r}; a prompt must mean one concept"
                    )
            leak = {normalize_prompt(p) for p in c.all_train_prompts} & {normalize_prompt(p) for p in c.eval_prompts}
            if leak:
                raise VocabularyError(f"concept {c.name!r}: held-out prompts also used in training: {sorted(leak)}")
        clash = {normalize_prompt(p) for p in self.negative_prompts} & set(owner)
        if clash:
            raise VocabularyError(f"negative prompts that are also concept prompts: {sorted(clash)}")

    def concept(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise VocabularyError(f"no concept {name!r} in the vocabulary (have: {[c.name for c in self.concepts]})")

    def all_prompts(self) -> list[str]:
        """Every prompt the vocabulary knows (train, held-out, negative): the embedding bank's keys."""
        out: list[str] = []
        for c in self.concepts:
            out += [*c.all_train_prompts, *c.eval_prompts]
        out += list(self.negative_prompts)
        return list(dict.fromkeys(out))

    def resolve(self, dataset_labels: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
        """Concept name -> label values present in the dataset's label table.

        Concepts none of whose labels the dataset has are left out (e.g. a concept held
        out from this dataset); names that the table does not know raise.
        """
        values = {int(v) for v in dataset_labels.values()}
        out: dict[str, tuple[int, ...]] = {}
        for c in self.concepts:
            vals = []
            for lab in c.labels:
                if isinstance(lab, str):
                    if lab in dataset_labels:
                        vals.append(int(dataset_labels[lab]))
                    elif lab not in KNOWN_OPTIONAL_NAMES:
                        raise VocabularyError(
                            f"concept {c.name!r} names label {lab!r}, which dataset.json does not define "
                            f"(labels: {sorted(dataset_labels)}); fix the vocabulary or the dataset"
                        )
                elif int(lab) in values:
                    vals.append(int(lab))
            vals = sorted(set(vals) - {0})
            if vals:
                out[c.name] = tuple(vals)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "negative_prompts": list(self.negative_prompts),
            "concepts": [
                {"name": c.name, "labels": list(c.labels), "kind": c.kind, "prompts": list(c.prompts),
                 "eval_prompts": list(c.eval_prompts)}
                for c in self.concepts
            ],
        }

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "vocabulary") -> "Vocabulary":
        if not isinstance(data, Mapping) or not isinstance(data.get("concepts"), list):
            raise VocabularyError(f"{source}: expected an object with a 'concepts' list")
        if int(data.get("format_version", FORMAT_VERSION)) != FORMAT_VERSION:
            raise VocabularyError(f"{source}: format_version {data.get('format_version')} is not supported (expected {FORMAT_VERSION})")
        concepts = []
        for i, item in enumerate(data["concepts"]):
            try:
                name = str(item["name"])
                labels = tuple(item["labels"])
            except (KeyError, TypeError) as exc:
                raise VocabularyError(f"{source}: concept #{i} needs 'name' and 'labels'") from exc
            if not labels:
                raise VocabularyError(f"{source}: concept {name!r} has no labels")
            for lab in labels:
                if not isinstance(lab, (int, str)) or isinstance(lab, bool):
                    raise VocabularyError(f"{source}: concept {name!r}: labels must be integers or label names, got {lab!r}")
            concepts.append(Concept(name=name, labels=labels, prompts=_strings(item.get("prompts", []), source),
                                    eval_prompts=_strings(item.get("eval_prompts", []), source),
                                    kind=str(item.get("kind", "organ"))))
        if not concepts:
            raise VocabularyError(f"{source}: the vocabulary has no concepts")
        return cls(tuple(concepts), _strings(data.get("negative_prompts", []), source))

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        if not path.is_file():
            raise VocabularyError(f"vocabulary file {path} does not exist; pass --vocabulary with a JSON vocabulary")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VocabularyError(f"vocabulary file {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=str(path))


def _strings(items: Sequence[Any], source: str) -> tuple[str, ...]:
    if isinstance(items, str) or not all(isinstance(s, str) and s.strip() for s in items):
        raise VocabularyError(f"{source}: prompt lists must be lists of non-empty strings")
    return tuple(items)


#: Label names that a dataset may legitimately lack (held-out concepts of the phantoms).
KNOWN_OPTIONAL_NAMES = frozenset({"adrenal_lesion"})


def _c(name, labels, prompts, eval_prompts, kind="organ") -> Concept:
    return Concept(name, tuple(labels), tuple(prompts), tuple(eval_prompts), kind)


#: The phantom vocabulary (config/phantom_vocabulary.json is written from it).
PHANTOM_VOCABULARY = Vocabulary(
    concepts=(
        _c("left lung", ["lung_left"],
           ["lung left", "left lung parenchyma", "left pulmonary lobe", "the left lung", "lung, left", "left hemithorax lung",
            "sinistral lung", "left lung lobes"],
           ["left-sided lung", "lung on the left side"]),
        _c("right lung", ["lung_right"],
           ["lung right", "right lung parenchyma", "right pulmonary lobe", "the right lung", "lung, right",
            "right hemithorax lung", "dextral lung", "right lung lobes"],
           ["right-sided lung", "lung on the right side"]),
        _c("lungs", ["lung_left", "lung_right"],
           ["both lungs", "lung", "pulmonary parenchyma", "bilateral lungs", "the lungs", "lung fields"],
           ["left and right lung", "pulmonary tissue"]),
        _c("liver", ["liver", "liver_lesion"],
           ["hepatic parenchyma", "the liver", "hepar", "liver parenchyma", "whole liver", "hepatic organ"],
           ["liver organ", "the hepatic gland"]),
        _c("spleen", ["spleen"],
           ["splenic parenchyma", "the spleen", "lien", "splenic organ", "whole spleen"],
           ["spleen organ", "the splenic tissue"]),
        _c("left kidney", ["kidney_left"],
           ["kidney left", "left renal parenchyma", "the left kidney", "kidney, left", "left renal organ",
            "sinistral kidney", "left ren"],
           ["left-sided kidney", "kidney on the left side"]),
        _c("right kidney", ["kidney_right"],
           ["kidney right", "right renal parenchyma", "the right kidney", "kidney, right", "right renal organ",
            "dextral kidney", "right ren"],
           ["right-sided kidney", "kidney on the right side"]),
        _c("kidneys", ["kidney_left", "kidney_right"],
           ["both kidneys", "kidney", "renal parenchyma", "bilateral kidneys", "the kidneys"],
           ["left and right kidney", "renal organs"]),
        _c("spine", ["spine"],
           ["vertebral column", "vertebrae", "vertebral bodies", "spinal column", "the spine", "thoracolumbar spine"],
           ["backbone", "vertebral body column"]),
        _c("aorta", ["aorta"],
           ["aortic lumen", "the aorta", "descending aorta", "abdominal aorta", "thoracic aorta", "aortic vessel"],
           ["main artery", "aorta vessel"]),
        _c("body", ["body", "lung_left", "lung_right", "liver", "spleen", "kidney_left", "kidney_right", "spine", "aorta",
                    "lung_nodule", "liver_lesion", "lymph_node", "adrenal_lesion"],
           ["body outline", "external contour", "patient body", "skin contour", "whole body"],
           ["body contour", "outer body surface"]),
        _c("lung nodule", ["lung_nodule"],
           ["pulmonary nodule", "lung nodules", "pulmonary nodules", "nodule in the lung", "lung lesion",
            "pulmonary lesion", "spiculated nodule", "pulmonary mass"],
           ["nodular lung opacity", "lung metastasis"], kind="lesion"),
        _c("liver lesion", ["liver_lesion"],
           ["hepatic lesion", "liver lesions", "hypodense liver lesion", "liver metastasis", "hepatic metastases",
            "focal liver lesion", "liver mass"],
           ["hypoattenuating hepatic lesion", "lesion in the liver"], kind="lesion"),
        _c("lymph node", ["lymph_node"],
           ["lymph nodes", "enlarged lymph node", "lymphadenopathy", "nodal metastasis", "para-aortic lymph node",
            "mediastinal lymph node", "pathologic lymph nodes"],
           ["enlarged nodes", "swollen lymph node"], kind="lesion"),
        _c("adrenal lesion", ["adrenal_lesion"],
           ["adrenal mass", "adrenal nodule", "adrenal adenoma", "adrenal metastasis", "lesion of the adrenal gland",
            "adrenal tumor"],
           ["suprarenal mass", "adrenal gland lesion"], kind="lesion"),
    ),
    negative_prompts=("brain", "urinary bladder", "prostate", "thyroid gland", "femur", "left eye", "uterus",
                      "cerebellum", "right femoral head", "gallbladder stone"),
)
