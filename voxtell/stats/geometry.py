"""Patient coordinates and RECIST-style diameters of a binary mask.

Convention of every coordinate this package writes: DICOM patient coordinates (LPS), in
millimetres: +x towards the patient's left, +y posterior, +z superior. NIfTI affines map
voxel indices to RAS (+x right, +y anterior), so x and y change sign.

Diameters are measured on the slices of the voxel grid that are closest to axial (the
voxel axis most aligned with the patient's superior axis is the slice axis), in
millimetres of the true in-plane geometry (anisotropic, oblique and sheared grids
included). The outline of a slice's mask is the set of mid-points of its boundary
pixels' edges, i.e. the contour a marching-squares outline at level 0.5 passes through,
so a disc of radius r measures 2r, not 2r minus one pixel.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """Flip x and y of (..., 3) RAS points (or LPS to RAS: the map is its own inverse)."""
    return np.asarray(points, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])


def voxel_volume_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in millilitres (|det| of the 3x3 part, mm^3 / 1000)."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])) / 1000.0)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Spacing of each voxel axis in mm (norms of the affine's columns)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def axial_axis(affine: np.ndarray) -> int:
    """Index of the voxel axis whose direction is closest to the patient's S axis."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(cols[2]) / np.linalg.norm(cols, axis=0)
    return int(np.argmax(cosines))


def is_axis_aligned(affine: np.ndarray, tol: float = 1e-6) -> bool:
    """True when every voxel axis runs along one patient axis (no obliquity)."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = np.abs(cols) / np.linalg.norm(cols, axis=0)
    return bool(np.all((unit < tol) | (unit > 1 - tol)))


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Index bounding box of the nonzero voxels (``None`` when empty), in two passes.

    The first pass reduces over the last axis of the whole volume; the second only scans
    the (small) in-plane box, which keeps this at about one read of the mask.
    """
    plane = mask.any(axis=2)
    rows = np.flatnonzero(plane.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(plane.any(axis=0))
    sub = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1, :]
    deps = np.flatnonzero(sub.any(axis=(0, 1)))
    return (
        slice(int(rows[0]), int(rows[-1]) + 1),
        slice(int(cols[0]), int(cols[-1]) + 1),
        slice(int(deps[0]), int(deps[-1]) + 1),
    )


def union_box(
    a: tuple[slice, ...] | None, b: tuple[slice, ...] | None, shape: tuple[int, ...], pad: int = 0
) -> tuple[slice, slice, slice] | None:
    """Smallest box holding both boxes, grown by ``pad`` voxels and clipped to ``shape``."""
    boxes = [x for x in (a, b) if x is not None]
    if not boxes:
        return None
    return tuple(  # type: ignore[return-value]
        slice(max(min(x[d].start for x in boxes) - pad, 0), min(max(x[d].stop for x in boxes) + pad, shape[d]))
        for d in range(3)
    )


