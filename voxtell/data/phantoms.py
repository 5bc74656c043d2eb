"""Synthetic CT-like torso phantoms with label maps, for tests, the demo and CPU training.

Real cohorts cannot ship with an open-source project, yet training, retraining, laterality
checks and the demo all need volumes whose ground truth is known exactly. A phantom is
drawn in patient (RAS, millimetre) space from a few dozen random numbers: a body outline
with subcutaneous fat and a muscle wall, lungs above a domed diaphragm, a heart that
carves the left lung, the liver on the RIGHT, the spleen on the LEFT, both kidneys (the
right one a little lower, as in most patients), vertebral bodies, the aorta slightly left
of the midline, and lesions (lung nodules, liver lesions, lymph nodes and, only when asked,
an adrenal lesion: the concept held out to test retraining). The volume is then stored
in one of several orientations (RAS, LPS, LAS), so code that ignores the affine swaps left
and right and fails the tests.

Everything is deterministic in ``(seed, index)``: case ``i`` of a cohort is the same
whatever the cohort size, which keeps training and held-out sets disjoint and stable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from scipy import ndimage

from voxtell.errors import ConfigError

log = logging.getLogger(__name__)

#: Label values of the phantom label maps (nnU-Net style: background 0, consecutive).
LABELS: dict[str, int] = {
    "background": 0,
    "body": 1,
    "lung_left": 2,
    "lung_right": 3,
    "liver": 4,
    "spleen": 5,
    "kidney_left": 6,
    "kidney_right": 7,
    "spine": 8,
    "aorta": 9,
    "lung_nodule": 10,
    "liver_lesion": 11,
    "lymph_node": 12,
    "adrenal_lesion": 13,
}

#: Labels that every phantom has (the ``organs`` of the evaluation).
ORGAN_LABELS = ("lung_left", "lung_right", "liver", "spleen", "kidney_left", "kidney_right", "spine", "aorta")
LESION_LABELS = ("lung_nodule", "liver_lesion", "lymph_node", "adrenal_lesion")
#: Labels that exist only when the generator is asked for them (held-out concepts).
OPTIONAL_LABELS = ("adrenal_lesion",)

ORIENTATIONS = ("RAS", "LPS", "LAS")


@dataclass(frozen=True)
class PhantomConfig:
    """What varies between phantoms, and how much.

    The defaults give volumes of roughly 65-95 x 50-70 x 50-75 voxels (4-6 mm), small
    enough that CPU training of the ``small`` preset takes minutes.
    """

    inplane_spacing_mm: tuple[float, float] = (4.0, 6.0)
    slice_spacing_mm: tuple[float, float] = (4.0, 6.0)
    orientations: tuple[str, ...] = ORIENTATIONS
    noise_hu: tuple[float, float] = (8.0, 25.0)
    max_lung_nodules: int = 3
    max_liver_lesions: int = 2
    max_lymph_nodes: int = 3
    #: Probability that a phantom has an adrenal lesion; 0 keeps the concept held out.
    adrenal_lesion_rate: float = 0.0
    #: Probability of at least one lesion of each kind (the rest have none: negatives).
    lesion_rate: float = 0.7

    def __post_init__(self) -> None:
        for name in ("inplane_spacing_mm", "slice_spacing_mm", "noise_hu"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"PhantomConfig.{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        bad = [o for o in self.orientations if o not in ORIENTATIONS]
        if bad or not self.orientations:
            raise ConfigError(f"PhantomConfig.orientations must be a non-empty subset of {ORIENTATIONS}, got {self.orientations}")
        for name in ("adrenal_lesion_rate", "lesion_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"PhantomConfig.{name} must lie in [0, 1]")


@dataclass(frozen=True)
class Lesion:
    """One lesion as a report would describe it."""

    kind: str  # a LESION_LABELS name
    side: str | None  # "left" / "right" / None (midline)
    location: str  # e.g. "right upper lobe", "para-aortic"
    diameter_mm: float
    center_ras_mm: tuple[float, float, float]


@dataclass(frozen=True)
class Phantom:
    """One case: HU image and label map on the same grid, in the stored orientation."""

    case_id: str
    image: np.ndarray  # int16 HU, shape (X, Y, Z) in ``orientation``
    labels: np.ndarray  # uint8, same shape
    affine: np.ndarray  # 4x4 voxel -> RAS mm
    orientation: str
    lesions: tuple[Lesion, ...] = field(default_factory=tuple)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def label_values(self) -> set[int]:
        return {int(v) for v in np.unique(self.labels)}

    def to_nifti(self):
        """(image, label) as nibabel ``Nifti1Image`` objects with identical geometry."""
        import nibabel as nib

        img = nib.Nifti1Image(self.image, self.affine)
        seg = nib.Nifti1Image(self.labels, self.affine)
        for im, code in ((img, 1), (seg, 1)):
            im.set_qform(self.affine, code=code)
            im.set_sform(self.affine, code=code)
        img.header.set_xyzt_units("mm")
        seg.header.set_xyzt_units("mm")
        return img, seg


def case_rng(seed: int, index: int) -> np.random.Generator:
    """Independent stream per case, so case ``index`` does not depend on the cohort size."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def generate_cohort(n: int, seed: int = 0, config: PhantomConfig | None = None, start: int = 0,
                    prefix: str = "phantom") -> Iterator[Phantom]:
    """Yield ``n`` phantoms ``start .. start+n-1`` (lazily: a cohort never sits in memory)."""
    if n < 0:
        raise ConfigError(f"number of phantoms must be >= 0, got {n}")
    for i in range(start, start + n):
        yield generate_phantom(seed, i, config, case_id=f"{prefix}_{i:04d}")


