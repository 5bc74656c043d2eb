"""Statistics of one binary mask on its image: geometry, shape, intensity, agreement.

Everything is computed on the mask's bounding-box crop (with the reference's box when
there is one), so a small lesion in a 512x512x300 CT costs little more than reading the
mask. Coordinates are DICOM LPS millimetres (see ``voxtell.stats.geometry``); intensities
are the image's stored values after NIfTI scaling (HU for CT, SUV where the converter
wrote SUV, arbitrary units for MR).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from voxtell.stats.errors import GridMismatchError, NonBinaryMaskError
from voxtell.stats.geometry import (
    axial_diameters,
    bounding_box,
    centroid_lps,
    union_box,
    voxel_spacing,
    voxel_volume_ml,
    world_extent_lps,
)
from voxtell.stats.surface import overlap_metrics

_TWENTY_SIX = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class MaskStats:
    """One mask's statistics; ``None`` where a value is undefined (empty mask, no image)."""

    empty: bool
    voxel_count: int
    volume_ml: float
    bbox_min_x_mm: float | None = None
    bbox_min_y_mm: float | None = None
    bbox_min_z_mm: float | None = None
    bbox_max_x_mm: float | None = None
    bbox_max_y_mm: float | None = None
    bbox_max_z_mm: float | None = None
    centroid_x_mm: float | None = None
    centroid_y_mm: float | None = None
    centroid_z_mm: float | None = None
    n_components: int = 0
    largest_component_ml: float | None = None
    second_component_ml: float | None = None
    equivalent_diameter_mm: float | None = None
    longest_axial_diameter_mm: float | None = None
    perpendicular_diameter_mm: float | None = None
    intensity_mean: float | None = None
    intensity_std: float | None = None
    intensity_min: float | None = None
    intensity_p05: float | None = None
    intensity_median: float | None = None
    intensity_p95: float | None = None
    intensity_max: float | None = None
    dice: float | None = None
    hd95_mm: float | None = None
    msd_mm: float | None = None
    reference_volume_ml: float | None = None
    volume_difference_ml: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def as_binary(array: np.ndarray, name: str = "mask") -> np.ndarray:
    """Boolean view (uint8/int8: no copy) of a 0/1 array; ``NonBinaryMaskError`` otherwise."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr
    if arr.dtype in (np.uint8, np.int8):
        if arr.size and (arr.max() > 1 or (arr.dtype == np.int8 and arr.min() < 0)):
            bad = np.unique(arr[(arr != 0) & (arr != 1)])[:5]
            raise NonBinaryMaskError(
                f"{name} holds values {bad.tolist()} besides 0 and 1; pass a binary mask "
                "(for a label map, map the prompt to one label value in the reference mapping)"
            )
        return arr.view(bool)
    bad_sel = (arr != 0) & (arr != 1)
    if bad_sel.any():
        bad = np.unique(arr[bad_sel])[:5]
        raise NonBinaryMaskError(
            f"{name} holds values {bad.tolist()} besides 0 and 1; pass a binary mask "
            "(for a label map, map the prompt to one label value in the reference mapping)"
        )
    return arr != 0


def mask_statistics(
    mask: np.ndarray,
    affine: np.ndarray,
    image: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    name: str = "mask",
) -> MaskStats:
    """Statistics of a binary ``mask`` (array on the grid of ``affine``).

    ``image`` (same shape) adds intensity statistics; ``reference`` (same shape, binary)
    adds Dice, HD95, mean surface distance and the volume difference (mask minus
    reference, mL). An empty mask gives ``empty=True`` with counts of zero, not an error.
    Binarity is checked on the bounding-box crop only: any nonzero value, 2 or NaN
    included, lies inside the box, so one pass over the full volume suffices.
    """
    m = np.asarray(mask)
    if image is not None and image.shape != m.shape:
        raise GridMismatchError(f"{name} shape {m.shape} differs from image shape {image.shape}")
    ref = None
    if reference is not None:
        ref = np.asarray(reference)
        if ref.shape != m.shape:
            raise GridMismatchError(f"reference shape {ref.shape} differs from {name} shape {m.shape}")
    vox_ml = voxel_volume_ml(affine)
    box = bounding_box(m)
    values: dict = {}
    if box is None:
        values.update(empty=True, voxel_count=0, volume_ml=0.0, n_components=0)
    else:
        crop = as_binary(m[box], name)
        offset = (box[0].start, box[1].start, box[2].start)
        count = int(np.count_nonzero(crop))
        lo, hi = world_extent_lps(crop, offset, affine)
        centre = centroid_lps(crop, offset, affine)
        labels, n = ndimage.label(crop, structure=_TWENTY_SIX)
        sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
        largest = int(sizes[0])
        diam = axial_diameters(crop, offset, affine)
        values.update(
            empty=False,
            voxel_count=count,
            volume_ml=count * vox_ml,
            bbox_min_x_mm=lo[0], bbox_min_y_mm=lo[1], bbox_min_z_mm=lo[2],
            bbox_max_x_mm=hi[0], bbox_max_y_mm=hi[1], bbox_max_z_mm=hi[2],
            centroid_x_mm=centre[0], centroid_y_mm=centre[1], centroid_z_mm=centre[2],
            n_components=int(n),
            largest_component_ml=largest * vox_ml,
            second_component_ml=float(sizes[1]) * vox_ml if sizes.size > 1 else 0.0,
            equivalent_diameter_mm=equivalent_diameter_mm(count * vox_ml),
            longest_axial_diameter_mm=diam.longest_mm if diam else None,
            perpendicular_diameter_mm=diam.perpendicular_mm if diam else None,
        )
        if image is not None:
            values.update(intensity_summary(np.asarray(image[box])[crop]))
    if ref is not None:
        values.update(_agreement(m, box, ref, affine, vox_ml, values["voxel_count"]))
    return MaskStats(**{k: (float(v) if isinstance(v, np.floating) else v) for k, v in values.items()})


def equivalent_diameter_mm(volume_ml: float) -> float:
    """Diameter (mm) of the ball with this volume: the size a report's one number compares to."""
    return float((6.0 * volume_ml * 1000.0 / np.pi) ** (1.0 / 3.0))


