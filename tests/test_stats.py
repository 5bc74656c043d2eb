"""Statistics against independent computations: analytic phantoms and real organ labels."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from scipy.spatial import cKDTree

from voxtell.errors import InputError
from voxtell.prompts import prompt_id
from voxtell.stats.errors import GridMismatchError, ManifestError, MissingImageError, NonBinaryMaskError
from voxtell.stats.measure import mask_statistics
from voxtell.stats.reference import load_reference_map
from voxtell.stats.study import StudyStatsConfig, compute_study_stats

LPS = np.array([-1.0, -1.0, 1.0])


def sphere(shape, spacing, centre_mm, radius_mm):
    """Voxels whose centre lies within ``radius_mm`` of ``centre_mm`` (grid coordinates, mm)."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grids, centre_mm))
    return (d2 <= radius_mm**2).astype(np.uint8)


def affine_from(spacing, origin):
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return aff


def reorient(arr, affine, codes):
    """Same physical image stored with axis codes ``codes`` (nibabel's own transforms)."""
    start = nib.io_orientation(affine)
    target = axcodes2ornt(codes)
    xform = ornt_transform(start, target)
    out = apply_orientation(arr, xform)
    return out, affine @ inv_ornt_aff(xform, arr.shape)


def brute_centroid_lps(mask, affine):
    return apply_affine(affine, np.argwhere(mask)).mean(axis=0) * LPS


# --- phantoms with known answers -------------------------------------------------------

SPACING = (0.7, 0.9, 2.5)
SHAPE = (110, 100, 40)
CENTRE = (38.3, 44.1, 49.2)
RADIUS = 22.0
ORIGIN = (-100.0, 30.0, -50.0)


@pytest.fixture(scope="module")
def ball():
    return sphere(SHAPE, SPACING, CENTRE, RADIUS), affine_from(SPACING, ORIGIN)


def test_sphere_volume_centroid_diameter(ball):
    m, aff = ball
    s = mask_statistics(m, aff)
    assert not s.empty and s.n_components == 1
    assert s.voxel_count == int(m.sum())
    assert s.volume_ml == pytest.approx(m.sum() * np.prod(SPACING) / 1000)
    assert s.volume_ml == pytest.approx(4 / 3 * np.pi * RADIUS**3 / 1000, rel=0.01)
    assert s.largest_component_ml == pytest.approx(s.volume_ml)
    # centre of mass: analytic, and the brute-force mean of all voxel centres
    expected = (np.array(CENTRE) + ORIGIN) * LPS
    got = np.array([s.centroid_x_mm, s.centroid_y_mm, s.centroid_z_mm])
    np.testing.assert_allclose(got, brute_centroid_lps(m, aff), atol=1e-9)
    np.testing.assert_allclose(got, expected, atol=0.2)
    # bounding box of voxel centres, LPS: x and y flip so min/max swap
    pts = apply_affine(aff, np.argwhere(m)) * LPS
    np.testing.assert_allclose([s.bbox_min_x_mm, s.bbox_min_y_mm, s.bbox_min_z_mm], pts.min(0), atol=1e-9)
    np.testing.assert_allclose([s.bbox_max_x_mm, s.bbox_max_y_mm, s.bbox_max_z_mm], pts.max(0), atol=1e-9)
    assert s.bbox_max_x_mm < -(ORIGIN[0] + CENTRE[0]) + RADIUS + 1e-9
    # RECIST: a circle of radius <= r on the widest axial slice: 2r within one in-plane voxel
    assert s.longest_axial_diameter_mm == pytest.approx(2 * RADIUS, abs=max(SPACING[:2]))
    assert s.perpendicular_diameter_mm == pytest.approx(2 * RADIUS, abs=max(SPACING[:2]))
    assert s.perpendicular_diameter_mm <= s.longest_axial_diameter_mm + 1e-9


