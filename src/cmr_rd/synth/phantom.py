"""Synthetic cardiac anatomy with class-specific LGE patterns (pure numpy).

The heart is a 3D model in *heart coordinates* (mm): X along the short-axis image rows (left to
right on screen), Y up on screen (anterior), Z along the long axis from the basal slice (Z=0)
towards the apex. Short-axis slice k sits at Z = 10*k. Because the model is 3D, the same anatomy
is sampled by every plane of the exam (SAX stack, long-axis views, localizers), so all series of
one patient agree with each other and with the report.

Angles (phi, degrees) are measured counter-clockwise on screen from the lateral wall: 0 lateral,
90 anterior, 180 septal (the RV side, on the left of the image), 270 inferior. The AHA segment
helpers in `report.py` use the same convention.

Body structures (chest wall, lungs, liver, aorta, spine) live in patient coordinates (LPS) around
the heart, so localizers look like a chest and oblique planes cut them plausibly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr_rd.classes import CLASSES

SLICE_GAP_MM = 10.0

# Tissue labels of the rendered maps.
AIR, LUNG, MUSCLE, LIVER, FAT, LV_BLOOD, RV_BLOOD, LV_MYO, RV_MYO, OTHER_BLOOD, BONE = range(11)
N_TISSUES = 11

# MI territories: centre angle of the culprit artery's wall in our angle convention.
TERRITORY_CENTRE = {"LAD": 120.0, "RCA": 240.0, "LCx": 335.0}
# RV insertion points (anterior and inferior junctions of the septum with the RV free wall).
RV_INSERTION = {"anterior": 118.0, "inferior": 242.0}


@dataclass(frozen=True)
class Patch:
    """A mid-wall enhancement patch (HCM insertion points, DCM septal stripe, LVNC focus)."""

    name: str
    phi: float  # centre angle, deg
    half_width: float  # deg
    d_lo: float  # depth band inside the wall, 0 = endocardium, 1 = epicardium
    d_hi: float
    k_lo: int  # first and last slice index that show the patch
    k_hi: int
    amp: float  # 0..1 share of the scar signal
    freq: float  # patchiness modulation
    phase: float


@dataclass(frozen=True)
class Anatomy:
    """Per-patient heart parameters: what the images show and the report describes."""

    label: str
    n_slices: int
    r_endo: float  # basal end-diastolic endocardial radius, mm (LVNC: compact layer inner edge)
    t_free: float  # free (lateral) wall thickness, mm
    t_sept: float  # septal thickness, mm
    ef: float  # ejection fraction, drives the cine systolic frame
    rv_width: float  # how far the RV cavity reaches beyond the septum, mm
    t_rv: float
    fat_mm: float  # epicardial fat in the grooves
    blood: float  # LGE PSIR signal of the blood pool, relative units (scar ~1)
    myo: float  # LGE PSIR signal of remote myocardium (<=0: nulled)
    scar: float
    t1_myo: float  # native T1, ms
    t1_blood: float
    t1_scar: float
    post_t1_myo: float  # post-contrast T1 for the TI scout, ms
    post_t1_blood: float
    post_t1_scar: float
    hcm_variant: str = ""  # "asymmetric" | "concentric"
    patches: tuple[Patch, ...] = ()
    dcm_stripe: bool = False
    mi_territory: str = ""
    mi_centre: float = 0.0
    mi_extent: float = 0.0  # deg of arc
    mi_transmurality: float = 0.0  # 0..1 at the arc centre
    mi_slices: tuple[int, int] = (-1, -1)
    mi_wobble: float = 0.0
    cam_ring_mm: float = 0.0
    cam_patchy: bool = False
    lvnc_ratio: float = 0.0  # noncompacted : compacted thickness
    lvnc_arc: tuple[float, float] = (0.0, 0.0)  # centre, width (deg)
    lvnc_from: int = 0  # first slice with trabeculation
    lvnc_spikes: tuple[tuple[float, float, float], ...] = ()  # (phi, base half-width mm, length)

    @property
    def length(self) -> float:
        """Endocardial base-to-apex length: the stack's last slice is near the apex."""
        return (self.n_slices - 1) * SLICE_GAP_MM / 0.95

    @property
    def edd_mm(self) -> float:
        return 2.0 * self.r_endo

    @property
    def max_thickness(self) -> float:
        return max(self.t_sept, self.t_free)

    @property
    def mid_slice(self) -> int:
        return self.n_slices // 2