def intensity_summary(voxels: np.ndarray) -> dict:
    """Mean, std (population), min, 5th/50th/95th percentile (linear) and max."""
    v = voxels.astype(np.float64, copy=False)
    p05, p50, p95 = np.percentile(v, [5, 50, 95])
    return {
        "intensity_mean": float(v.mean()),
        "intensity_std": float(v.std()),
        "intensity_min": float(v.min()),
        "intensity_p05": float(p05),
        "intensity_median": float(p50),
        "intensity_p95": float(p95),
        "intensity_max": float(v.max()),
    }


def _agreement(m: np.ndarray, box, ref: np.ndarray, affine: np.ndarray, vox_ml: float, count: int) -> dict:
    ref_box = bounding_box(ref)
    ref_count = 0 if ref_box is None else int(np.count_nonzero(as_binary(ref[ref_box], "reference mask")))
    out = {"reference_volume_ml": ref_count * vox_ml, "volume_difference_ml": (count - ref_count) * vox_ml}
    both = union_box(box, ref_box, m.shape)
    if both is None:
        out.update(dice=1.0)
        return out
    # one voxel of background around both masks keeps border voxels' surfaces honest
    pred_c = np.pad(m[both] != 0, 1)
    ref_c = np.pad(as_binary(ref[both], "reference mask"), 1)
    metrics = overlap_metrics(pred_c, ref_c, voxel_spacing(affine))
    out.update(dice=metrics.dice, hd95_mm=metrics.hd95_mm, msd_mm=metrics.msd_mm)
    return out