def generate_phantom(seed: int, index: int, config: PhantomConfig | None = None, case_id: str | None = None) -> Phantom:
    """Draw one phantom; the same ``(seed, index, config)`` gives the same arrays."""
    cfg = config or PhantomConfig()
    rng = case_rng(seed, index)
    return _Builder(cfg, rng).build(case_id or f"phantom_{index:04d}")


# --------------------------------------------------------------------------------------
# Drawing


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


class _Builder:
    """Draws one phantom on a RAS grid, then reorients it for storage."""

    def __init__(self, cfg: PhantomConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng

    # -- grid -----------------------------------------------------------------------------
    def _grid(self) -> None:
        r, cfg = self.rng, self.cfg
        self.ax = _u(r, 140, 175)  # body half-width (left-right), mm
        self.ay = _u(r, 95, 125)  # body half-depth (antero-posterior), mm
        half_z = _u(r, 130, 165)
        sx = _u(r, *cfg.inplane_spacing_mm)
        sz = _u(r, *cfg.slice_spacing_mm)
        self.spacing = np.array([sx, sx, sz])
        fov = np.array([2 * self.ax + _u(r, 20, 60), 2 * self.ay + _u(r, 20, 60), 2 * half_z])
        shape = np.maximum(np.round(fov / self.spacing).astype(int), 16)
        self.shape = tuple(int(s) for s in shape)
        # The body centre is not always the volume centre (patients are not centred).
        shift = np.array([_u(r, -10, 10), _u(r, -10, 10), _u(r, -15, 15)])
        origin = -(shape - 1) / 2.0 * self.spacing + shift
        self.affine = np.diag([*self.spacing, 1.0])
        self.affine[:3, 3] = origin
        ii, jj, kk = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape), indexing="ij")
        self.X = ii * np.float32(sx) + np.float32(origin[0])
        self.Y = jj * np.float32(sx) + np.float32(origin[1])
        self.Z = kk * np.float32(sz) + np.float32(origin[2])

    def _wobble(self, amplitude: float, sigma_mm: float = 25.0) -> np.ndarray:
        """Smooth random field (about +-amplitude) that makes shapes irregular."""
        coarse = self.rng.standard_normal(self.shape).astype(np.float32)
        field_ = ndimage.gaussian_filter(coarse, sigma=sigma_mm / self.spacing, mode="wrap")
        std = float(field_.std()) or 1.0
        return field_ * np.float32(amplitude / std)

    def _ellipsoid(self, c, radii, wobble: float = 0.12) -> np.ndarray:
        d = ((self.X - c[0]) / radii[0]) ** 2 + ((self.Y - c[1]) / radii[1]) ** 2 + ((self.Z - c[2]) / radii[2]) ** 2
        if wobble:
            d = d + self._wobble(wobble)
        return d <= 1.0

    # -- anatomy ----------------------------------------------------------------------------
    def build(self, case_id: str) -> Phantom:
        r, cfg = self.rng, self.cfg
        self._grid()
        X, Y, Z = self.X, self.Y, self.Z
        ax, ay = self.ax, self.ay
        lab = np.zeros(self.shape, np.uint8)
        hu = np.full(self.shape, -1000.0, np.float32)
        L = LABELS

        body_d = (X / ax) ** 2 + (Y / ay) ** 2 + self._wobble(0.03, 60.0)
        body = body_d <= 1.0
        fat_t, muscle_t = _u(r, 8, 20), _u(r, 6, 12)
        inner = (X / (ax - fat_t)) ** 2 + (Y / (ay - fat_t)) ** 2 <= 1.0
        cavity = (X / (ax - fat_t - muscle_t)) ** 2 + (Y / (ay - fat_t - muscle_t)) ** 2 <= 1.0
        lab[body] = L["body"]
        hu[body] = _u(r, -110, -90)  # subcutaneous fat
        hu[inner] = _u(r, 35, 55)  # muscle wall
        hu[cavity] = _u(r, -100, -75)  # visceral / mediastinal fat
        hu += np.where(cavity, self._wobble(12.0, 8.0), 0.0).astype(np.float32)

        # Diaphragm: a dome, highest near the centre, the right side a little higher.
        zdia = _u(r, -15, 15)
        dome = zdia + 18.0 - 30.0 * ((X / ax) ** 2 + (Y / ay) ** 2) + 6.0 * (X / ax)
        above, below = Z > dome, Z <= dome

        # Lungs (the right lung is larger), then the heart and mediastinum carve them.
        med_x = _u(r, -15, -5)
        lung_hu = _u(r, -870, -820)
        lungs = {}
        for side, sgn, scale in (("right", 1.0, 1.0), ("left", -1.0, 0.9)):
            c = (sgn * ax * _u(r, 0.45, 0.52), ay * _u(r, -0.05, 0.05), zdia + _u(r, 60, 80))
            radii = (ax * 0.36 * scale * _u(r, 0.9, 1.1), ay * 0.72 * _u(r, 0.9, 1.05), _u(r, 110, 140))
            m = self._ellipsoid(c, radii, 0.10) & above & cavity & (np.abs(X - med_x) > _u(r, 22, 30))
            lungs[side] = m
            lab[m] = L[f"lung_{side}"]
            hu[m] = lung_hu
        heart = self._ellipsoid((med_x - _u(r, 5, 15), ay * _u(r, 0.1, 0.25), zdia + _u(r, 35, 50)),
                                (_u(r, 50, 60), _u(r, 42, 50), _u(r, 40, 50)), 0.08) & cavity & (Z > dome - 10)
        lab[heart] = L["body"]
        hu[heart] = _u(r, 30, 45)
        lungs = {s: lab == L[f"lung_{s}"] for s in lungs}

        # Liver (right), spleen (left) under the diaphragm.
        liver_c = (ax * _u(r, 0.25, 0.35), ay * _u(r, 0.0, 0.15), zdia - _u(r, 45, 60))
        liver = self._ellipsoid(liver_c, (ax * _u(r, 0.5, 0.6), ay * _u(r, 0.62, 0.75), _u(r, 55, 70)), 0.12) & below & cavity
        liver &= X > -ax * 0.35  # the left lobe stops short of the spleen
        liver_hu = _u(r, 55, 70)
        lab[liver] = L["liver"]
        hu[liver] = liver_hu
        spleen_c = (-ax * _u(r, 0.55, 0.65), -ay * _u(r, 0.25, 0.4), zdia - _u(r, 35, 50))
        spleen = self._ellipsoid(spleen_c, (_u(r, 24, 32), _u(r, 38, 50), _u(r, 40, 55)), 0.12) & below & cavity
        lab[spleen] = L["spleen"]
        hu[spleen] = _u(r, 45, 55)

        # Spine (vertebral bodies with discs) and the aorta left-anterior of it.
        spine_y = -ay * _u(r, 0.6, 0.7)
        vb_r = _u(r, 15, 20)
        period, disc = _u(r, 28, 32), _u(r, 5, 8)
        phase = _u(r, 0, period)
        vb = (X**2 + ((Y - spine_y) / 1.1) ** 2 <= vb_r**2) & (np.mod(Z - phase, period) > disc)
        post = ((X / (vb_r * 0.9)) ** 2 + ((Y - spine_y + vb_r + 12) / 12) ** 2 <= 1.0)
        spine = (vb | post) & inner
        lab[spine] = L["spine"]
        hu[spine] = _u(r, 300, 450)
        hu[vb & ~(self._ellipsoid((0, spine_y, 0), (vb_r - 4, vb_r - 4, 1e6), 0))] = _u(r, 600, 800)  # cortex

        ao_x, ao_y, ao_r = -_u(r, 12, 25), spine_y + vb_r + _u(r, 12, 18), _u(r, 9, 13)
        aorta = ((X - ao_x) ** 2 + (Y - ao_y) ** 2 <= ao_r**2) & cavity & (Z < zdia + _u(r, 70, 100))
        lab[aorta] = L["aorta"]
        hu[aorta] = _u(r, 160, 240)

        # Kidneys: posterior, either side of the spine; the right one lower.
        kidneys = {}
        kz = zdia - _u(r, 85, 105)
        for side, sgn, dz in (("right", 1.0, -_u(r, 5, 15)), ("left", -1.0, 0.0)):
            c = (sgn * (vb_r + _u(r, 45, 60)), spine_y + _u(r, 10, 25), kz + dz)
            m = self._ellipsoid(c, (_u(r, 22, 28), _u(r, 24, 30), _u(r, 45, 55)), 0.08) & cavity & ~spine
            kidneys[side] = (m, c)
            lab[m] = L[f"kidney_{side}"]
            hu[m] = _u(r, 140, 190)

        lesions: list[Lesion] = []
        lesions += self._lung_nodules(lab, hu, lungs, zdia)
        lesions += self._liver_lesions(lab, hu, liver_hu)
        lesions += self._lymph_nodes(lab, hu, ao_x, ao_y, ao_r, zdia)
        if r.random() < cfg.adrenal_lesion_rate:
            lesions += self._adrenal_lesion(lab, hu, kidneys)

        # Partial volume, then noise; outside the body stays (noisy) air.
        hu = ndimage.gaussian_filter(hu, sigma=0.6)
        hu += r.normal(0.0, _u(r, *cfg.noise_hu), self.shape).astype(np.float32)
        image = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

        orientation = str(r.choice(list(cfg.orientations)))
        image, labels, affine = _reorient(image, lab, self.affine, orientation)
        return Phantom(case_id, image, labels, affine, orientation, tuple(lesions))

    # -- lesions ----------------------------------------------------------------------------
    def _count(self, maximum: int) -> int:
        if maximum <= 0 or self.rng.random() >= self.cfg.lesion_rate:
            return 0
        return int(self.rng.integers(1, maximum + 1))

    def _place_inside(self, region: np.ndarray, radius_mm: float) -> np.ndarray | None:
        """A random voxel of ``region`` at least ``radius_mm`` from its border (or None)."""
        dist = ndimage.distance_transform_edt(region, sampling=self.spacing)
        cand = np.argwhere(dist >= radius_mm + 1.0)
        if len(cand) == 0:
            return None
        return cand[self.rng.integers(len(cand))]

    def _ras(self, ijk) -> tuple[float, float, float]:
        return tuple(float(v) for v in (self.affine @ np.array([*ijk, 1.0]))[:3])  # type: ignore[return-value]

    def _sphere(self, c, radius: float) -> np.ndarray:
        return self._ellipsoid(c, (radius, radius, radius), 0.05)

    def _lung_nodules(self, lab, hu, lungs, zdia) -> list[Lesion]:
        out = []
        for _ in range(self._count(self.cfg.max_lung_nodules)):
            side = "right" if self.rng.random() < 0.5 else "left"
            radius = _u(self.rng, 3.5, 10.0)
            ijk = self._place_inside(lungs[side], radius)
            if ijk is None:
                continue
            c = self._ras(ijk)
            m = self._sphere(c, radius) & lungs[side]
            lab[m] = LABELS["lung_nodule"]
            hu[m] = _u(self.rng, 10, 50)
            lobe = "upper" if c[2] > zdia + 60 else "lower"
            out.append(Lesion("lung_nodule", side, f"{side} {lobe} lobe", round(2 * radius, 1), c))
        return out

    def _liver_lesions(self, lab, hu, liver_hu) -> list[Lesion]:
        out = []
        for _ in range(self._count(self.cfg.max_liver_lesions)):
            liver = lab == LABELS["liver"]
            radius = _u(self.rng, 5.0, 16.0)
            ijk = self._place_inside(liver, radius + 2.0)
            if ijk is None:
                continue
            c = self._ras(ijk)
            m = self._sphere(c, radius) & liver
            lab[m] = LABELS["liver_lesion"]
            hu[m] = liver_hu - _u(self.rng, 35, 60)
            lobe = "right" if c[0] > 0 else "left"
            out.append(Lesion("liver_lesion", None, f"{lobe} hepatic lobe", round(2 * radius, 1), c))
        return out

    def _lymph_nodes(self, lab, hu, ao_x, ao_y, ao_r, zdia) -> list[Lesion]:
        out = []
        for _ in range(self._count(self.cfg.max_lymph_nodes)):
            radius = _u(self.rng, 5.0, 10.0)
            if self.rng.random() < 0.6:
                side = "left" if self.rng.random() < 0.6 else "right"
                dx = (-1 if side == "left" else 1) * (ao_r + radius + _u(self.rng, 1, 6))
                c = (ao_x + dx, ao_y + _u(self.rng, -8, 12), zdia - _u(self.rng, 30, 110))
                loc = "left para-aortic" if side == "left" else "aortocaval"
                side = "left" if side == "left" else None  # aortocaval nodes lie near the midline
            else:
                side = None
                c = (ao_x + _u(self.rng, 0, 20), _u(self.rng, -10, 20), zdia + _u(self.rng, 55, 90))
                loc = "mediastinal"
            m = self._ellipsoid(c, (radius, radius * 0.8, radius * 1.2), 0.05) & (lab == LABELS["body"])
            if m.sum() * np.prod(self.spacing) < 0.3 * 4 / 3 * np.pi * radius**3:
                continue  # no room in the fat here
            lab[m] = LABELS["lymph_node"]
            hu[m] = _u(self.rng, 30, 50)
            out.append(Lesion("lymph_node", side, loc, round(2 * radius, 1), c))
        return out

    def _adrenal_lesion(self, lab, hu, kidneys) -> list[Lesion]:
        side = "right" if self.rng.random() < 0.5 else "left"
        _, kc = kidneys[side]
        # 2-3.6 cm: the adrenal masses reports describe (incidentalomas >= 1 cm, metastases
        # larger); at 4-6 mm voxels smaller ones are a handful of voxels.
        radius = _u(self.rng, 10.0, 18.0)
        sgn = 1.0 if side == "right" else -1.0
        c = (kc[0] - sgn * _u(self.rng, 8, 15), kc[1] + _u(self.rng, 0, 10), kc[2] + _u(self.rng, 55, 65) + radius)
        # The gland is retroperitoneal: a mass pushes the liver or spleen aside with a plane of
        # fat between them rather than growing inside them. Without that plane the part of it
        # cut into the liver would be indistinguishable from a hypodense liver lesion.
        free = np.isin(lab, (LABELS["body"], LABELS["liver"], LABELS["spleen"]))
        plane = self._sphere(c, radius + _u(self.rng, 3.0, 5.0)) & free
        m = self._sphere(c, radius) & plane
        if not m.any():
            return []
        lab[plane] = LABELS["body"]
        hu[plane] = _u(self.rng, -100, -80)
        lab[m] = LABELS["adrenal_lesion"]
        hu[m] = _u(self.rng, 0, 25)
        return [Lesion("adrenal_lesion", side, f"{side} adrenal gland", round(2 * radius, 1), c)]


def _reorient(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, code: str):
    """Store a RAS-drawn volume in orientation ``code`` without moving it in the world."""
    import nibabel as nib
    from nibabel import orientations as nio

    if code == "RAS":
        return image, labels, affine
    transform = nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.axcodes2ornt(tuple(code)))
    new_affine = affine @ nio.inv_ornt_aff(transform, image.shape)
    img = np.ascontiguousarray(nio.apply_orientation(image, transform))
    lab = np.ascontiguousarray(nio.apply_orientation(labels, transform))
    assert "".join(nib.aff2axcodes(new_affine)) == code
    return img, lab, new_affine