@dataclass(frozen=True)
class Body:
    """Chest around the heart, offsets in mm from the LV centre in patient LPS axes.

    Inside the chest wall (subcutaneous fat, then muscle) the thorax is lung, except the
    posterior mediastinum (soft tissue with the descending aorta), the spine and the liver dome.
    """

    centre: tuple[float, float]
    semi: tuple[float, float]
    subcut_mm: float
    wall_mm: float
    mediastinum: tuple[float, float, float, float]  # x, y, semi-x, semi-y
    liver: tuple[tuple[float, float, float], tuple[float, float, float]]
    aorta: tuple[float, float, float]  # x, y, radius
    spine: tuple[float, float, float]
    lge_muscle: float
    lge_liver: float
    lge_fat: float


@dataclass(frozen=True)
class Frame:
    """Heart coordinate frame in patient space: origin = LV centre on the basal slice."""

    origin: np.ndarray
    ex: np.ndarray  # = SAX row direction
    ey: np.ndarray  # = minus SAX column direction (up on screen)
    ez: np.ndarray  # = SAX slice normal, base -> apex


@dataclass(frozen=True)
class TissueMaps:
    labels: np.ndarray  # uint8 tissue label per pixel
    enh: np.ndarray  # float32 0..1 enhancement (share of the scar signal) in myocardium
    lesion: np.ndarray  # bool, MI scar (the lesion box comes from this)


# ----------------------------------------------------------------------------- drawing


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _contiguous(
    rng: np.random.Generator,
    n: int,
    lo_range: tuple[int, int],
    must: int,
    min_len: int,
    max_len: int,
) -> tuple[int, int]:
    """A contiguous slice range holding slices must-1 and must (the mid-ventricular pair)."""
    length = int(rng.integers(min_len, max_len + 1))
    lo = int(rng.integers(lo_range[0], lo_range[1] + 1))
    lo = max(0, min(lo, must - 1))
    hi = min(n - 1, max(lo + length - 1, must))
    return lo, hi


