"""Statistics of one study: its image, its mask folder, optional findings and references.

The mask folder is what the predictor writes: ``{prompt_id}.nii.gz`` per prompt plus
``manifest.json`` (study id, model, backend, pipeline version, prompts). The image is
read once; each mask is checked against the image grid from its header before its data
are read. Masks are independent, so ``workers > 1`` measures them in threads (reading
gzip and most numpy/scipy work release the GIL).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from voxtell import __version__
from voxtell.errors import InputError
from voxtell.io.nifti import nifti_stem, open_image, read_voxels
from voxtell.io.volume import check_header
from voxtell.prompts import normalize_prompt
from voxtell.prompts import prompt_id as make_prompt_id
from voxtell.stats.errors import GridMismatchError, ManifestError, MissingImageError
from voxtell.stats.flags import QCChecksConfig, organ_prompt_for, row_flags
from voxtell.stats.geometry import bounding_box, voxel_spacing
from voxtell.stats.measure import mask_statistics
from voxtell.stats.placement import body_mask, detect_modality, fraction_near, placement, series_sidecar
from voxtell.stats.reference import ReferenceMap, load_reference_map

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyStatsConfig:
    """How to measure a study.

    ``study_id`` overrides the manifest's; ``grid_atol_mm`` is how far two affines may
    differ (float32 round-off of NIfTI headers) and still count as one grid; ``checks``
    are the QC thresholds; ``modality`` overrides series.json (it picks the body threshold).
    """

    study_id: str | None = None
    workers: int = 1
    grid_atol_mm: float = 1e-3
    with_intensity: bool = True
    checks: QCChecksConfig = field(default_factory=QCChecksConfig)
    modality: str | None = None


@dataclass(frozen=True)
class StudyStats:
    """Rows of the statistics table for one study, plus file-level metadata."""

    study_id: str
    rows: list[dict[str, Any]]
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    """A NIfTI volume read once: its voxel array (original units) and affine."""

    array: np.ndarray
    affine: np.ndarray
    path: Path


def _open_nifti(path: Path, what: str):
    img = open_image(path, what, MissingImageError)
    return img, check_header(img.shape, img.affine, img.get_data_dtype(), f"{what} {path}").shape  # the shared volume rule


def load_volume(path: str | Path, what: str = "image") -> Volume:
    """Read a 3-D NIfTI (trailing singleton 4th axis allowed) in its stored units."""
    p = Path(path)
    img, shape = _open_nifti(p, what)
    return Volume(read_voxels(img, shape, what, MissingImageError), np.asarray(img.affine, dtype=np.float64), p)


def load_on_grid(path: str | Path, grid: Volume, what: str, atol_mm: float = 1e-3) -> np.ndarray:
    """Read a volume that must share ``grid``'s shape and affine (checked before reading data)."""
    p = Path(path)
    img, shape = _open_nifti(p, what)
    if tuple(shape) != tuple(grid.array.shape):
        raise GridMismatchError(
            f"{what} {p.name} has shape {tuple(shape)} but the image {grid.path.name} has {grid.array.shape}; "
            "masks must be written on the image's grid (resample the mask to the image first)"
        )
    if not np.allclose(img.affine, grid.affine, rtol=0, atol=atol_mm):
        raise GridMismatchError(
            f"{what} {p.name} has a different affine than the image {grid.path.name} "
            f"(largest difference {np.abs(img.affine - grid.affine).max():.4g} mm); "
            "masks must be written on the image's grid (resample the mask to the image first)"
        )
    return read_voxels(img, shape, what, MissingImageError)


def read_manifest(mask_dir: str | Path) -> dict[str, Any]:
    """The predictor's manifest.json; without one, every ``*.nii.gz`` is a prompt id."""
    d = Path(mask_dir)
    if not d.is_dir():
        raise MissingImageError(f"mask folder {d} does not exist; run the segment stage for this study first")
    path = d / "manifest.json"
    if not path.is_file():
        files = sorted(f for f in d.glob("*.nii.gz") if not f.name.startswith("."))
        log.warning("%s has no manifest.json; taking prompt ids from %d file names", d, len(files))
        return {"prompts": [{"prompt_id": nifti_stem(f), "file": f.name} for f in files]}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}; rerun the segment stage for this study") from exc
    prompts = manifest.get("prompts") if isinstance(manifest, dict) else None
    if not isinstance(prompts, list):
        raise ManifestError(f"{path} has no 'prompts' list; rerun the segment stage for this study")
    for n, entry in enumerate(prompts):
        if not isinstance(entry, dict) or not (entry.get("prompt_id") or entry.get("prompt")):
            raise ManifestError(f"{path}: prompts[{n}] needs 'prompt_id' or 'prompt'")
    return manifest


