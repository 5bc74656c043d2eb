"""QC pictures as a reviewer sees them: outlines visible on CT, MR and PET, right side on
the viewer's left, one picture per mask (no colour cycle that ends in grey)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from test_qc import make_study
from voxtell.stats.qc import HALO_RGB, MASK_RGB, REFERENCE_RGB, render_planes, render_study_qc, study_image


def _contrast(rgb: np.ndarray, colour) -> tuple[int, float, float]:
    """(line pixels, smallest colour distance between the line and the image pixels within
    4 pixels of it, and between the line and the nearest grey), in 0..255 RGB units."""
    line = (rgb == np.array(colour)).all(-1)
    around = ndimage.binary_dilation(line, iterations=4) & ~line & ~(rgb == np.array(HALO_RGB)).all(-1)
    # the image's own pixels are grey (a letter's anti-aliased edge over a line is not image)
    around &= (np.ptp(rgb.astype(int), axis=-1) <= 2)
    if not line.any() or not around.any():
        return int(line.sum()), 0.0, 0.0
    bg = rgb[around].astype(float)
    col = np.array(colour, float)
    to_bg = float(np.sqrt(((bg - col) ** 2).sum(-1)).min())
    grey = col.mean()
    to_grey = float(np.sqrt(((col - grey) ** 2).sum()))
    return int(line.sum()), to_bg, to_grey


def _pet_like(shape, rng):
    """SUV-like values: low background, a body, two hot spots."""
    grid = np.indices(shape)
    body = ((grid[0] - shape[0] / 2) / (shape[0] / 2.5)) ** 2 + ((grid[1] - shape[1] / 2) / (shape[1] / 3)) ** 2 <= 1
    suv = np.where(body, 1.0, 0.02) + rng.normal(0, 0.1, shape)
    hot = ((grid[0] - shape[0] / 2 - 8) ** 2 + (grid[1] - shape[1] / 2) ** 2 + (grid[2] - shape[2] / 2) ** 2) <= 25
    suv[hot] = 12.0
    return suv.astype(np.float32), hot


@pytest.mark.parametrize("modality", ["CT", "MR", "PT"])
def test_outlines_stand_out_on_every_modality(totalseg_dir, modality):
    rng = np.random.default_rng(0)
    if modality == "CT":
        img = nib.load(totalseg_dir / "example_ct_sm.nii.gz")
        data, affine = np.asarray(img.dataobj), img.affine
        mask = np.asarray(nib.load(totalseg_dir / "example_seg.nii.gz").dataobj) == 5  # liver
    elif modality == "MR":
        img = nib.load(totalseg_dir / "example_mr_sm.nii.gz")
        data, affine = np.asarray(img.dataobj), img.affine
        seg = np.asarray(nib.load(totalseg_dir / "example_seg_mr.nii.gz").dataobj)
        mask = seg == np.unique(seg[seg > 0])[0]
    else:
        data, mask = _pet_like((64, 64, 40), rng)
        affine = np.diag([4.0, 4.0, 4.0, 1.0])
    shown = study_image(data, affine, modality)
    from voxtell.stats.qc import _to_ras

    m = _to_ras(mask, affine)
    ref = ndimage.binary_erosion(m, iterations=1)  # a reference that differs a little
    centre = tuple(np.argwhere(m).mean(axis=0))
    rgb = render_planes(shown, m, centre, reference=ref, half_field_mm=60)
    for colour in (MASK_RGB, REFERENCE_RGB):
        n, to_bg, to_grey = _contrast(rgb, colour)
        print(f"{modality} {colour}: {n} px, min distance to the image around it {to_bg:.0f}, to grey {to_grey:.0f}")
        assert n > 50
        assert to_grey > 150  # a saturated colour: far from every grey level the image can have
        assert to_bg > 120  # and far from every image pixel next to it
        # a black halo rings the line (contrast on light greys as well)
        line = (rgb == np.array(colour)).all(-1)
        ring = ndimage.binary_dilation(line) & ~line
        assert ((rgb[ring] == np.array(HALO_RGB)).all(-1) | (rgb[ring] == np.array(MASK_RGB)).all(-1)
                | (rgb[ring] == np.array(REFERENCE_RGB)).all(-1)).mean() > 0.9


def test_one_picture_per_mask_right_on_the_viewers_left(tmp_path, totalseg_dir):
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    lab = np.asanyarray(seg.dataobj)
    # eight masks: the old overview cycled through tab10 and drew the eighth in grey
    masks = {f"organ {v}": lab == v for v in np.unique(lab)[1:9]}
    masks["liver"], masks["spleen"], masks["brain"] = lab == 5, lab == 1, np.zeros(lab.shape, bool)
    folder = make_study(tmp_path / "masks", seg.affine, masks, "s1")
    out = render_study_qc(totalseg_dir / "example_ct_sm.nii.gz", folder, tmp_path / "qc.png")
    panels = sorted((tmp_path / "qc").glob("*.png"))
    assert len(panels) == len(masks)
    for p in panels:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        n, to_bg, _ = _contrast(rgb, MASK_RGB)
        if "brain" not in p.name:
            assert n > 20 and to_bg > 120, p.name
    assert Image.open(out).size[0] == Image.open(panels[0]).size[0]
    # the liver (patient's right) is left of the spleen in the full-field axial view
    from voxtell.stats.qc import _to_ras

    shown = study_image(np.asarray(nib.load(totalseg_dir / "example_ct_sm.nii.gz").dataobj), seg.affine, "CT")
    liver, spleen = _to_ras(lab == 5, seg.affine), _to_ras(lab == 1, seg.affine)
    both = liver | spleen
    centre = tuple(np.argwhere(both).mean(axis=0))
    k = int(np.argmax((liver.sum(axis=(0, 1)) > 0) & (spleen.sum(axis=(0, 1)) > 0)))
    centre = (centre[0], centre[1], float(k))
    rgb_l = render_planes(shown, liver, centre, half_field_mm=200)[:, :220]
    rgb_s = render_planes(shown, spleen, centre, half_field_mm=200)[:, :220]
    col = lambda rgb: np.argwhere((rgb == np.array(MASK_RGB)).all(-1))[:, 1].mean()  # noqa: E731
    assert col(rgb_l) < 110 < col(rgb_s)
