"""Visual QC of one study: each mask on its image, in three planes through its centroid.

Every mask gets one picture (``{prompt_id}.png`` in the panels folder): axial, coronal
and sagittal slices through its centre of mass, cropped around it (at least 80 mm wide,
so the neighbouring anatomy shows), with the mask's outline and, when there is one, the
reference mask's outline. The study's overview PNG stacks these pictures.

What a reviewer must be able to trust:
- Orientation: radiological convention (patient's right on the viewer's left, anterior
  and superior up) after reorienting to the closest RAS axes, square millimetres on
  screen, R/L (A/P, S) letters at the edges and a scale bar in mm.
- Outlines that show on any image: the mask in yellow and the reference in sky blue, each
  two pixels wide inside (mask) or outside (reference) the edge and ringed by a black
  halo. Grey-scale images (CT, MR, PET alike) have no colour, so a saturated outline
  differs from every grey, and the halo separates it from light greys too.
- Windows: CT soft tissue (W 400 / L 40 HU); MR the 1st-99th percentiles of the nonzero
  voxels; PET the same percentiles shown inverted (hot is dark), as PET is read.
An empty mask gets a picture too: through the reference's centroid when there is one
(where the finding should have been), else through the image's centre.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from voxtell.stats.geometry import voxel_spacing, voxel_volume_ml
from voxtell.stats.measure import as_binary
from voxtell.stats.placement import detect_modality
from voxtell.stats.reference import ReferenceMap, load_reference_map
from voxtell.stats.study import load_on_grid, load_volume, read_manifest

log = logging.getLogger(__name__)

CT_WINDOW = (40.0 - 200.0, 40.0 + 200.0)  # level 40, width 400 HU
VIEWS = ("axial", "coronal", "sagittal")
MASK_RGB = (255, 225, 0)  # yellow
REFERENCE_RGB = (0, 190, 255)  # sky blue
HALO_RGB = (0, 0, 0)
PANEL_PX = 220  # larger side of one plane's picture
MIN_FIELD_MM = 80.0
#: Letters at (left, right, top) of each view in radiological display.
EDGE_LETTERS = {"axial": ("R", "L", "A"), "coronal": ("R", "L", "S"), "sagittal": ("A", "P", "S")}


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


def _view_spacing(spacing: np.ndarray, view: str) -> tuple[float, float]:
    """(row, column) spacing in mm of ``_view``'s output."""
    sx, sy, sz = spacing
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[view]


def _view_centre(view: str, idx: tuple[float, float, float], shape: tuple[int, int, int]) -> tuple[float, float]:
    """(row, column) of the RAS index ``idx`` in ``_view``'s output."""
    i, j, k = idx
    nx, ny, nz = shape
    return {"axial": (ny - 1 - j, nx - 1 - i), "coronal": (nz - 1 - k, nx - 1 - i),
            "sagittal": (nz - 1 - k, ny - 1 - j)}[view]


@dataclass(frozen=True)
class StudyImage:
    """An image in RAS order (a view of the stored array, nothing copied), its voxel sizes
    and display window; ``grey`` windows one slice at a time."""

    data: np.ndarray
    spacing: np.ndarray
    modality: str
    window: tuple[float, float]

    def grey(self, plane: np.ndarray) -> np.ndarray:
        """Grey levels in [0, 1] of a 2-D slice (PET inverted: hot is dark)."""
        lo, hi = self.window
        out = np.clip((np.asarray(plane, dtype=np.float32) - lo) / (hi - lo), 0, 1)
        return 1.0 - out if self.modality in ("PT", "PET", "NM") else out


def study_image(data: np.ndarray, affine: np.ndarray, modality: str) -> StudyImage:
    return StudyImage(_to_ras(np.asarray(data), affine), _ras_spacing(affine), modality.upper(),
                      display_window(data, modality))


