"""SUV statistics of a CT mask from the PET of the same frame of reference.

The PET (SUVbw, from ``voxtell.io.petct``) is resampled trilinearly onto the CT voxels of
the mask's bounding box (padded by the SUVpeak sphere), through both NIfTI affines: the
two series share the Frame of Reference, so their millimetres agree without registration.

* SUVmax, SUVmean: over the mask voxels;
* SUVpeak: the largest mean SUV of a 1 mL sphere (radius 6.2 mm) centred on a mask voxel,
  averaged over the CT voxels whose centres lie in the sphere (a PERCIST-style peak on the
  CT grid);
* MTV: volume of the mask voxels with SUV >= the threshold (absolute SUV, configurable).

Mask voxels outside the PET field of view make the figures null, with a warning: a partial
measurement would look complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxtell.io.suv import suv_range_warnings

PEAK_RADIUS_MM = float((3 * 1000.0 / (4 * np.pi)) ** (1 / 3))  # 1 mL sphere: 6.2035 mm


@dataclass(frozen=True)
class SuvConfig:
    """How SUV figures are computed; ``mtv_threshold_suv`` is an absolute SUV (2.5 is common for FDG)."""

    mtv_threshold_suv: float = 2.5
    peak_radius_mm: float = PEAK_RADIUS_MM


SUV_COLUMNS = ("suv_max", "suv_mean", "suv_peak", "mtv_ml")


def resample_onto(
    pet: np.ndarray, pet_affine: np.ndarray, grid_affine: np.ndarray, index_lo: np.ndarray, index_hi: np.ndarray
) -> np.ndarray:
    """PET values (trilinear) at the grid voxels ``index_lo..index_hi`` (inclusive); NaN outside the PET."""
    from scipy.ndimage import map_coordinates

    axes = [np.arange(lo, hi + 1) for lo, hi in zip(index_lo, index_hi)]
    ii, jj, kk = np.meshgrid(*axes, indexing="ij")
    vox = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)])
    to_pet = np.linalg.inv(pet_affine) @ grid_affine
    coords = (to_pet @ vox)[:3]
    values = map_coordinates(pet.astype(np.float64), coords, order=1, mode="nearest")
    shape = np.asarray(pet.shape[:3])[:, None]
    outside = np.any((coords < -0.5) | (coords > shape - 0.5), axis=0)
    values[outside] = np.nan
    return values.reshape(ii.shape)


def _sphere_offsets(grid_affine: np.ndarray, radius_mm: float) -> np.ndarray:
    spacing = np.linalg.norm(grid_affine[:3, :3], axis=0)
    reach = np.ceil(radius_mm / spacing).astype(int)
    grid = np.mgrid[-reach[0] : reach[0] + 1, -reach[1] : reach[1] + 1, -reach[2] : reach[2] + 1].reshape(3, -1)
    mm = grid_affine[:3, :3] @ grid
    return grid[:, np.linalg.norm(mm, axis=0) <= radius_mm + 1e-9].T


def suv_statistics(
    mask: np.ndarray, grid_affine: np.ndarray, pet: np.ndarray, pet_affine: np.ndarray, config: SuvConfig = SuvConfig()
) -> tuple[dict[str, float | None], list[str]]:
    """SUVmax/mean/peak and MTV of ``mask`` (on ``grid_affine``) from ``pet`` (SUV, on ``pet_affine``)."""
    empty: dict[str, float | None] = dict.fromkeys(SUV_COLUMNS)
    if not mask.any():
        return empty, []
    idx = np.argwhere(mask)
    offsets = _sphere_offsets(grid_affine, config.peak_radius_mm)
    pad = np.abs(offsets).max(axis=0)
    lo = idx.min(axis=0) - pad
    hi = idx.max(axis=0) + pad
    box = resample_onto(pet, pet_affine, grid_affine, lo, hi)
    local = idx - lo
    values = box[tuple(local.T)]
    if np.isnan(values).any():
        n = int(np.isnan(values).sum())
        return empty, [f"{n} of {len(values)} mask voxels lie outside the PET field of view; no SUV figures"]
    # SUVpeak: mean over the sphere around each mask voxel (sphere voxels outside the PET are left out)
    sums = np.zeros(len(local))
    counts = np.zeros(len(local))
    for off in offsets:
        v = box[tuple((local + off).T)]
        ok = ~np.isnan(v)
        sums[ok] += v[ok]
        counts[ok] += 1
    peak = float(np.max(sums / counts))
    voxel_ml = float(abs(np.linalg.det(grid_affine[:3, :3]))) / 1000.0
    stats = {
        "suv_max": float(values.max()),
        "suv_mean": float(values.mean()),
        "suv_peak": peak,
        "mtv_ml": float(np.count_nonzero(values >= config.mtv_threshold_suv) * voxel_ml),
    }
    return stats, suv_range_warnings(stats["suv_max"], "mask")


def pet_beside(image_path: str | Path) -> Path | None:
    """The PET converted beside a CT image by ``voxtell.io.petct`` (``pet/image.nii.gz``), if any."""
    from voxtell.io.petct import PET_DIR

    path = Path(image_path).parent / PET_DIR / "image.nii.gz"
    return path if path.is_file() else None


def add_suv_columns(rows: list[dict[str, Any]], image_path: str | Path, pet_path: str | Path | None,
                    config: SuvConfig = SuvConfig()) -> None:
    """Fill ``SUV_COLUMNS`` of every row (null without a PET) from its ``mask_path``; warnings go to the row."""
    import nibabel as nib

    for row in rows:
        row.update(dict.fromkeys(SUV_COLUMNS))
    if pet_path is None:
        return
    pet_img = nib.load(str(pet_path))
    pet = np.asarray(pet_img.dataobj, dtype=np.float64).reshape(pet_img.shape[:3])
    grid_affine = nib.load(str(image_path)).affine
    cache: dict[str, tuple[dict[str, float | None], list[str]]] = {}
    for row in rows:
        path = row.get("mask_path")
        if not path:
            continue
        if path not in cache:
            img = nib.load(path)
            mask = np.asarray(img.dataobj).reshape(img.shape[:3]) != 0
            cache[path] = suv_statistics(mask, grid_affine, pet, pet_img.affine, config)
        stats, warnings = cache[path]
        row.update(stats)
        if warnings:
            row["warnings"] = list(row.get("warnings") or []) + [f"PET: {w}" for w in warnings]