def test_diameter_bounds_by_brute_force():
    """An ellipse: long axis between the brute-force centre diameter and that plus a pixel."""
    spacing = (0.8, 0.6, 3.0)
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip((120, 160, 5), spacing)], indexing="ij")
    # ellipse rotated by 30 degrees in-plane, semi-axes 30 and 12 mm, only on slice 2
    x, y = grids[0] - 48.0, grids[1] - 48.0
    c, s_ = np.cos(np.pi / 6), np.sin(np.pi / 6)
    u, v = c * x + s_ * y, -s_ * x + c * y
    m = (((u / 30) ** 2 + (v / 12) ** 2) <= 1) & (np.abs(grids[2] - 6.0) < 0.1)
    st = mask_statistics(m.astype(np.uint8), affine_from(spacing, (0, 0, 0)))
    pts = np.argwhere(m[:, :, 2]) * np.array(spacing[:2])
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    assert d.max() <= st.longest_axial_diameter_mm <= d.max() + np.hypot(*spacing[:2])
    assert st.longest_axial_diameter_mm == pytest.approx(60.0, abs=1.0)
    assert st.perpendicular_diameter_mm == pytest.approx(24.0, abs=1.0)


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("L", "A", "S"), ("S", "R", "A"), ("P", "I", "L")])
def test_non_ras_storage_gives_same_patient_statistics(ball, codes):
    m, aff = ball
    ref = mask_statistics(m, aff)
    m2, aff2 = reorient(m, aff, codes)
    assert nib.aff2axcodes(aff2) == codes
    s = mask_statistics(m2, aff2)
    for name in ("voxel_count", "volume_ml", "n_components"):
        assert getattr(s, name) == pytest.approx(getattr(ref, name))
    for name in ("centroid", "bbox_min", "bbox_max"):
        for ax in "xyz":
            assert getattr(s, f"{name}_{ax}_mm") == pytest.approx(getattr(ref, f"{name}_{ax}_mm"), abs=1e-6)
    # the axial axis is found whatever the storage order
    assert s.longest_axial_diameter_mm == pytest.approx(ref.longest_axial_diameter_mm, abs=1e-6)
    assert s.perpendicular_diameter_mm == pytest.approx(ref.perpendicular_diameter_mm, abs=1e-6)