def load_findings(path: str | Path) -> dict[str, dict[str, Any]]:
    """Findings JSONL keyed by ``finding_id`` (read by the one findings reader)."""
    from voxtell.reports.output import read_findings_jsonl

    p = Path(path)
    if not p.is_file():
        raise InputError(f"findings file {p} does not exist; run the findings stage or drop --findings")
    out: dict[str, dict[str, Any]] = {}
    for n, obj in enumerate(read_findings_jsonl(p), start=1):
        if "finding_id" not in obj:
            raise InputError(f"{p}: finding {n} has no 'finding_id'; regenerate the findings file")
        out[str(obj["finding_id"])] = obj
    return out


def _mm_values(measurements: Any) -> list[float]:
    """Sizes (mm) from a finding's measurements: numbers, or dicts with a ``*mm`` value."""
    out: list[float] = []
    for m in measurements or []:
        if isinstance(m, (int, float)) and not isinstance(m, bool):
            out.append(float(m))
        elif isinstance(m, dict):
            for key, value in m.items():
                if not str(key).endswith("mm"):
                    continue
                values = value if isinstance(value, (list, tuple)) else [value]
                out.extend(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    return out


def report_diameter(finding: dict[str, Any] | None) -> float | None:
    """Largest measurement (mm) a finding reports, or None."""
    if not finding:
        return None
    values = _mm_values(finding.get("measurements_mm")) + _mm_values(finding.get("measurements"))
    return max(values) if values else None


def finding_of(entry: dict[str, Any], finding_map: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The finding a manifest prompt entry carries (contract C3), else the findings file's."""
    carried = entry.get("finding")
    if isinstance(carried, dict):
        return carried
    fid = entry.get("finding_id")
    return finding_map.get(str(fid)) if fid is not None else None


def finding_columns(finding: dict[str, Any] | None) -> dict[str, Any]:
    """The finding's fields as statistics columns (all null for a config prompt)."""
    if not finding:
        return {k: None for k in FINDING_COLUMNS}
    assertion = finding.get("assertion") or ("negated" if finding.get("negated") else "present")
    measurements = finding.get("measurements", finding.get("measurements_mm"))
    return {
        "sentence": finding.get("sentence"),
        "section": finding.get("section"),
        "concepts": [str(c) for c in finding.get("concepts") or []],
        "laterality": finding.get("laterality"),
        "assertion": assertion,
        "uncertain": None if finding.get("uncertain") is None else bool(finding.get("uncertain")),
        "measurements": None if measurements is None else json.dumps(measurements, sort_keys=True),
    }


FINDING_COLUMNS = ("sentence", "section", "concepts", "laterality", "assertion", "uncertain", "measurements")


def _centroid_index(stats: dict[str, Any], affine: np.ndarray) -> np.ndarray:
    lps = np.array([stats["centroid_x_mm"], stats["centroid_y_mm"], stats["centroid_z_mm"]], dtype=np.float64)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    return np.linalg.solve(affine[:3, :3], ras - affine[:3, 3])


def compute_study_stats(
    image: str | Path,
    masks: str | Path,
    *,
    findings: str | Path | dict[str, dict[str, Any]] | None = None,
    reference: str | Path | ReferenceMap | None = None,
    config: StudyStatsConfig = StudyStatsConfig(),
) -> StudyStats:
    """Measure every mask of a study; one row per manifest prompt entry, with its QC flags.

    Raises ``MissingImageError``, ``GridMismatchError``, ``NonBinaryMaskError``,
    ``ManifestError`` (all ``InputError``) for bad inputs; an empty mask is a row with
    ``empty = True``.
    """
    manifest = read_manifest(masks)
    study_id = config.study_id or manifest.get("study_id")
    if not study_id:
        raise ManifestError(f"{Path(masks) / 'manifest.json'} names no study_id; pass a study id explicitly")
    finding_map = load_findings(findings) if isinstance(findings, (str, Path)) else (findings or {})
    ref_map = load_reference_map(reference) if isinstance(reference, (str, Path)) else reference
    grid = load_volume(image, "image")
    model = manifest.get("model") or {}
    checks = config.checks
    sidecar = series_sidecar(grid.path)
    series_warnings = [str(w) for w in sidecar.get("warnings") or []]
    modality = (config.modality or detect_modality(grid.path, grid.array)).upper()
    body = body_mask(grid.array, grid.affine, modality)
    stage_warnings: list[str] = []
    if not body.mask.any():
        stage_warnings.append("no body found on the image: outside_body and wrong_side were not checked")
        body = None

    entries = []
    for entry in manifest["prompts"]:
        pid = entry.get("prompt_id") or make_prompt_id(entry["prompt"])
        entries.append((pid, entry, finding_of(entry, finding_map)))
    unique = list(dict.fromkeys(pid for pid, _, _ in entries))
    files = {pid: Path(masks) / (e.get("file") or f"{pid}.nii.gz") for pid, e, _ in reversed(entries)}
    by_text = {normalize_prompt(e.get("prompt") or ""): pid for pid, e, _ in entries if e.get("source") != "finding"}
    organ_of = {}
    for pid, entry, finding in entries:
        if finding and entry.get("source") == "finding":
            organ = organ_prompt_for(finding.get("concepts") or [], by_text, pid, checks)
            if organ is not None:
                organ_of.setdefault(pid, organ)
    organs: dict[str, np.ndarray] = {}
    ref_cache: dict[Path, np.ndarray] = {}

    ref_problems: dict[str, str] = {}  # prompt id -> why its reference was not used

    def measure(pid: str) -> dict[str, Any]:
        mask = load_on_grid(files[pid], grid, "mask", config.grid_atol_mm)
        ref = None
        spec = ref_map.lookup(pid) if ref_map is not None else None
        if spec is not None:
            try:  # a bad reference costs its prompt's Dice, never the study's rows
                if spec.file not in ref_cache:
                    ref_cache[spec.file] = load_on_grid(spec.file, grid, "reference", config.grid_atol_mm)
                data = ref_cache[spec.file]
                ref = (data == spec.label) if spec.label is not None else data
            except InputError as exc:
                ref_problems[pid] = f"reference not used ({type(exc).__name__}): {exc}"
        image_arr = grid.array if config.with_intensity else None
        out = mask_statistics(mask, grid.affine, image=image_arr, reference=ref, name=f"mask {files[pid].name}").as_dict()
        out.update(body_fraction=None, edge_fraction=None, midline_offset_mm=None, organ_prompt_id=None,
                   organ_fraction=None)
        box = bounding_box(mask) if not out["empty"] else None
        if box is not None:
            where = placement(mask, box, (out["centroid_x_mm"], out["centroid_y_mm"], out["centroid_z_mm"]),
                              _centroid_index(out, grid.affine), body)
            out.update(body_fraction=where.body_fraction, edge_fraction=where.edge_fraction,
                       midline_offset_mm=where.midline_offset_mm)
            organ = organs.get(organ_of.get(pid, ""))
            if organ is not None:
                out.update(organ_prompt_id=organ_of[pid], organ_fraction=fraction_near(
                    mask, box, organ, voxel_spacing(grid.affine), checks.organ_margin_mm))
        if pid in set(organ_of.values()):
            organs[pid] = np.asarray(mask) != 0
        return out

    # organs first, so that the findings measured after them can be placed in them
    first = [pid for pid in unique if pid in set(organ_of.values())]
    rest = [pid for pid in unique if pid not in set(first)]
    results: dict[str, dict[str, Any]] = {}
    for batch in (first, rest):
        if config.workers > 1 and len(batch) > 1:
            with ThreadPoolExecutor(max_workers=config.workers) as pool:
                results.update(zip(batch, pool.map(measure, batch)))
        else:
            results.update((pid, measure(pid)) for pid in batch)

    rows = []
    for pid, entry, finding in entries:
        stats = results[pid]
        finding_id = entry.get("finding_id") or (finding or {}).get("finding_id")
        rep = report_diameter(finding)
        longest = stats["longest_axial_diameter_mm"]
        row = {
            "study_id": str(study_id),
            "prompt_id": pid,
            "prompt": entry.get("prompt"),
            "source": entry.get("source"),
            "finding_id": None if finding_id is None else str(finding_id),
            **finding_columns(finding),
            "mask_path": str(files[pid]),
            "model_id": model.get("model_id"),
            "model_sha256": model.get("sha256"),
            "backend": manifest.get("backend"),
            "modality": modality,
            "pipeline_version": manifest.get("pipeline_version"),
            **stats,
            "report_diameter_mm": rep,
            "diameter_ratio": (longest / rep) if (rep and longest is not None) else None,
            "warnings": series_warnings + stage_warnings + ([ref_problems[pid]] if pid in ref_problems else []),
        }
        row["qc_flags"] = row_flags(row, checks)
        row["needs_review"] = bool(row["qc_flags"])
        rows.append(row)
    metadata = {
        "study_id": str(study_id),
        "pipeline_version": str(manifest.get("pipeline_version") or ""),
        "model_id": str(model.get("model_id") or ""),
        "model_sha256": str(model.get("sha256") or ""),
        "text_encoder": str(model.get("text_encoder") or ""),
        "backend": str(manifest.get("backend") or ""),
        "modality": modality,
        "stats_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    log.info("study %s: %d prompts measured, %d need review", study_id, len(rows), sum(r["needs_review"] for r in rows))
    return StudyStats(str(study_id), rows, metadata)
