"""Where a mask lies relative to the patient: the body, its midline and the scan's edge.

The QC checks (``voxtell.stats.flags``) need facts that a mask alone cannot give: is it
inside the patient, on which side of the patient's midline, does it run into the edge of
the scanned field, does a lesion lie in the organ its sentence names. This module measures
them once per mask, so the checks themselves are plain comparisons on a table row.

The body is found from the image (CT: voxels above -500 HU; MR and PET: above a fraction
of the 99th percentile) on a grid of about 2 mm, kept to its largest connected part and
filled slice by slice on the axial slices, so the lungs and bowel gas count as inside. The midline of an axial
slice is the LPS x of the body's centre of mass on that slice: it follows a patient lying
off the table's centre, which the image centre does not.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from voxtell.stats.geometry import axial_axis, ras_to_lps

log = logging.getLogger(__name__)

#: CT voxels above this (HU) are the patient (air is -1000, lung about -850, fat -100).
CT_BODY_HU = -500.0
#: MR/PET voxels above this fraction of the 99th percentile are the patient.
OTHER_BODY_FRACTION = 0.08


def series_sidecar(image_path: str | Path) -> dict:
    """``series.json`` beside the converted image (modality, warnings), or {} without one."""
    sidecar = Path(image_path).parent / "series.json"
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        log.warning("cannot read %s", sidecar)
        return {}
    return data if isinstance(data, dict) else {}


def detect_modality(image_path: str | Path, data: np.ndarray) -> str:
    """Modality from ``series.json`` beside the image, else CT when air (< -500) is present."""
    mod = series_sidecar(image_path).get("modality")
    if mod:
        return str(mod).upper()
    sample = data[::4, ::4, ::2]
    return "CT" if sample.size and float(sample.min()) < -500 else "MR"


@dataclass(frozen=True)
class Body:
    """The patient's body on the image grid and its midline per axial slice."""

    mask: np.ndarray  # bool, image grid
    axial: int  # voxel axis closest to the patient's S axis
    midline_x_mm: np.ndarray  # LPS x of the body's centre per axial slice (nan without body)

    def midline_at(self, slice_index: int) -> float | None:
        """LPS x of the midline on one axial slice, or of the nearest slice with body."""
        valid = np.flatnonzero(np.isfinite(self.midline_x_mm))
        if valid.size == 0:
            return None
        nearest = valid[np.argmin(np.abs(valid - int(slice_index)))]
        return float(self.midline_x_mm[nearest])


#: The body is found on a grid of about this spacing (every k-th voxel), then expanded:
#: finding a skin line needs no finer grid, and a 512x512x300 CT costs a quarter as much.
BODY_GRID_MM = 2.0