def test_oblique_affine(ball):
    """In-plane rotation (oblique acquisition): diameters unchanged, centroid/bbox by brute force."""
    m, aff = ball
    t = np.deg2rad(25)
    rot = np.array([[np.cos(t), -np.sin(t), 0, 0], [np.sin(t), np.cos(t), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    aff2 = rot @ aff
    ref, s = mask_statistics(m, aff), mask_statistics(m, aff2)
    assert s.volume_ml == pytest.approx(ref.volume_ml)
    assert s.longest_axial_diameter_mm == pytest.approx(ref.longest_axial_diameter_mm, abs=1e-6)
    pts = apply_affine(aff2, np.argwhere(m)) * LPS
    np.testing.assert_allclose([s.centroid_x_mm, s.centroid_y_mm, s.centroid_z_mm], pts.mean(0), atol=1e-6)
    np.testing.assert_allclose([s.bbox_min_x_mm, s.bbox_min_y_mm, s.bbox_min_z_mm], pts.min(0), atol=1e-6)
    np.testing.assert_allclose([s.bbox_max_x_mm, s.bbox_max_y_mm, s.bbox_max_z_mm], pts.max(0), atol=1e-6)


def test_components_26_connectivity():
    m = np.zeros((20, 20, 20), np.uint8)
    m[2:5, 2:5, 2:5] = 1  # 27 voxels
    m[5, 5, 5] = 1  # touches the cube only at a corner: same component under 26-connectivity
    m[10:12, 10:12, 10:12] = 1  # 8 voxels, separate
    s = mask_statistics(m, np.eye(4))
    assert s.n_components == 2
    assert s.largest_component_ml == pytest.approx(28 / 1000)


def test_intensity_statistics(ball):
    m, aff = ball
    rng = np.random.default_rng(0)
    img = rng.normal(40, 15, size=m.shape).astype(np.float32)
    s = mask_statistics(m, aff, image=img)
    v = img[m.astype(bool)].astype(np.float64)
    assert s.intensity_mean == pytest.approx(v.mean())
    assert s.intensity_std == pytest.approx(v.std())
    assert (s.intensity_min, s.intensity_max) == (pytest.approx(v.min()), pytest.approx(v.max()))
    assert s.intensity_p05 == pytest.approx(np.sort(v)[int(round(0.05 * (v.size - 1)))], abs=0.05)
    assert s.intensity_median == pytest.approx(np.median(v))
    assert s.intensity_p95 == pytest.approx(np.quantile(v, 0.95))


def test_empty_mask_is_a_row_not_an_error(ball):
    m, aff = ball
    s = mask_statistics(np.zeros_like(m), aff, image=m.astype(np.float32))
    assert s.empty and s.voxel_count == 0 and s.volume_ml == 0 and s.n_components == 0
    assert s.centroid_x_mm is None and s.intensity_mean is None and s.longest_axial_diameter_mm is None


# --- agreement with a reference --------------------------------------------------------


def _surface_points(mask, spacing):
    """Independent surface: voxels with a 6-neighbour outside (np.roll on a padded array)."""
    p = np.pad(mask.astype(bool), 1)
    inner = p.copy()
    for ax in range(3):
        for sh in (1, -1):
            inner &= np.roll(p, sh, axis=ax)
    return (np.argwhere(p & ~inner) - 1) * np.asarray(spacing)


def test_shifted_sphere_dice_hd95_msd():
    spacing, r, shift_vox = (1.0, 1.0, 1.0), 15.0, 4
    shape = (64, 64, 64)
    a = sphere(shape, spacing, (30, 30, 30), r)
    b = sphere(shape, spacing, (30 + shift_vox, 30, 30), r)
    s = mask_statistics(a, np.eye(4), reference=b)
    d = float(shift_vox)
    # two spheres of radius r at distance d: lens volume pi (4r + d)(2r - d)^2 / 12
    dice_exact = (np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12) / (4 / 3 * np.pi * r**3)
    assert s.dice == pytest.approx(2 * np.sum(a & b) / (a.sum() + b.sum()))
    assert s.dice == pytest.approx(dice_exact, abs=0.01)
    # continuous answer: a point at polar angle t on one sphere is |sqrt(r^2 + d^2 - 2 r d cos t) - r|
    # from the other; area is uniform in cos t
    cos_t = np.linspace(-1, 1, 200001)
    dist = np.abs(np.sqrt(r**2 + d**2 - 2 * r * d * cos_t) - r)
    assert s.hd95_mm == pytest.approx(np.percentile(dist, 95), abs=1.0)
    assert s.msd_mm == pytest.approx(dist.mean(), abs=0.5)
    # exact, by brute force on the independently computed surfaces
    pa_, pb_ = _surface_points(a, spacing), _surface_points(b, spacing)
    dab, dba = cKDTree(pb_).query(pa_)[0], cKDTree(pa_).query(pb_)[0]
    assert s.hd95_mm == pytest.approx(max(np.percentile(dab, 95), np.percentile(dba, 95)))
    assert s.msd_mm == pytest.approx(np.concatenate([dab, dba]).mean())
    assert s.volume_difference_ml == pytest.approx((a.sum() - b.sum()) / 1000)
    assert s.reference_volume_ml == pytest.approx(b.sum() / 1000)


def test_anisotropic_surface_distance_uses_spacing():
    spacing = (0.5, 0.5, 3.0)
    a = np.zeros((40, 40, 20), np.uint8)
    a[10:30, 10:30, 5:10] = 1
    b = np.roll(a, 2, axis=2)  # shifted two slices = 6 mm
    s = mask_statistics(a, affine_from(spacing, (0, 0, 0)), reference=b)
    pa_, pb_ = _surface_points(a, spacing), _surface_points(b, spacing)
    dab, dba = cKDTree(pb_).query(pa_)[0], cKDTree(pa_).query(pb_)[0]
    assert s.hd95_mm == pytest.approx(max(np.percentile(dab, 95), np.percentile(dba, 95)))
    assert s.hd95_mm == pytest.approx(6.0)
    assert s.dice == pytest.approx(0.6)


def test_empty_versus_reference():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[3:6, 3:6, 3:6] = 1
    s = mask_statistics(np.zeros_like(ref), np.eye(4), reference=ref)
    assert s.dice == 0.0 and s.hd95_mm is None and s.volume_difference_ml == pytest.approx(-27 / 1000)
    both = mask_statistics(np.zeros_like(ref), np.eye(4), reference=np.zeros_like(ref))
    assert both.dice == 1.0 and both.msd_mm is None


# --- studies: real labels, manifests, findings, references, bad inputs -------------------


def write_masks(folder: Path, affine, masks: dict[str, np.ndarray], study_id="s1", extra=None):
    folder.mkdir(parents=True, exist_ok=True)
    prompts = []
    for prompt, arr in masks.items():
        pid = prompt_id(prompt)
        nib.save(nib.Nifti1Image(arr, affine), folder / f"{pid}.nii.gz")
        entry = {"prompt_id": pid, "prompt": prompt, "file": f"{pid}.nii.gz", "empty": not arr.any(),
                 "voxels": int(np.count_nonzero(arr)), "source": "config"}
        entry.update((extra or {}).get(prompt, {}))
        prompts.append(entry)
    manifest = {"study_id": study_id, "image": "image.nii.gz",
                "model": {"model_id": "demo-small", "sha256": "ab" * 32, "preset": "small", "text_encoder": "minilm"},
                "backend": "torch", "device": "cpu", "precision": "fp32", "pipeline_version": "0.1.0",
                "threshold": 0.5, "timings": {}, "prompts": prompts}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def totalseg(totalseg_dir):
    seg = nib.load(totalseg_dir / "example_seg.nii.gz")
    labels = np.asanyarray(seg.dataobj)
    present = json.loads((totalseg_dir / "labels_present.json").read_text())["example_seg.nii.gz"]["labels"]
    return seg, labels, present


def test_real_organ_labels(tmp_path, totalseg_dir, totalseg):
    seg, labels, present = totalseg
    organs = {"liver": 5, "spleen": 1, "pancreas": 7}
    masks = write_masks(tmp_path / "masks", seg.affine, {k: (labels == v).astype(np.uint8) for k, v in organs.items()})
    res = compute_study_stats(totalseg_dir / "example_ct_sm.nii.gz", masks)
    rows = {r["prompt"]: r for r in res.rows}
    assert rows["liver"]["volume_ml"] == pytest.approx(1043.12, abs=0.01)
    assert rows["spleen"]["volume_ml"] == pytest.approx(255.2, abs=0.01)
    ct = nib.load(totalseg_dir / "example_ct_sm.nii.gz").get_fdata()
    for name, label in organs.items():
        r = rows[name]
        sel = labels == label
        assert r["voxel_count"] == present[str(label)]["voxels"]
        assert r["volume_ml"] == pytest.approx(present[str(label)]["volume_ml"], abs=0.01)
        v = ct[sel]
        assert r["intensity_mean"] == pytest.approx(v.mean())
        assert r["intensity_median"] == pytest.approx(np.median(v))
        assert (r["intensity_min"], r["intensity_max"]) == (v.min(), v.max())
        np.testing.assert_allclose([r["centroid_x_mm"], r["centroid_y_mm"], r["centroid_z_mm"]],
                                   brute_centroid_lps(sel, seg.affine), atol=1e-6)
        assert r["study_id"] == "s1" and r["model_sha256"] == "ab" * 32 and r["backend"] == "torch"
    # anatomy in LPS: the liver lies on the patient's right (smaller x) of the spleen
    assert rows["liver"]["centroid_x_mm"] < rows["spleen"]["centroid_x_mm"]
    assert 30 < rows["liver"]["intensity_median"] < 150  # liver, HU


def test_real_labels_mr_las(tmp_path, totalseg_dir):
    """The MR example is stored LPS: same statistics as after reorienting it to RAS."""
    seg = nib.load(totalseg_dir / "example_seg_mr.nii.gz")
    lab = np.asanyarray(seg.dataobj)
    value = int(np.bincount(lab.ravel())[1:].argmax()) + 1
    m = (lab == value).astype(np.uint8)
    s1 = mask_statistics(m, seg.affine)
    m2, aff2 = reorient(m, seg.affine, ("R", "A", "S"))
    s2 = mask_statistics(m2, aff2)
    assert s1.volume_ml == pytest.approx(s2.volume_ml)
    assert s1.centroid_x_mm == pytest.approx(s2.centroid_x_mm) and s1.centroid_y_mm == pytest.approx(s2.centroid_y_mm)
    assert s1.longest_axial_diameter_mm == pytest.approx(s2.longest_axial_diameter_mm)
    np.testing.assert_allclose([s1.centroid_x_mm, s1.centroid_y_mm, s1.centroid_z_mm],
                               brute_centroid_lps(m, seg.affine), atol=1e-6)


def test_findings_and_reference_mapping(tmp_path, totalseg_dir, totalseg):
    seg, labels, _ = totalseg
    masks = write_masks(
        tmp_path / "masks", seg.affine,
        {"liver": (labels == 5).astype(np.uint8), "enlarged spleen": (labels == 1).astype(np.uint8)},
        extra={"enlarged spleen": {"source": "finding", "finding_id": "s1-f2"}},
    )
    findings = tmp_path / "f.jsonl"
    findings.write_text(json.dumps({"finding_id": "s1-f2", "sentence": "Spleen 14 x 5 cm.", "prompt": "enlarged spleen",
                                    "measurements_mm": [140.0, 50.0]}) + "\n")
    # TSV: label map + label value, key = prompt; JSON key = prompt id
    (tmp_path / "ref.tsv").write_text(f"prompt\tfile\tlabel\nliver\t{totalseg_dir.resolve()}/example_seg.nii.gz\t5\n")
    res = compute_study_stats(totalseg_dir / "example_ct_sm.nii.gz", masks, findings=findings,
                              reference=tmp_path / "ref.tsv", config=StudyStatsConfig(workers=2))
    rows = {r["prompt"]: r for r in res.rows}
    assert rows["liver"]["dice"] == 1.0 and rows["liver"]["hd95_mm"] == 0.0 and rows["liver"]["volume_difference_ml"] == 0
    assert rows["enlarged spleen"]["dice"] is None
    sp = rows["enlarged spleen"]
    assert sp["finding_id"] == "s1-f2" and sp["source"] == "finding" and sp["report_diameter_mm"] == 140.0
    assert sp["diameter_ratio"] == pytest.approx(sp["longest_axial_diameter_mm"] / 140.0)
    assert rows["liver"]["report_diameter_mm"] is None

    ref_dir = tmp_path / "refs"
    ref_dir.mkdir()
    nib.save(nib.Nifti1Image((labels == 1).astype(np.uint8), seg.affine), ref_dir / "enlarged spleen.nii.gz")
    pid = prompt_id("liver")
    (tmp_path / "ref.json").write_text(json.dumps({pid: {"file": str(totalseg_dir.resolve() / "example_seg.nii.gz"), "label": 2}}))
    assert load_reference_map(ref_dir).lookup(prompt_id("Enlarged  Spleen")) is not None
    res = compute_study_stats(totalseg_dir / "example_ct_sm.nii.gz", masks, reference=tmp_path / "ref.json")
    assert {r["prompt"]: r["dice"] for r in res.rows} == {"liver": 0.0, "enlarged spleen": None}


def test_bad_inputs(tmp_path, totalseg_dir, totalseg):
    seg, labels, _ = totalseg
    image = totalseg_dir / "example_ct_sm.nii.gz"
    liver = (labels == 5).astype(np.uint8)
    with pytest.raises(MissingImageError, match="does not exist"):
        compute_study_stats(tmp_path / "nope.nii.gz", write_masks(tmp_path / "a", seg.affine, {"liver": liver}))
    truncated = tmp_path / "trunc.nii.gz"
    truncated.write_bytes(gzip.compress(image.read_bytes() if image.suffix != ".gz" else gzip.decompress(image.read_bytes()))[:5000])
    with pytest.raises(MissingImageError):
        compute_study_stats(truncated, tmp_path / "a")
    shifted = seg.affine.copy()
    shifted[0, 3] += 3.0
    with pytest.raises(GridMismatchError, match="affine"):
        compute_study_stats(image, write_masks(tmp_path / "b", shifted, {"liver": liver}))
    with pytest.raises(GridMismatchError, match="shape"):
        compute_study_stats(image, write_masks(tmp_path / "c", seg.affine, {"liver": liver[:-1]}))
    with pytest.raises(NonBinaryMaskError, match=r"\[5\]"):
        compute_study_stats(image, write_masks(tmp_path / "d", seg.affine, {"liver": liver * 5}))
    with pytest.raises(NonBinaryMaskError):
        compute_study_stats(image, write_masks(tmp_path / "e", seg.affine, {"liver": liver.astype(np.float32) * 0.5}))
    folder = write_masks(tmp_path / "f", seg.affine, {"liver": liver})
    (folder / f"{prompt_id('liver')}.nii.gz").unlink()
    with pytest.raises(MissingImageError, match="mask"):
        compute_study_stats(image, folder)
    folder = write_masks(tmp_path / "g", seg.affine, {"liver": liver})
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError):
        compute_study_stats(image, folder)
    # every one of these is an InputError: the workflow turns it into a status row
    assert issubclass(GridMismatchError, InputError) and issubclass(NonBinaryMaskError, InputError)
    # empty masks are rows
    res = compute_study_stats(image, write_masks(tmp_path / "h", seg.affine, {"brain": np.zeros_like(liver)}))
    assert res.rows[0]["empty"] is True and res.rows[0]["volume_ml"] == 0.0
