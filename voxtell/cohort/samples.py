"""The samples table: one row per study (``study_id``, ``dicom`` or ``image``, optional
``report`` and ``reference``).

Study ids become folder names on every node, so they are restricted to a safe alphabet;
relative paths are resolved against the table's own folder, so a table can move together
with its data. The workflow also validates the table against
``workflow/schemas/samples.schema.yaml``; the checks here are the ones a JSON schema
cannot express (unique ids, exactly one image source) and apply without Snakemake too.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from voxtell.cohort.errors import SamplesError
from voxtell.cohort.layout import RESERVED_IDS, is_reserved

#: Allowed study ids: they name folders and Snakemake wildcards.
STUDY_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_STUDY_ID = re.compile(rf"^{STUDY_ID_PATTERN}$")
#: The same alphabet without the length bound (braces would clash with Snakemake wildcards).
STUDY_WILDCARD = r"[A-Za-z0-9][A-Za-z0-9._-]*"
COLUMNS = ("study_id", "dicom", "image", "report", "reference")
REQUIRED = ("study_id",)


@dataclass(frozen=True)
class Sample:
    """One study. Paths are resolved (relative to the working directory if the table's were)."""

    study_id: str
    dicom: str | None = None
    image: str | None = None
    report: str | None = None
    reference: str | None = None

    @property
    def source(self) -> str:
        """The study's image source: its DICOM folder or its NIfTI file."""
        return self.dicom or self.image  # type: ignore[return-value]

    @property
    def source_kind(self) -> str:
        return "dicom" if self.dicom else "image"


def _clean(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    text = str(value).strip()
    return text or None


def _resolve(path: str | None, base: Path | None) -> str | None:
    if path is None:
        return None
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and base is not None:
        p = base / p
    return os.path.normpath(p)


def _reference(value: str | None, dicom: str | None, base: Path | None) -> str | None:
    """``auto`` (RT objects in the study's DICOM folder; the default for DICOM studies, contract
    C5) and ``none`` stay words; anything else is a path."""
    if value is None:
        return "auto" if dicom else None
    if value.lower() in ("auto", "none"):
        return None if value.lower() == "none" else "auto"
    return _resolve(value, base)


def validate_samples(rows: Iterable[Mapping[str, object]], base_dir: str | os.PathLike | None = None,
                     source: str = "samples table") -> list[Sample]:
    """Check rows and turn them into ``Sample`` objects; every problem is listed at once."""
    base = Path(base_dir) if base_dir is not None else None
    problems: list[str] = []
    samples: list[Sample] = []
    seen: dict[str, int] = {}  # lower-cased: ids differing only in case share a folder on macOS/Windows
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        values = {k: _clean(row.get(k)) for k in COLUMNS}
        study_id = values["study_id"]
        where = f"{source} line {n}"
        if study_id is None:
            problems.append(f"{where}: study_id is empty")
            continue
        if not _STUDY_ID.match(study_id):
            problems.append(
                f"{where}: study_id {study_id[:60]!r} may only use letters, digits, '.', '_' and '-' "
                "(it names folders), starting with a letter or digit, at most 128 characters"
            )
            continue
        if is_reserved(study_id):
            problems.append(
                f"{where}: study_id {study_id!r} is a name the workflow uses for its own files "
                f"({', '.join(sorted(RESERVED_IDS))}); rename the study (e.g. {study_id}_1)"
            )
            continue
        if study_id.lower() in seen:
            problems.append(f"{where}: study_id {study_id!r} repeats line {seen[study_id.lower()]} "
                            "(ids are compared ignoring case, as some file systems do); ids must be unique")
            continue
        seen[study_id.lower()] = n
        if bool(values["dicom"]) == bool(values["image"]):
            problems.append(f"{where}: study {study_id!r} needs exactly one of 'dicom' (folder) or 'image' (NIfTI)")
            continue
        samples.append(
            Sample(
                study_id=study_id,
                dicom=_resolve(values["dicom"], base),
                image=_resolve(values["image"], base),
                report=_resolve(values["report"], base),
                reference=_reference(values["reference"], values["dicom"], base),
            )
        )
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SamplesError(f"{len(problems)} problem(s) in {source}:\n  {shown}{more}")
    return samples


def read_samples_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a tab-separated table as dicts; lines starting with '#' are comments."""
    path = Path(path)
    if not path.is_file():
        raise SamplesError(f"samples table {path} does not exist; set 'samples' in the config to a TSV file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = [(n, line) for n, line in enumerate(fh, start=1)
                     if line.strip() and not line.lstrip().startswith("#")]
    except UnicodeDecodeError as exc:
        raise SamplesError(f"samples table {path} is not UTF-8 text ({exc}); save it as UTF-8 TSV") from exc
    rows = list(csv.reader((line for _, line in lines), delimiter="\t"))
    if not rows:
        raise SamplesError(f"samples table {path} is empty; it needs a header line (study_id, dicom or image, ...)")
    header = [h.strip() for h in rows[0]]
    while header and header[-1] == "":  # a trailing tab after the last column name
        header.pop()
    if "" in header:
        raise SamplesError(f"samples table {path} has an empty column name in its header {header}; remove the "
                           "extra tab")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise SamplesError(f"samples table {path} lacks column(s) {missing}; its header is {header}")
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise SamplesError(f"samples table {path} has unknown column(s) {unknown}; allowed: {list(COLUMNS)}")
    out = []
    for (n, _), values in zip(lines[1:], rows[1:]):
        extra = [v for v in values[len(header):] if v.strip()]
        if extra:
            raise SamplesError(
                f"samples table {path} line {n} has {len(values)} tab-separated fields but the header names "
                f"{len(header)} ({header}); the extra value(s) {extra[:3]} need a column, or remove the extra tab(s)"
            )
        out.append(dict(zip(header, values[: len(header)])))
    return out


def load_samples(path: str | os.PathLike) -> list[Sample]:
    """Read and validate a samples TSV; relative paths are taken relative to its folder."""
    path = Path(path)
    return validate_samples(read_samples_rows(path), base_dir=path.parent, source=str(path))