def body_mask(image: np.ndarray, affine: np.ndarray, modality: str = "CT") -> Body:
    """The body of ``image`` (see the module docstring) and its midline per axial slice."""
    from voxtell.stats.geometry import voxel_spacing

    data = np.asarray(image)
    ax = axial_axis(affine)
    step = [max(1, int(BODY_GRID_MM // s)) for s in voxel_spacing(affine)]
    coarse = data[:: step[0], :: step[1], :: step[2]]
    if modality.upper() == "CT":
        raw = coarse > CT_BODY_HU
    else:
        sample = np.asarray(data[::2, ::2, ::2], dtype=np.float32)
        top = float(np.percentile(sample, 99)) if sample.size else 0.0
        raw = coarse > (OTHER_BODY_FRACTION * top if top > 0 else 0)
    labels, n = ndimage.label(raw)
    if n == 0:
        return Body(np.zeros(data.shape, bool), ax, np.full(data.shape[ax], np.nan))
    sizes = np.bincount(labels.ravel(order="K"))
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    del labels
    # fill each axial slice at once: background parts connected within their own slice that
    # do not reach the slice's border are holes (lungs, airways, gas)
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1, 1, 1] = True
    for a in (x for x in range(3) if x != ax):
        for d in (0, 2):
            idx = [1, 1, 1]
            idx[a] = d
            in_plane[tuple(idx)] = True
    background, _ = ndimage.label(~body, structure=in_plane)
    outside = np.zeros(int(background.max()) + 1, bool)
    for a in (x for x in range(3) if x != ax):
        for index in (0, body.shape[a] - 1):
            outside[np.unique(np.take(background, index, axis=a))] = True
    outside[0] = False
    body |= ~outside[background]
    for a, k in enumerate(step):
        if k > 1:
            body = np.repeat(body, k, axis=a)[tuple(slice(None) if b != a else slice(0, data.shape[a]) for b in range(3))]
    return Body(body, ax, _midlines(body, affine, ax))


def _midlines(body: np.ndarray, affine: np.ndarray, ax: int) -> np.ndarray:
    """LPS x of the body's centre of mass on each axial slice (nan where there is none)."""
    plane = [a for a in range(3) if a != ax]
    moved = np.moveaxis(body, ax, 0)  # (slice, plane[0], plane[1])
    counts = moved.sum(axis=(1, 2)).astype(np.float64)
    out = np.full(moved.shape[0], np.nan)
    has = counts > 0
    if not has.any():
        return out
    mean_a = (moved.sum(axis=2) * np.arange(moved.shape[1])).sum(axis=1)[has] / counts[has]
    mean_b = (moved.sum(axis=1) * np.arange(moved.shape[2])).sum(axis=1)[has] / counts[has]
    idx = np.zeros((int(has.sum()), 3))
    idx[:, ax] = np.flatnonzero(has)
    idx[:, plane[0]] = mean_a
    idx[:, plane[1]] = mean_b
    world = ras_to_lps(idx @ np.asarray(affine, dtype=np.float64)[:3, :3].T + np.asarray(affine)[:3, 3])
    out[has] = world[:, 0]
    return out


@dataclass(frozen=True)
class Placement:
    """Where one non-empty mask lies (see ``placement``)."""

    body_fraction: float | None  # share of mask voxels inside the body
    edge_fraction: float  # share of mask voxels on the in-plane border of the scan
    midline_offset_mm: float | None  # centroid LPS x minus the midline's (+ = patient's left)


def placement(
    mask: np.ndarray,
    box: tuple[slice, slice, slice],
    centroid_lps: tuple[float, float, float] | np.ndarray,
    centroid_index: np.ndarray,
    body: Body | None,
) -> Placement:
    """Body share, in-plane edge share and offset from the midline of one mask.

    Only the border of the axial slices counts as the scan's edge: the top and bottom
    slices are where the scanned range ends, which large organs routinely cross.
    """
    crop = np.asarray(mask[box]) != 0
    n = int(np.count_nonzero(crop))
    ax = body.axial if body is not None else 2
    border = np.zeros(crop.shape, bool)
    for a in (x for x in range(3) if x != ax):
        for index in {0, mask.shape[a] - 1}:
            if box[a].start <= index < box[a].stop:
                sel = [slice(None)] * 3
                sel[a] = index - box[a].start
                border[tuple(sel)] = True
    on_edge = int(np.count_nonzero(crop & border))
    if body is None:
        return Placement(None, on_edge / n if n else 0.0, None)
    inside = int(np.count_nonzero(crop & body.mask[box]))
    mid = body.midline_at(int(round(float(centroid_index[ax]))))
    offset = None if mid is None else float(centroid_lps[0]) - mid
    return Placement(inside / n if n else None, on_edge / n if n else 0.0, offset)


def fraction_near(mask: np.ndarray, box: tuple[slice, slice, slice], organ: np.ndarray, spacing: np.ndarray,
                  margin_mm: float) -> float | None:
    """Share of the mask's voxels within ``margin_mm`` of ``organ`` (inside it included).

    The margin forgives what an organ mask leaves out at its own edge: a lesion inside an
    organ is often a hole in that organ's mask (the lung's nodule, the liver's metastasis),
    or bulges from its surface. Distances are computed on the mask's box grown by the
    margin, which is exact for every distance up to the margin. None for an empty mask.
    """
    crop = np.asarray(mask[box]) != 0
    n = int(np.count_nonzero(crop))
    if not n:
        return None
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in spacing]
    grown = tuple(slice(max(b.start - p, 0), min(b.stop + p, size)) for b, p, size in zip(box, pad, organ.shape))
    near_organ = np.asarray(organ[grown]) != 0
    if not near_organ.any():
        return 0.0
    distance = ndimage.distance_transform_edt(~near_organ, sampling=spacing)
    inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))
    return int(np.count_nonzero(crop & (distance[inner] <= margin_mm))) / n