def draw_anatomy(label: str, rng: np.random.Generator, n_slices: int) -> Anatomy:
    """Draw one patient's heart; ranges follow the class descriptions (with deliberate overlap)."""
    if label not in CLASSES:
        raise ValueError(f"unknown class {label!r}")
    n = n_slices
    mid = n // 2
    size = _u(rng, 0.93, 1.07)  # per-patient size jitter on top of the class ranges
    common = dict(
        label=label,
        n_slices=n,
        rv_width=_u(rng, 10, 17) * size,
        t_rv=_u(rng, 2.5, 3.5),
        fat_mm=_u(rng, 2.0, 6.0),
        blood=_u(rng, 0.45, 0.62),
        myo=_u(rng, -0.08, 0.02),
        scar=_u(rng, 1.0, 1.15),
        t1_myo=_u(rng, 960, 1060),
        t1_blood=_u(rng, 1540, 1680),
        t1_scar=_u(rng, 1250, 1400),
        post_t1_myo=_u(rng, 390, 460),
        post_t1_blood=_u(rng, 230, 290),
        post_t1_scar=_u(rng, 170, 220),
    )
    if label == "NOR":
        r = _u(rng, 26, 28) if rng.random() < 0.2 else _u(rng, 22, 27)
        t = _u(rng, 8, 10)
        return Anatomy(
            # the cap keeps a normal LV normal-sized (EDD <= 57 mm) whatever the size jitter
            r_endo=min(r * size, 28.5),
            t_free=t,
            t_sept=t + _u(rng, 0, 1.2),
            ef=_u(rng, 0.56, 0.70),
            **common,
        )
    if label == "DCM":
        r = _u(rng, 28, 31) if rng.random() < 0.2 else _u(rng, 30, 40)
        t = _u(rng, 5, 7)
        stripe = bool(rng.random() < 0.5)
        patches: tuple[Patch, ...] = ()
        if stripe:
            width_mm = _u(rng, 2.8, 4.0)
            lo, hi = _contiguous(rng, n, (0, max(0, mid - 2)), mid, max(2, n // 3), max(3, n - 2))
            patches = (
                Patch(
                    "septal stripe",
                    _u(rng, 172, 188),
                    _u(rng, 28, 45),
                    0.5 - width_mm / (2 * t),
                    0.5 + width_mm / (2 * t),
                    lo,
                    hi,
                    _u(rng, 0.7, 0.88),
                    _u(rng, 0.0, 2.0),
                    _u(rng, 0, 6.28),
                ),
            )
        common["rv_width"] *= _u(rng, 1.0, 1.25)
        return Anatomy(
            r_endo=max(r * size, 28.5),  # a DCM is dilated (EDD >= 57 mm)
            t_free=t,
            t_sept=t + _u(rng, -0.5, 0.8),
            ef=_u(rng, 0.18, 0.40),
            dcm_stripe=stripe,
            patches=patches,
            **common,
        )
    if label == "HCM":
        concentric = bool(rng.random() < 0.2)
        if concentric:
            t_sept = _u(rng, 15, 19)
            t_free = t_sept - _u(rng, 0, 2)
        else:
            t_sept = _u(rng, 15, 25)
            t_free = _u(rng, 9, 13)
        which = rng.choice(["both", "both", "both", "anterior", "inferior"])
        sites = ["anterior", "inferior"] if which == "both" else [str(which)]
        patches = []
        for site in sites:
            lo, hi = _contiguous(rng, n, (0, max(0, mid - 1)), mid, 2, max(3, n - 2))
            patches.append(
                Patch(
                    f"{site} RV insertion",
                    RV_INSERTION[site] + _u(rng, -8, 8),
                    _u(rng, 11, 20),
                    _u(rng, 0.15, 0.3),
                    _u(rng, 0.7, 0.9),
                    lo,
                    hi,
                    _u(rng, 0.75, 0.95),
                    _u(rng, 2.0, 5.0),
                    _u(rng, 0, 6.28),
                )
            )
        if rng.random() < 0.4:
            lo, hi = _contiguous(rng, n, (0, mid), mid, 2, max(2, n // 2))
            patches.append(
                Patch(
                    "septal mid-wall",
                    _u(rng, 165, 195),
                    _u(rng, 10, 22),
                    0.35,
                    0.65,
                    lo,
                    hi,
                    _u(rng, 0.6, 0.8),
                    _u(rng, 3, 6),
                    _u(rng, 0, 6.28),
                )
            )
        common["t1_myo"] = _u(rng, 1030, 1120)
        return Anatomy(
            r_endo=_u(rng, 16, 22) * size,
            t_free=t_free,
            t_sept=t_sept,
            ef=_u(rng, 0.66, 0.80),
            hcm_variant="concentric" if concentric else "asymmetric",
            patches=tuple(patches),
            **common,
        )
    if label == "MI":
        territory = str(rng.choice(["LAD", "LAD", "RCA", "LCx"]))
        if territory == "LAD":  # LAD infarcts sit mid-to-apical
            lo_range = (max(1, n // 4), mid)
        else:  # RCA / LCx infarcts sit basal-to-mid
            lo_range = (0, max(0, n // 4))
        lo, hi = _contiguous(rng, n, lo_range, mid, 2, max(3, int(0.7 * n)))
        if territory != "LAD":
            hi = min(hi, max(mid, int(2 * n / 3)))
        t = _u(rng, 8, 11)
        return Anatomy(
            r_endo=_u(rng, 23, 31) * size,
            t_free=t,
            t_sept=t + _u(rng, 0, 1),
            ef=_u(rng, 0.35, 0.55),
            mi_territory=territory,
            mi_centre=TERRITORY_CENTRE[territory] + _u(rng, -15, 15),
            mi_extent=_u(rng, 40, 110),
            mi_transmurality=_u(rng, 0.3, 1.0),
            mi_slices=(lo, hi),
            mi_wobble=_u(rng, 0, 6.28),
            **common,
        )
    if label == "CAM":
        t = _u(rng, 12, 16)
        common.update(
            blood=_u(rng, 0.16, 0.3),
            myo=_u(rng, 0.32, 0.45),
            scar=_u(rng, 0.85, 1.0),
            t_rv=_u(rng, 4.5, 6.5),
            t1_myo=_u(rng, 1300, 1500),
            post_t1_myo=_u(rng, 250, 300),
            post_t1_blood=_u(rng, 290, 340),
        )
        return Anatomy(
            r_endo=_u(rng, 18, 24) * size,
            t_free=t,
            t_sept=t + _u(rng, 0, 1.5),
            ef=_u(rng, 0.42, 0.60),
            cam_ring_mm=_u(rng, 2.2, 3.8),
            cam_patchy=bool(rng.random() < 0.25),
            **common,
        )
    # LVNC
    t_c = _u(rng, 4, 6)
    arc_centre = _u(rng, 300, 380) % 360  # lateral / inferolateral, sometimes anterolateral
    arc_width = _u(rng, 150, 250)
    n_spikes = int(rng.integers(6, 13))
    offsets = np.sort(rng.uniform(-0.5, 0.5, n_spikes)) * arc_width
    spikes = tuple(
        (float((arc_centre + o) % 360), _u(rng, 2.8, 4.2), _u(rng, 0.65, 1.0)) for o in offsets
    )
    patches = ()
    if rng.random() < 0.15:
        patches = (
            Patch(
                "inferior RV insertion",
                RV_INSERTION["inferior"] + _u(rng, -6, 6),
                _u(rng, 6, 10),
                0.3,
                0.8,
                mid,
                min(n - 1, mid + 1),
                0.7,
                0.0,
                0.0,
            ),
        )
    return Anatomy(
        r_endo=_u(rng, 25, 32) * size,
        t_free=t_c,
        t_sept=t_c + _u(rng, 0.5, 2.5),
        ef=_u(rng, 0.38, 0.58),
        lvnc_ratio=_u(rng, 2.3, 3.4),
        lvnc_arc=(arc_centre, arc_width),
        lvnc_from=int(rng.integers(1, max(1, mid - 1) + 1)),
        lvnc_spikes=spikes,
        patches=patches,
        **common,
    )


def draw_body(rng: np.random.Generator) -> Body:
    """A chest around the heart: the heart sits anterior and left of the body centre."""
    return Body(
        centre=(_u(rng, -40, -25), _u(rng, 35, 50)),
        semi=(_u(rng, 150, 185), _u(rng, 105, 125)),
        subcut_mm=_u(rng, 6, 18),
        wall_mm=_u(rng, 12, 22),
        mediastinum=(_u(rng, -25, -10), _u(rng, 60, 75), _u(rng, 22, 30), 45.0),
        liver=((_u(rng, -80, -60), 25.0, _u(rng, -120, -105)), (115.0, 95.0, 80.0)),
        aorta=(_u(rng, 5, 20), _u(rng, 65, 80), _u(rng, 11, 14)),
        spine=(_u(rng, -20, -8), _u(rng, 95, 110), _u(rng, 17, 22)),
        lge_muscle=_u(rng, 0.1, 0.2),
        lge_liver=_u(rng, 0.22, 0.32),
        lge_fat=_u(rng, 0.42, 0.58),
    )


# ----------------------------------------------------------------------------- rendering


def _angdiff(a: np.ndarray, b: float | np.ndarray) -> np.ndarray:
    return (a - b + 180.0) % 360.0 - 180.0


def _window(x: np.ndarray) -> np.ndarray:
    """Flat-topped window on |x| < 1, smooth fall-off: patch edges look biological."""
    return np.clip(1.0 - np.abs(x) ** 3, 0.0, 1.0)


def _band(d: np.ndarray, lo: float, hi: float, soft: float = 0.08) -> np.ndarray:
    return np.clip(np.minimum(d - lo, hi - d) / soft + 0.5, 0.0, 1.0)


def _zrange(z: np.ndarray, k_lo: int, k_hi: int) -> np.ndarray:
    return (z >= SLICE_GAP_MM * k_lo - 5.0) & (z <= SLICE_GAP_MM * k_hi + 5.0)


def wall_thickness(anat: Anatomy, phi: np.ndarray) -> np.ndarray:
    """Thickness by angle: septal excess tapers off over +-75 deg; transmural MI thins the wall."""
    x = np.clip(np.abs(_angdiff(phi, 180.0)) / 75.0, 0.0, 1.0)
    t = anat.t_free + (anat.t_sept - anat.t_free) * 0.5 * (1.0 + np.cos(np.pi * x))
    if anat.mi_territory and anat.mi_transmurality > 0.75:
        thin = 0.35 * (anat.mi_transmurality - 0.75) / 0.25
        arc = _window(_angdiff(phi, anat.mi_centre) / (anat.mi_extent / 2.0))
        t = t * (1.0 - thin * arc)
    return t


def render_heart(
    anat: Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray, contraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Label the heart at heart coordinates; contraction 0 = end-diastole, 1 = end-systole.

    Returns (labels with AIR where no heart, enhancement, lesion mask, pericardial fat mask).
    """
    rho = np.hypot(x, y)
    phi = np.degrees(np.arctan2(y, x)) % 360.0
    length = anat.length
    zc = np.clip(z, 0.0, None)
    t = wall_thickness(anat, phi)
    k_c = 1.0 - contraction * (1.0 - np.sqrt(1.0 - anat.ef))
    r_en = anat.r_endo * k_c
    r_ep = np.sqrt(r_en**2 + (anat.r_endo + t) ** 2 - anat.r_endo**2)
    f_en = np.sqrt(np.clip(1.0 - (zc / length) ** 2, 0.0, 1.0))
    len_epi = length + 0.8 * anat.t_free
    f_ep = np.sqrt(np.clip(1.0 - (zc / len_epi) ** 2, 0.0, 1.0))
    in_z = z >= -8.0
    r_in = r_en * f_en
    r_out = r_ep * f_ep
    labels = np.zeros(x.shape, np.uint8)
    enh = np.zeros(x.shape, np.float32)

    lv = in_z & (rho < r_out)
    cav = lv & (rho < r_in)
    myo = lv & ~cav
    depth = np.clip((rho - r_in) / np.maximum(r_out - r_in, 1e-3), 0.0, 1.0)

    if anat.lvnc_ratio > 0:  # trabeculated layer: finger-like myocardium into the cavity
        nc = anat.lvnc_ratio * anat.t_free * f_en * (1.0 - 0.4 * contraction)
        zone = cav & (rho > r_in - nc) & (z >= SLICE_GAP_MM * anat.lvnc_from - 8.0)
        zone &= np.abs(_angdiff(phi, anat.lvnc_arc[0])) <= anat.lvnc_arc[1] / 2.0 + 6.0
        idx = np.nonzero(zone)  # only the trabeculated zone needs the per-spike geometry
        zr, zp, zz, zin, znc = rho[idx], phi[idx], z[idx], r_in[idx], nc[idx]
        hit = np.zeros(zr.shape, bool)
        for k, (sp_phi, half_w, frac) in enumerate(anat.lvnc_spikes):
            reach = znc * frac * (0.85 + 0.15 * np.cos(0.07 * zz + k))
            along = (zin - zr) / np.maximum(reach, 1e-3)  # 0 at the compact layer, 1 at the tip
            twisted = sp_phi + 0.15 * zz  # trabeculae run obliquely along the long axis
            across_mm = np.radians(np.abs(_angdiff(zp, twisted))) * zr
            hit |= (along <= 1.0) & (across_mm <= half_w * (1.0 - along) + 0.6)
        trab = np.zeros(x.shape, bool)
        trab[idx] = hit  # recesses between the trabeculae stay blood
        myo |= trab
        cav &= ~trab

    labels[cav] = LV_BLOOD
    labels[myo] = LV_MYO

    # RV crescent wrapped round the septum, on the left of the image.
    r_s = anat.r_endo + anat.t_sept
    len_rv = 0.8 * length
    f_rv = np.sqrt(np.clip(1.0 - (zc / len_rv) ** 2, 0.0, 1.0))
    rv_w = anat.rv_width * (1.0 - 0.35 * contraction) * f_rv
    xc = -0.85 * r_s * f_ep
    a = 0.15 * r_s * f_ep + rv_w
    b = 1.05 * r_s * f_ep + 0.3 * rv_w
    e_in = ((x - xc) / np.maximum(a, 1e-3)) ** 2 + (y / np.maximum(b, 1e-3)) ** 2
    e_out = ((x - xc) / (a + anat.t_rv)) ** 2 + (y / (b + anat.t_rv)) ** 2
    rv_z = in_z & (z <= len_rv) & (f_rv > 0.05)
    rv_cav = rv_z & (e_in < 1.0) & ~lv
    rv_myo = rv_z & (e_out < 1.0) & ~rv_cav & ~lv
    labels[rv_cav] = RV_BLOOD
    labels[rv_myo] = RV_MYO

    # Epicardial fat, thickest in the interventricular grooves (90 / 270 deg).
    groove = 0.3 + 0.7 * (0.5 + 0.5 * np.cos(np.radians(2.0 * (phi - 90.0))))
    fat_lv = in_z & (rho < r_out + anat.fat_mm * groove) & (z <= len_epi)
    e_fat = ((x - xc) / (a + anat.t_rv + 0.6 * anat.fat_mm)) ** 2 + (
        y / (b + anat.t_rv + 0.6 * anat.fat_mm)
    ) ** 2
    fat = (fat_lv | (rv_z & (e_fat < 1.0))) & (labels == AIR)

    # Atria above the base, only seen on long-axis views and localizers.
    la = ((x / 24.0) ** 2 + ((y + 4.0) / 22.0) ** 2 + ((z + 34.0) / 26.0) ** 2) < 1.0
    ra_x = -(r_s + 0.6 * anat.rv_width)
    ra = (((x - ra_x) / 22.0) ** 2 + ((y + 2.0) / 22.0) ** 2 + ((z + 32.0) / 25.0) ** 2) < 1.0
    atria = (la | ra) & (z < -8.0)
    labels[atria] = OTHER_BLOOD

    lesion = np.zeros(x.shape, bool)
    for p in anat.patches:
        w = _window(_angdiff(phi, p.phi) / p.half_width) * _band(depth, p.d_lo, p.d_hi)
        mod = 0.7 + 0.3 * np.cos(
            p.freq * np.radians(_angdiff(phi, p.phi)) * 6.0 + 0.12 * z + p.phase
        )
        e = p.amp * w * mod * _zrange(z, p.k_lo, p.k_hi)
        enh = np.maximum(enh, np.where(myo, e, 0.0).astype(np.float32))
    if anat.mi_territory:
        x_arc = np.abs(_angdiff(phi, anat.mi_centre)) / (anat.mi_extent / 2.0)
        wobble = 0.9 + 0.1 * np.sin(np.radians(phi) * 5.0 + anat.mi_wobble + 0.05 * z)
        tm = anat.mi_transmurality * (1.0 - np.clip(x_arc, 0.0, 1.0) ** 4) * wobble
        if anat.mi_transmurality >= 0.9:  # transmural core across the arc centre
            tm = np.where(x_arc < 0.6, 1.05, tm)
        e = np.clip((tm - depth) / 0.06 + 0.5, 0.0, 1.0) * (x_arc < 1.0)
        e = e * _zrange(z, *anat.mi_slices) * myo
        enh = np.maximum(enh, e.astype(np.float32))
        lesion = myo & (e > 0.5)
    if anat.cam_ring_mm > 0:
        thick = np.maximum(r_out - r_in, 1e-3)
        ring = np.clip((anat.cam_ring_mm / thick - depth) / 0.08 + 0.5, 0.0, 1.0)
        e = 0.95 * ring
        if anat.cam_patchy:
            e = np.maximum(e, 0.55 * (0.5 + 0.5 * np.cos(np.radians(phi) * 4.0 + 0.1 * z)))
        enh = np.maximum(enh, np.where(myo & (z <= length), e, 0.0).astype(np.float32))
        enh = np.maximum(enh, np.where(rv_myo, 0.6, 0.0).astype(np.float32))
    return labels, enh, lesion, fat


def render_points(
    anat: Anatomy, body: Body, frame: Frame, points: np.ndarray, contraction: float = 0.0
) -> TissueMaps:
    """Tissue maps at patient-space points (shape (3, ...)): body first, then the heart."""
    h = frame.origin + 0.5 * anat.length * frame.ez  # LV centre, the body's reference point
    d = points - h.reshape((3,) + (1,) * (points.ndim - 1))
    dx, dy, dz = d[0], d[1], d[2]
    labels = np.zeros(dx.shape, np.uint8)
    bx, by = body.centre
    ax, ay = body.semi

    def cyl(sx: float, sy: float) -> np.ndarray:
        return (((dx - bx) / sx) ** 2 + ((dy - by) / sy) ** 2) < 1.0

    inside = cyl(ax, ay)
    labels[inside] = FAT
    s_fat, s_wall = body.subcut_mm, body.subcut_mm + body.wall_mm
    labels[cyl(ax - s_fat, ay - s_fat)] = MUSCLE
    labels[cyl(ax - s_wall, ay - s_wall)] = LUNG
    mx, my, msx, msy = body.mediastinum
    labels[inside & ((((dx - mx) / msx) ** 2 + ((dy - my) / msy) ** 2) < 1.0)] = MUSCLE
    (cx, cy, cz), (sx, sy, sz) = body.liver
    liver = (((dx - cx) / sx) ** 2 + ((dy - cy) / sy) ** 2 + ((dz - cz) / sz) ** 2) < 1.0
    labels[inside & liver & (labels != FAT)] = LIVER
    labels[np.hypot(dx - body.aorta[0], dy - body.aorta[1]) < body.aorta[2]] = OTHER_BLOOD
    labels[np.hypot(dx - body.spine[0], dy - body.spine[1]) < body.spine[2]] = BONE

    o = points - frame.origin.reshape((3,) + (1,) * (points.ndim - 1))
    hx = np.tensordot(frame.ex, o, axes=1)
    hy = np.tensordot(frame.ey, o, axes=1)
    hz = np.tensordot(frame.ez, o, axes=1)
    # The heart only needs evaluating near the LV axis (ventricles, fat, atria): a cylinder.
    reach = anat.r_endo + anat.max_thickness + anat.t_rv + 1.6 * anat.rv_width + anat.fat_mm + 30
    near = np.nonzero(
        (hx * hx + hy * hy < reach * reach) & (hz > -70.0) & (hz < anat.length + 20.0)
    )
    heart, enh_n, lesion_n, fat = render_heart(anat, hx[near], hy[near], hz[near], contraction)
    enh = np.zeros(labels.shape, np.float32)
    lesion = np.zeros(labels.shape, bool)
    enh[near], lesion[near] = enh_n, lesion_n
    sub = labels[near]
    sub[fat] = FAT
    sub[heart != AIR] = heart[heart != AIR]
    labels[near] = sub
    return TissueMaps(labels=labels, enh=enh, lesion=lesion)


def plane_points(
    top_left: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    rows: int,
    cols: int,
    spacing: tuple[float, float],
) -> np.ndarray:
    """Patient coordinates of pixel centres, DICOM convention (spacing = row, column)."""
    a = np.arange(rows, dtype=np.float64)[:, None] * spacing[0]
    b = np.arange(cols, dtype=np.float64)[None, :] * spacing[1]
    return (
        top_left[:, None, None]
        + row_dir[:, None, None] * b[None]
        + col_dir[:, None, None] * a[None]
    )


# ----------------------------------------------------------------------------- contrasts


def lge_signal(maps: TissueMaps, anat: Anatomy, body: Body) -> np.ndarray:
    """Noise-free PSIR (signed) signal in units where scar ~ 1."""
    table = np.zeros(N_TISSUES, np.float32)
    table[[LUNG, MUSCLE, LIVER, FAT, BONE]] = [
        0.02,
        body.lge_muscle,
        body.lge_liver,
        body.lge_fat,
        0.12,
    ]
    table[[LV_BLOOD, RV_BLOOD, OTHER_BLOOD]] = anat.blood
    table[[LV_MYO, RV_MYO]] = anat.myo
    img = table[maps.labels]
    return img + maps.enh * (anat.scar - img)


def cine_signal(maps: TissueMaps) -> np.ndarray:
    """bSSFP: bright blood, grey myocardium, bright fat."""
    table = np.array([0.0, 0.04, 0.28, 0.35, 0.85, 1.0, 1.0, 0.3, 0.3, 0.95, 0.2], np.float32)
    return table[maps.labels]


def t1_signal(maps: TissueMaps, anat: Anatomy) -> np.ndarray:
    """Native T1 map in ms; enhancement marks tissue with expanded extracellular space."""
    table = np.array(
        [
            0.0,
            0.0,
            980.0,
            600.0,
            300.0,
            anat.t1_blood,
            anat.t1_blood,
            anat.t1_myo,
            anat.t1_myo,
            anat.t1_blood,
            700.0,
        ],
        np.float32,
    )
    img = table[maps.labels]
    return img + np.clip(maps.enh, 0, 1) * (anat.t1_scar - anat.t1_myo)


def ti_signal(maps: TissueMaps, anat: Anatomy, ti: float) -> np.ndarray:
    """Look-Locker magnitude |1 - 2 exp(-TI/T1)|: blood nulls first, then myocardium."""
    t1 = np.array(
        [
            1e9,
            1200.0,
            550.0,
            380.0,
            260.0,
            anat.post_t1_blood,
            anat.post_t1_blood,
            anat.post_t1_myo,
            anat.post_t1_myo,
            anat.post_t1_blood,
            500.0,
        ],
        np.float32,
    )
    pd = np.array([0.0, 0.1, 0.6, 0.7, 0.9, 1.0, 1.0, 0.8, 0.8, 1.0, 0.4], np.float32)
    tt = t1[maps.labels]
    tt = tt + maps.enh * (anat.post_t1_scar - tt)
    return pd[maps.labels] * np.abs(1.0 - 2.0 * np.exp(-ti / tt))


def blur(img: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    """Small separable Gaussian over the last two axes: partial volume at tissue edges."""
    radius = 2
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    out = img.astype(np.float32)
    for axis in (-2, -1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            acc += w * np.take(p, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def shading(shape: tuple[int, int], gx: float, gy: float) -> np.ndarray:
    """Smooth coil-sensitivity shading, a linear ramp across the image."""
    yy = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    xx = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    return 1.0 + gx * xx + gy * yy


def complex_noise(
    true: np.ndarray, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """PSIR (real part with Gaussian noise) and magnitude (Rician) from one complex draw."""
    n1 = rng.standard_normal(true.shape, dtype=np.float32)
    n2 = rng.standard_normal(true.shape, dtype=np.float32)
    real = true + np.float32(sigma) * n1
    n2 *= np.float32(sigma)
    return real, np.hypot(real, n2)
