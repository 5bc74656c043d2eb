"""Visual QC of one study: three orthogonal slices through each mask's centroid.

Each non-empty mask gets a row of axial, coronal and sagittal slices through its centre of
mass with the mask's outline over the image, labelled with the prompt id and volume.
Slices are shown in radiological convention (patient's right on the viewer's left,
anterior and superior up) after reorienting to the closest RAS axes, with true pixel
aspect ratios. Windows: CT soft tissue (W 400 / L 40 HU); MR and PET the 1st-99th
percentiles of the nonzero voxels. Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from voxtell.stats.geometry import voxel_spacing, voxel_volume_ml
from voxtell.stats.measure import as_binary
from voxtell.stats.study import load_on_grid, load_volume, read_manifest

log = logging.getLogger(__name__)

CT_WINDOW = (40.0 - 200.0, 40.0 + 200.0)  # level 40, width 400 HU
VIEWS = ("axial", "coronal", "sagittal")


def detect_modality(image_path: Path, data: np.ndarray) -> str:
    """Modality from ``series.json`` beside the image, else CT when air (< -500) is present."""
    sidecar = image_path.parent / "series.json"
    if sidecar.is_file():
        try:
            mod = json.loads(sidecar.read_text(encoding="utf-8")).get("modality")
            if mod:
                return str(mod).upper()
        except (OSError, json.JSONDecodeError, AttributeError):
            log.warning("cannot read modality from %s", sidecar)
    sample = data[::4, ::4, ::2]
    return "CT" if sample.size and float(sample.min()) < -500 else "MR"


def display_window(data: np.ndarray, modality: str) -> tuple[float, float]:
    """Grey-level window (low, high) for ``modality``."""
    if modality.upper() == "CT":
        return CT_WINDOW
    sample = np.asarray(data[::2, ::2, ::2], dtype=np.float32)
    sample = sample[sample != 0]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def _to_ras(arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
    from nibabel.orientations import apply_orientation, io_orientation

    return apply_orientation(arr, io_orientation(affine))


def _ras_spacing(affine: np.ndarray) -> np.ndarray:
    from nibabel.orientations import io_orientation

    ornt = io_orientation(affine)
    spacing = voxel_spacing(affine)
    out = np.empty(3)
    for i in range(3):
        out[int(ornt[i, 0])] = spacing[i]
    return out


def _view(vol: np.ndarray, view: str, idx: tuple[int, int, int]) -> np.ndarray:
    """2-D slice of a RAS array in radiological display order (rows top->bottom)."""
    i, j, k = idx
    sl = {"axial": vol[:, :, k], "coronal": vol[:, j, :], "sagittal": vol[i, :, :]}[view]
    return np.asarray(sl).T[::-1, ::-1]


def _aspect(spacing: np.ndarray, view: str) -> float:
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}[view]


def render_study_qc(
    image: str | Path,
    masks: str | Path,
    out_png: str | Path,
    *,
    modality: str | None = None,
    title: str | None = None,
    dpi: int = 80,
    max_masks: int | None = None,
) -> Path:
    """Write the study's QC PNG atomically and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from voxtell.io.atomic import atomic_path

    grid = load_volume(image, "image")
    manifest = read_manifest(masks)
    modality = (modality or detect_modality(grid.path, grid.array)).upper()
    lo, hi = display_window(grid.array, modality)
    vol = _to_ras(grid.array, grid.affine)
    spacing = _ras_spacing(grid.affine)
    vox_ml = voxel_volume_ml(grid.affine)

    panels, empty = [], []
    seen = set()
    for entry in manifest["prompts"]:
        pid = entry.get("prompt_id")
        if not pid or pid in seen:
            continue
        seen.add(pid)
        path = Path(masks) / (entry.get("file") or f"{pid}.nii.gz")
        m = _to_ras(as_binary(load_on_grid(path, grid, "mask"), f"mask {path.name}"), grid.affine)
        n = int(np.count_nonzero(m))
        if n == 0:
            empty.append(pid)
            continue
        centre = tuple(
            int(round(np.dot(np.arange(m.shape[a]), np.count_nonzero(m, axis=tuple(b for b in range(3) if b != a))) / n))
            for a in range(3)
        )
        panels.append((pid, m, centre, n * vox_ml))
        if max_masks is not None and len(panels) >= max_masks:
            break

    rows = max(len(panels), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(3 * 2.6, rows * 2.6 + 0.5), squeeze=False)
    colours = plt.get_cmap("tab10")
    if not panels:
        centre = tuple(s // 2 for s in vol.shape)
        for ax, view in zip(axes[0], VIEWS):
            ax.imshow(_view(vol, view, centre), cmap="gray", vmin=lo, vmax=hi, aspect=_aspect(spacing, view),
                      interpolation="nearest")
            ax.set_title(f"{view} (no non-empty mask)", fontsize=8)
    for r, (pid, m, centre, ml) in enumerate(panels):
        for c, view in enumerate(VIEWS):
            ax = axes[r, c]
            ax.imshow(_view(vol, view, centre), cmap="gray", vmin=lo, vmax=hi, aspect=_aspect(spacing, view),
                      interpolation="nearest")
            sl = _view(m, view, centre)
            if sl.any():
                ax.contour(sl.astype(np.float32), levels=[0.5], colors=[colours(r % 10)], linewidths=1.0)
            ax.set_title(f"{pid}  {ml:.1f} mL" if c == 0 else view, fontsize=7, loc="left" if c == 0 else "center")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    head = title or str(manifest.get("study_id") or Path(masks).name)
    head += f"   [{modality}, window {lo:g}..{hi:g}]"
    if empty:
        head += "\nempty: " + ", ".join(empty[:8]) + (" ..." if len(empty) > 8 else "")
    fig.suptitle(head, fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out