def world_extent_lps(
    crop: np.ndarray, offset: tuple[int, int, int], affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS box (min, max) of the mask's voxel centres, exact for any affine.

    For grids without obliquity the corners of the index box suffice. Otherwise a linear
    function over a voxel set peaks on a voxel with a 6-neighbour outside the set, so
    only the mask's surface voxels are transformed.
    """
    aff = np.asarray(affine, dtype=np.float64)
    if is_axis_aligned(aff):
        lo = np.asarray(offset, dtype=np.float64)
        hi = lo + np.asarray(crop.shape, dtype=np.float64) - 1
        pts = np.array(list(itertools.product(*zip(lo, hi))), dtype=np.float64)
    else:
        surface = crop & ~ndimage.binary_erosion(crop, border_value=0)
        pts = np.argwhere(surface).astype(np.float64) + np.asarray(offset, dtype=np.float64)
    world = ras_to_lps(pts @ aff[:3, :3].T + aff[:3, 3])
    return world.min(axis=0), world.max(axis=0)


def centroid_lps(crop: np.ndarray, offset: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """Centre of mass of the mask's voxel centres in LPS mm (from per-axis voxel counts)."""
    aff = np.asarray(affine, dtype=np.float64)
    n = np.count_nonzero(crop)
    mean_index = np.empty(3)
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(crop, axis=others)
        mean_index[axis] = offset[axis] + float(np.dot(np.arange(counts.size), counts)) / n
    return ras_to_lps(aff[:3, :3] @ mean_index + aff[:3, 3])


@dataclass(frozen=True)
class AxialDiameters:
    """Longest in-plane diameter, its perpendicular width and the slice it lies on."""

    longest_mm: float
    perpendicular_mm: float
    slice_axis: int
    slice_index: int  # index along ``slice_axis`` in the full grid


def axial_diameters(crop: np.ndarray, offset: tuple[int, int, int], affine: np.ndarray) -> AxialDiameters | None:
    """RECIST-style long axis and its perpendicular on the slice where the long axis is longest.

    The long axis is the largest distance between two outline points of one slice (the
    diameter of the outline's convex hull); the perpendicular is the mask's width on that
    slice measured at right angles to the long axis. Only the first and last pixel of each
    pixel row can be hull vertices (every other pixel lies between them), so a slice
    costs two points per row, and slices are visited by decreasing upper bound (their
    2-D box diagonal) so that most slices of a large organ are never hulled.
    """
    ax = axial_axis(affine)
    plane_axes = [a for a in range(3) if a != ax]
    aff = np.asarray(affine, dtype=np.float64)
    u, v = aff[:3, plane_axes[0]], aff[:3, plane_axes[1]]
    e1 = u / np.linalg.norm(u)
    v_perp = v - np.dot(v, e1) * e1
    e2 = v_perp / np.linalg.norm(v_perp)
    to_plane = np.array([[np.dot(u, e1), np.dot(v, e1)], [np.dot(u, e2), np.dot(v, e2)]])  # index -> mm

    vol = np.moveaxis(crop, ax, 0)  # (slice, a, b) with a, b = plane_axes in order
    n_b = vol.shape[2]
    has = vol.any(axis=2)
    if not has.any():
        return None
    first = np.argmax(vol, axis=2)
    last = n_b - 1 - np.argmax(vol[:, :, ::-1], axis=2)
    s_idx, a_idx = np.nonzero(has)  # sorted by slice
    b_lo, b_hi = first[s_idx, a_idx], last[s_idx, a_idx]
    starts = np.flatnonzero(np.r_[True, s_idx[1:] != s_idx[:-1]])
    stops = np.r_[starts[1:], s_idx.size]

    # 2-D upper bound per slice: the diagonal of its index box, in mm
    a_ext = np.maximum.reduceat(a_idx, starts) - np.minimum.reduceat(a_idx, starts) + 1.0
    b_ext = np.maximum.reduceat(b_hi, starts) - np.minimum.reduceat(b_lo, starts) + 1.0
    col_a, col_b = np.abs(to_plane[:, 0]), np.abs(to_plane[:, 1])
    bounds = np.hypot(a_ext * col_a[0] + b_ext * col_b[0], a_ext * col_a[1] + b_ext * col_b[1])
    order = np.argsort(bounds)[::-1]

    half = np.array([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]])
    best: tuple[float, float, int] | None = None
    for i in order:
        if best is not None and bounds[i] <= best[0]:
            break
        sl = slice(starts[i], stops[i])
        rows = np.concatenate([a_idx[sl], a_idx[sl]]).astype(np.float64)
        cols = np.concatenate([b_lo[sl], b_hi[sl]]).astype(np.float64)
        centres = np.stack([rows, cols], axis=1)
        pts = (centres[:, None, :] + half[None]).reshape(-1, 2) @ to_plane.T
        longest, perpendicular = _hull_diameter(pts)
        if best is None or longest > best[0]:
            best = (longest, perpendicular, int(s_idx[starts[i]]))
    assert best is not None
    return AxialDiameters(best[0], best[1], ax, best[2] + offset[ax])


def _hull_diameter(pts: np.ndarray) -> tuple[float, float]:
    """Largest pairwise distance of 2-D points and the width perpendicular to it."""
    if len(pts) < 2:
        return 0.0, 0.0
    try:
        hull = pts[ConvexHull(pts).vertices] if len(pts) > 3 else pts
    except QhullError:  # degenerate (collinear) outline: its two extreme points suffice
        centred = pts - pts.mean(axis=0)
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        proj = centred @ axis
        hull = pts[[int(np.argmin(proj)), int(np.argmax(proj))]]
    diff = hull[:, None, :] - hull[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    longest = float(np.sqrt(d2[i, j]))
    direction = diff[i, j] / longest
    normal = np.array([-direction[1], direction[0]])
    proj = hull @ normal
    return longest, float(proj.max() - proj.min())