def _outline(mask2d: np.ndarray, inside: bool, width: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(line, halo) pixels of a 2-D mask's edge: ``width`` pixels inside or outside it, and
    one pixel of halo on both sides of the line."""
    if not mask2d.any():
        empty = np.zeros(mask2d.shape, bool)
        return empty, empty
    if inside:
        line = mask2d & ~ndimage.binary_erosion(mask2d, iterations=width, border_value=0)
    else:
        line = ndimage.binary_dilation(mask2d, iterations=width) & ~mask2d
    halo = ndimage.binary_dilation(line, iterations=1) & ~line
    return line, halo


def _text(draw, xy, text: str, fill=(255, 255, 255), size: int = 12) -> None:
    from PIL import ImageFont

    font = ImageFont.load_default(size=size)
    x, y = xy
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        draw.text((x + dx, y + dy), text, fill=(0, 0, 0), font=font)
    draw.text((x, y), text, fill=fill, font=font)


def _scale_bar_mm(field_mm: float) -> int:
    for mm in (100, 50, 20, 10, 5, 2, 1):
        if mm <= field_mm / 4:
            return mm
    return 1


def render_planes(
    img: StudyImage,
    mask: np.ndarray | None,
    centre: tuple[float, float, float],
    *,
    reference: np.ndarray | None = None,
    half_field_mm: float = MIN_FIELD_MM / 2,
    panel_px: int = PANEL_PX,
) -> np.ndarray:
    """RGB picture (uint8) of three planes through ``centre`` (a RAS index) with outlines.

    ``mask`` and ``reference`` are boolean RAS arrays on ``img``'s grid (or None)."""
    from PIL import Image, ImageDraw

    idx = tuple(int(round(c)) for c in centre)
    idx = tuple(min(max(v, 0), s - 1) for v, s in zip(idx, img.data.shape))
    pictures = []
    for view in VIEWS:
        grey = img.grey(_view(img.data, view, idx))
        rows_mm, cols_mm = _view_spacing(img.spacing, view)
        r0, c0 = _view_centre(view, centre, img.data.shape)
        px = 2 * half_field_mm / panel_px  # mm per display pixel
        offsets = (np.arange(panel_px) - panel_px / 2 + 0.5) * px
        rr = np.round(r0 + offsets / rows_mm).astype(int)
        cc = np.round(c0 + offsets / cols_mm).astype(int)
        valid = (rr[:, None] >= 0) & (rr[:, None] < grey.shape[0]) & (cc[None] >= 0) & (cc[None] < grey.shape[1])
        rr_c, cc_c = np.clip(rr, 0, grey.shape[0] - 1), np.clip(cc, 0, grey.shape[1] - 1)

        def sample(arr2d: np.ndarray) -> np.ndarray:
            return np.where(valid, arr2d[np.ix_(rr_c, cc_c)], 0)

        level = (sample(grey) * 255).astype(np.uint8)
        rgb = np.repeat(level[..., None], 3, axis=2)
        layers = []
        if reference is not None:
            layers.append((_outline(sample(_view(reference, view, idx)).astype(bool), inside=False), REFERENCE_RGB))
        if mask is not None:
            layers.append((_outline(sample(_view(mask, view, idx)).astype(bool), inside=True), MASK_RGB))
        for (_, halo), _ in layers:
            rgb[halo] = HALO_RGB
        for (line, _), colour in layers:
            rgb[line] = colour
        picture = Image.fromarray(rgb)
        draw = ImageDraw.Draw(picture)
        left, right, top = EDGE_LETTERS[view]
        _text(draw, (3, panel_px // 2 - 7), left)
        _text(draw, (panel_px - 11, panel_px // 2 - 7), right)
        _text(draw, (panel_px // 2 - 4, 2), top)
        _text(draw, (3, 2), view, size=11)
        bar_mm = _scale_bar_mm(2 * half_field_mm)
        bar_px = int(round(bar_mm / px))
        y = panel_px - 8
        draw.rectangle([6, y - 1, 6 + bar_px, y + 2], fill=(0, 0, 0))
        draw.rectangle([7, y, 5 + bar_px, y + 1], fill=(255, 255, 255))
        _text(draw, (8, y - 16), f"{bar_mm} mm", size=11)
        pictures.append(np.asarray(picture))
    gap = np.full((panel_px, 4, 3), 255, np.uint8)
    return np.concatenate([pictures[0], gap, pictures[1], gap, pictures[2]], axis=1)


def _centre_and_field(mask: np.ndarray, spacing: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """Centroid (RAS index) and half field of view (mm) that shows the whole mask."""
    pts = np.argwhere(mask)
    centre = pts.mean(axis=0)
    extent_mm = (pts.max(axis=0) - pts.min(axis=0) + 1) * spacing
    return tuple(float(c) for c in centre), max(MIN_FIELD_MM, 1.25 * float(extent_mm.max())) / 2


def save_png(rgb: np.ndarray, path: str | Path) -> Path:
    """Write an RGB array as PNG atomically."""
    from PIL import Image

    from voxtell.io.atomic import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=6)
    return p


def render_study_qc(
    image: str | Path,
    masks: str | Path,
    out_png: str | Path,
    *,
    reference: str | Path | ReferenceMap | None = None,
    panels_dir: str | Path | None = None,
    modality: str | None = None,
    title: str | None = None,
    max_masks: int | None = None,
) -> Path:
    """Write one picture per mask to ``panels_dir`` (default: ``qc/`` beside ``out_png``)
    and the study's overview PNG (the pictures stacked, with captions) atomically."""
    grid = load_volume(image, "image")
    manifest = read_manifest(masks)
    modality = (modality or detect_modality(grid.path, grid.array)).upper()
    img = study_image(grid.array, grid.affine, modality)
    vox_ml = voxel_volume_ml(grid.affine)
    ref_map = load_reference_map(reference) if isinstance(reference, (str, Path)) else reference
    panels = Path(panels_dir) if panels_dir is not None else Path(out_png).parent / "qc"
    ref_cache: dict[Path, np.ndarray] = {}

    rows: list[tuple[str, np.ndarray]] = []
    seen: set[str] = set()
    for entry in manifest["prompts"]:
        pid = entry.get("prompt_id")
        if not pid or pid in seen:
            continue
        seen.add(pid)
        path = Path(masks) / (entry.get("file") or f"{pid}.nii.gz")
        m = _to_ras(as_binary(load_on_grid(path, grid, "mask"), f"mask {path.name}"), grid.affine)
        ref = None
        spec = ref_map.lookup(pid) if ref_map is not None else None
        if spec is not None:
            if spec.file not in ref_cache:
                ref_cache[spec.file] = load_on_grid(spec.file, grid, "reference")
            data = ref_cache[spec.file]
            ref = _to_ras((data == spec.label) if spec.label is not None else data != 0, grid.affine)
        shown = m if m.any() else (ref if ref is not None and ref.any() else None)
        if shown is not None:
            centre, half = _centre_and_field(shown, img.spacing)
        else:
            centre, half = tuple((s - 1) / 2 for s in m.shape), float(max(np.array(m.shape) * img.spacing)) / 2
        rgb = render_planes(img, m, centre, reference=ref, half_field_mm=half)
        save_png(rgb, panels / f"{pid}.png")
        n = int(np.count_nonzero(m))
        caption = f"{(entry.get('prompt') or pid)[:90]}   {n * vox_ml:.1f} mL" + ("   EMPTY MASK" if n == 0 else "")
        rows.append((caption, rgb))
        if max_masks is not None and len(rows) >= max_masks:
            break

    for old in panels.glob("*.png"):  # pictures of prompts the study no longer has
        if old.name[: -len(".png")] not in seen:
            old.unlink()
    width = rows[0][1].shape[1] if rows else 3 * PANEL_PX + 8
    head = (title or str(manifest.get("study_id") or Path(masks).name)) + f"   [{modality}, window {img.window[0]:g}..{img.window[1]:g}]"
    blocks = [_caption(head, width)]
    for caption, rgb in rows:
        blocks += [_caption(caption, width), rgb]
    if not rows:
        blocks.append(_caption("no masks", width))
    return save_png(np.concatenate(blocks, axis=0), out_png)


def _caption(text: str, width: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.new("RGB", (width, 18), (255, 255, 255))
    ImageDraw.Draw(picture).text((4, 2), text, fill=(0, 0, 0), font=ImageFont.load_default(size=12))
    return np.asarray(picture)
