"""Overlap and surface distances between a predicted and a reference mask.

Conventions (those of MONAI and DeepMind's surface-distance package, so numbers compare):
- Surface voxels: mask voxels with at least one 6-neighbour outside the mask (the image
  border counts as outside). Distances are between surface voxel centres, in mm, with the
  grid's voxel spacing (exact for orthogonal grids, rotated or not).
- HD95: the larger of the two directed 95th percentiles (pred -> ref, ref -> pred).
- Mean surface distance (MSD, symmetric): mean of both directed distance sets together.
- Dice of two empty masks is 1 (they agree); surface distances are undefined (null) when
  either mask is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_SIX = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class OverlapMetrics:
    dice: float
    hd95_mm: float | None
    msd_mm: float | None


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sørensen–Dice coefficient 2|A∩B| / (|A|+|B|); 1.0 when both are empty."""
    a, b = np.count_nonzero(pred), np.count_nonzero(ref)
    if a + b == 0:
        return 1.0
    return 2.0 * np.count_nonzero(pred & ref) / (a + b)


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (or on the array's border)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_SIX, border_value=0)


def directed_surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each pred surface voxel to the ref surface, and back.

    Call it on a crop holding both masks with one voxel of background around them: the
    distance transform is Euclidean, so nearest surface voxels inside the crop are exact.
    """
    sp, sr = surface(pred), surface(ref)
    to_ref = ndimage.distance_transform_edt(~sr, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return to_ref[sp], to_pred[sr]


def overlap_metrics(pred: np.ndarray, ref: np.ndarray, spacing: np.ndarray) -> OverlapMetrics:
    """Dice, HD95 and symmetric mean surface distance of two boolean masks on one grid."""
    d = dice(pred, ref)
    if not pred.any() or not ref.any():
        return OverlapMetrics(d, None, None)
    d_pr, d_rp = directed_surface_distances(pred, ref, spacing)
    hd95 = max(float(np.percentile(d_pr, 95)), float(np.percentile(d_rp, 95)))
    msd = float(np.concatenate([d_pr, d_rp]).mean())
    return OverlapMetrics(d, hd95, msd)
