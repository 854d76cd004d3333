"""Physics-based multi-contrast brain phantom: the project's embedded demo data.

A subject is a head on a regular grid (RAS, world origin at the volume centre) whose size follows the
field of view. Anatomy is built from smooth signed distances, so every tissue has a fractional
membership (partial volume, ramp of one voxel): head ellipsoid -> skin/muscle -> fat -> skull ->
subarachnoid CSF -> cortical grey matter (a ribbon whose pial surface is folded into sulci along the
zero set of a smooth random field, plus the interhemispheric fissure) -> white matter. Deep grey
nuclei, ventricles, vessels (tubes) and 0-3 tumours (necrotic core, enhancing rim, edema) are painted
in. Each image is the membership-weighted mixture of per-tissue signals given by the signal equations
(:class:`MRSequences`) of the 3 T parameters in ``TISSUE_PARAMETERS``; gadolinium shortens T1 by
``1/T1' = 1/T1 + r1 C``.

Tissue label codes (``labels.nii.gz`` = argmax of the memberships), ``TISSUE_LABELS``:
0 background (air), 1 CSF (subarachnoid, sulcal, ventricular), 2 cortical grey matter, 3 white matter,
4 deep grey matter, 5 vessel (blood), 6 skull bone, 7 fat, 8 skin/muscle, 9 necrotic tumour core,
10 peritumoral edema, 11 enhancing tumour.
Tumour labels (``tumor_mask.nii.gz``), ``TUMOR_LABELS``: 0 none, 1 necrotic core, 2 edema, 3 enhancing rim.
``brain_mask.nii.gz``: the brain envelope (hull of the cortex) with sulcal CSF, ventricles and tumours.

Units: MR images are arbitrary units (each series' gain puts nominal white matter near 1000), ADC is
mm^2/s, CT is Hounsfield units. ``t1`` and ``t1ce`` share bias field and gain, so, noise and optional
misregistration aside, they differ only where the gadolinium concentration is > 0.

Parameter values are typical of the 3 T literature: Wansapura et al., "NMR relaxation times in the
human brain at 3.0 tesla", JMRI 9:531 (1999); Stanisz et al., "T1, T2 relaxation and magnetization
transfer in tissue at 3T", MRM 54:507 (2005); relaxivity: Rohrer et al., Invest. Radiol. 40:715 (2005).
The layered, partial-volume design follows the idea of Collins et al., IEEE TMI 17:463 (1998) (BrainWeb).
"""

from __future__ import annotations

import gzip
import os
from itertools import accumulate
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

from common.data.datalist import split_subjects, write_datalist

__all__ = [
    "TissueParams", "TISSUE_PARAMETERS", "TISSUE_LABELS", "TUMOR_LABELS", "MRSequences", "DEFAULT_SEQUENCES",
    "GD_RELAXIVITY", "IMAGE_KEYS", "MASK_KEYS", "PhantomSubject", "subject_seed", "generate_subject",
    "write_subject", "generate_dataset",
]

BACKGROUND, CSF, GM, WM, DEEP_GM, VESSEL, BONE, FAT, SKIN, NECROSIS, EDEMA, ENHANCING = range(12)
TISSUE_LABELS = {0: "background", 1: "csf", 2: "grey_matter", 3: "white_matter", 4: "deep_grey_matter",
                 5: "vessel", 6: "bone", 7: "fat", 8: "skin_muscle", 9: "necrotic_core", 10: "edema",
                 11: "enhancing_tumor"}
TUMOR_LABELS = {1: "necrotic_core", 2: "edema", 3: "enhancing_rim"}
IMAGE_KEYS = ("t1", "t2", "flair", "adc", "t1ce", "ct")
MASK_KEYS = ("brain_mask", "tumor_mask", "labels")
GD_RELAXIVITY = 4.0  # r1 of a gadolinium chelate at 3 T, 1/(mM s)


@dataclass(frozen=True)
class TissueParams:
    """Physical parameters of one tissue: proton density (water = 1), T1/T2/T2* (ms), ADC (mm^2/s),
    CT number (HU) and gadolinium concentration after injection (mM)."""

    pd: float
    t1: float
    t2: float
    t2s: float
    adc: float
    ct: float
    gd: float


TISSUE_PARAMETERS: dict[int, TissueParams] = {
    BACKGROUND: TissueParams(0.00, 1000.0, 1.0, 1.0, 0.0, -1000.0, 0.0),
    CSF: TissueParams(1.00, 4000.0, 2000.0, 1000.0, 3.0e-3, 5.0, 0.0),
    GM: TissueParams(0.80, 1330.0, 110.0, 60.0, 0.85e-3, 40.0, 0.0),
    WM: TissueParams(0.69, 830.0, 80.0, 50.0, 0.75e-3, 30.0, 0.0),
    DEEP_GM: TissueParams(0.76, 1100.0, 70.0, 35.0, 0.78e-3, 37.0, 0.0),
    VESSEL: TissueParams(0.85, 1650.0, 150.0, 60.0, 1.6e-3, 45.0, 0.6),
    BONE: TissueParams(0.05, 250.0, 2.0, 0.5, 0.0, 1400.0, 0.0),
    FAT: TissueParams(0.90, 380.0, 130.0, 60.0, 0.02e-3, -100.0, 0.0),
    SKIN: TissueParams(0.75, 1400.0, 40.0, 30.0, 1.5e-3, 45.0, 0.0),
    NECROSIS: TissueParams(0.95, 2500.0, 500.0, 200.0, 2.4e-3, 15.0, 0.0),
    EDEMA: TissueParams(0.88, 1700.0, 230.0, 100.0, 1.4e-3, 22.0, 0.0),
    ENHANCING: TissueParams(0.85, 1500.0, 140.0, 70.0, 1.0e-3, 40.0, 0.4),
}


@dataclass(frozen=True)
class MRSequences:
    """Sequence parameters (ms, degrees) and signal equations of the three MR series.

    T1w, spoiled gradient echo: ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)``, ``E1 = exp(-TR/T1)``.
    T2w, spin echo: ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``.
    FLAIR, inversion recovery: ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``; the default TI
    = T1 ln(2 / (1 + exp(-TR/T1))) nulls CSF (T1 = 4000 ms) at TR = 9000 ms.
    """

    t1_tr: float = 20.0
    t1_te: float = 4.0
    t1_flip: float = 20.0
    t2_tr: float = 5000.0
    t2_te: float = 100.0
    flair_tr: float = 9000.0
    flair_te: float = 120.0
    flair_ti: float = 2370.0

    def t1w(self, pd, t1, t2s):
        e1, a = np.exp(-self.t1_tr / t1), np.deg2rad(self.t1_flip)
        return pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-self.t1_te / t2s)

    def t2w(self, pd, t1, t2):
        return pd * (1 - np.exp(-self.t2_tr / t1)) * np.exp(-self.t2_te / t2)

    def flair(self, pd, t1, t2):
        mz = 1 - 2 * np.exp(-self.flair_ti / t1) + np.exp(-self.flair_tr / t1)
        return pd * np.abs(mz) * np.exp(-self.flair_te / t2)


DEFAULT_SEQUENCES = MRSequences()


@dataclass
class PhantomSubject:
    """One generated subject.

    Attributes:
        volumes: the nine file keys -> arrays of shape (X, Y, Z): ``IMAGE_KEYS`` float32, ``MASK_KEYS`` uint8.
        fractions: (12, X, Y, Z) float32 tissue memberships indexed by tissue code (sum to 1).
        gd_concentration: (X, Y, Z) float32 gadolinium concentration (mM) behind ``t1ce``.
        affine: (4, 4) voxel -> RAS mm.
        info: seed, tissue parameters after jitter, tumours, gains.
    """

    volumes: dict[str, np.ndarray]
    fractions: np.ndarray
    gd_concentration: np.ndarray
    affine: np.ndarray
    info: dict


def subject_seed(base_seed: int, index: int) -> int:
    """Seed of subject ``index`` of a data set generated with ``base_seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1)[0])


def _check_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if isinstance(shape, (str, bytes)) or len(shape) != 3 or any(
            isinstance(s, bool) or int(s) != s or s < 8 for s in shape):
        raise ValueError(f"shape must be three integers >= 8, got {shape!r}.")
    if isinstance(spacing, (str, bytes)) or len(spacing) != 3 or any(
            isinstance(s, bool) or not float(s) > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (mm), got {spacing!r}.")
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing)


def _smooth_field(rng: np.random.Generator, shape, spacing, corr_mm: float) -> np.ndarray:
    """Zero-mean, unit-std random field with correlation length ~``corr_mm``: white noise on a node grid
    (step corr/2) convolved with a Gaussian kernel, evaluated separably with three matrix products."""
    mats = []
    for n, s in zip(shape, spacing):
        nodes = np.arange(-1.5 * corr_mm, n * s + 1.5 * corr_mm, corr_mm / 2)
        mats.append(np.exp(-0.5 * ((np.arange(n) * s)[:, None] - nodes[None]) ** 2 / (corr_mm / 2) ** 2))
    f = np.tensordot(mats[0], rng.standard_normal([m.shape[1] for m in mats]), axes=(1, 0))
    f = np.tensordot(np.tensordot(f, mats[1], axes=(1, 1)), mats[2], axes=(1, 1))
    return ((f - f.mean()) / f.std()).astype(np.float32)


def _ramp(sd, h: float) -> np.ndarray:
    """Partial-volume membership from a signed distance (mm, > 0 outside): linear over one voxel."""
    return np.clip(0.5 - sd / h, 0.0, 1.0).astype(np.float32)


def _ellipsoid_sd(x, y, z, center, semi, scale=1.0):
    """First-order signed distance (mm, > 0 outside) to an ellipsoid radially scaled by ``scale``."""
    u = [(c - c0) / a for c, c0, a in zip((x, y, z), center, semi)]
    r = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    g = np.sqrt((u[0] / semi[0]) ** 2 + (u[1] / semi[1]) ** 2 + (u[2] / semi[2]) ** 2)
    return (r - scale) * np.clip(r / np.maximum(g, 1e-12), min(semi), max(semi))


def _box(axes, center, radius) -> tuple[slice, ...]:
    """Voxel slices covering ``center +- radius`` (mm)."""
    return tuple(slice(int(np.searchsorted(a, c - r)), int(np.searchsorted(a, c + r, side="right")))
                 for a, c, r in zip(axes, center, radius))


def _sub_axes(axes, box):
    """Broadcastable (X,1,1), (1,Y,1), (1,1,Z) coordinates of the voxels inside ``box``."""
    return [a[s].reshape([-1 if i == j else 1 for j in range(3)]) for i, (a, s) in enumerate(zip(axes, box))]


def _paint(frac: np.ndarray, code: int, m: np.ndarray, box: tuple[slice, ...]) -> None:
    """Alpha-composite tissue ``code`` with membership ``m`` over the memberships inside ``box``."""
    sub = frac[(slice(None),) + box]
    sub *= 1 - m
    sub[code] += m


def _tube(axes, ctrl: np.ndarray, radius: float, h: float):
    """Membership of a tube of ``radius`` (mm) around the cubic spline through control points (mm)."""
    t = np.linspace(0, 1, 400 * len(ctrl))
    pts = CubicSpline(np.linspace(0, 1, len(ctrl)), ctrl)(t)
    box = _box(axes, (pts.min(0) + pts.max(0)) / 2, (pts.max(0) - pts.min(0)) / 2 + radius + h)
    grid = np.stack(np.meshgrid(*[a[s] for a, s in zip(axes, box)], indexing="ij"), -1)
    dist, _ = cKDTree(pts).query(grid.reshape(-1, 3), distance_upper_bound=radius + 2 * h)
    return box, _ramp(np.minimum(dist, 1e6) - radius, h).reshape(grid.shape[:3])


def _anatomy(rng, shape, spacing, num_tumors):
    """Tissue memberships (12, X, Y, Z), brain-hull membership and the tumour list."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    h, fov = float(np.prod(spacing)) ** (1 / 3), np.asarray(shape) * np.asarray(spacing)
    field = lambda corr: _smooth_field(rng, shape, spacing, corr)  # noqa: E731
    hc = np.array([0.0, rng.normal(0, 1.5), rng.normal(0, 1.5)])
    a_head = fov / 2 * np.array([0.86, 0.89, 0.85]) * np.exp(rng.normal(0, 0.03, 3))
    depth = -_ellipsoid_sd(x, y, z, hc, a_head, 1 + 0.03 * field(40.0))
    layers = np.array([1.5, 3.0, 5.0, 1.5]) * min(1.0, 0.3 * a_head.min() / 11.0)  # skin fat bone csf mm
    bounds = list(accumulate([np.float32(layers[0])] + [layers[i] * np.clip(1 + 0.3 * field(30.0), 0.3, 2)
                                                         for i in (1, 2, 3)]))
    a_ic, a_b = a_head - layers[:3].sum(), a_head - layers.sum()
    h_head = _ramp(-depth, h)
    h_fat, h_bone, h_ic, h_hull = (np.minimum(_ramp(b - depth, h), h_head) for b in bounds)
    db = depth - bounds[3]  # depth below the brain hull (mm)
    sulci = min(6.0, 0.2 * a_b.min()) * np.exp(-(field(12.0) / 0.35) ** 2)
    cc_sd = _ellipsoid_sd(x, y, z, hc, (a_b[0], 0.6 * a_b[1], 0.4 * a_b[2]))  # fissure stops at the corpus callosum
    fissure = np.maximum(np.maximum(np.abs(x - hc[0]) - 0.75, -cc_sd), -0.3 * a_b[2] - (z - hc[2]))
    phi = np.minimum(db - sulci, fissure)
    phi = phi / np.maximum(np.sqrt(sum(g ** 2 for g in np.gradient(phi, *spacing))), 0.5)
    gm_thick = 2.5 * min(1.0, 0.1 * a_b.min() / 2.5)
    h_gm = np.minimum(_ramp(-phi, h), h_ic)
    h_wm = np.minimum(_ramp(gm_thick - phi, h), h_gm)
    frac = np.stack([1 - h_head, h_ic - h_gm, h_gm - h_wm, h_wm] + [np.zeros_like(h_wm)] * 8)
    frac[BONE], frac[FAT], frac[SKIN] = h_bone - h_ic, h_fat - h_bone, h_head - h_fat
    # deep grey nuclei (thalamus, lentiform, caudate) then ventricles (lateral, bent; third), in the hull
    def ellipsoid(code, rel_c, rel_a, bend=0.0):
        c = hc + a_b * (np.asarray(rel_c) + rng.normal(0, 0.015, 3))
        semi = np.maximum(a_b * np.asarray(rel_a), h)
        box = _box(axes, c, semi * (1 + bend) + 2 * h)
        xb, yb, zb = _sub_axes(axes, box)
        m = _ramp(_ellipsoid_sd(xb, yb, zb + bend * a_b[2] * ((yb - c[1]) / a_b[1]) ** 2, c, semi), h)
        _paint(frac, code, m * h_hull[box], box)
    for side in (-1, 1):
        ellipsoid(DEEP_GM, (side * 0.10, -0.12, -0.02), (0.10, 0.16, 0.12))
        ellipsoid(DEEP_GM, (side * 0.30, 0.08, -0.02), (0.07, 0.18, 0.13))
        ellipsoid(DEEP_GM, (side * 0.17, 0.22, 0.12), (0.06, 0.10, 0.10))
    vent = float(np.exp(rng.normal(0, 0.2)))
    for side in (-1, 1):
        ellipsoid(CSF, (side * 0.13, 0.0, 0.14), (0.10 * vent, 0.40, 0.14 * vent), bend=0.6)
    ellipsoid(CSF, (0.0, -0.05, -0.05), (0.02 * vent, 0.18, 0.13))
    # vessels: superior sagittal sinus along the inner skull, then 2-4 random arteries from the base
    th = np.linspace(0.12 * np.pi, 0.88 * np.pi, 9)
    tubes = [(hc + np.stack([0 * th, (a_ic[1] - layers[3] / 2) * np.cos(th), (a_ic[2] - layers[3] / 2) * np.sin(th)],
                            1), 1.6 * np.exp(rng.normal(0, 0.1)))]
    for _ in range(rng.integers(2, 5)):
        s = rng.choice([-1.0, 1.0])
        rel = [(s * 0.10, 0.10, -0.45), (s * 0.45, 0.05 + rng.normal(0, 0.1), -0.25 + rng.normal(0, 0.1)),
               (s * 0.72, rng.normal(0, 0.25), 0.05 + rng.normal(0, 0.15)),
               (s * 0.55, rng.normal(0, 0.35), 0.5 + rng.normal(0, 0.1))]
        tubes.append((hc + a_b * np.asarray(rel), rng.uniform(0.6, 1.1)))
    for ctrl, radius in tubes:
        box, m = _tube(axes, ctrl, radius, h)
        _paint(frac, VESSEL, m * h_ic[box], box)
    # tumours: bulk (enhancing rim around necrotic core) replaces tissue; edema replaces WM / deep GM
    lo, hi = (num_tumors, num_tumors) if np.isscalar(num_tumors) else num_tumors
    n_tum, tumours = int(rng.integers(lo, hi + 1)), []
    shape_field, cand = field(8.0), np.flatnonzero(frac[WM] > 0.999)
    for _ in range(n_tum):
        r_e = rng.uniform(0.15, 0.28) * a_b.min()
        r_n = max(0.0, min(r_e * rng.uniform(0.35, 0.65), r_e - max(1.5, h)))
        r_ed = r_e * rng.uniform(1.3, 1.9)
        ok = cand[db.ravel()[cand] > 0.6 * r_e]
        if ok.size == 0:
            continue
        c = np.array([a[i] for a, i in zip(axes, np.unravel_index(ok[rng.integers(ok.size)], shape))], float)
        box = _box(axes, c, [1.6 * r_ed + 2 * h] * 3)
        dist = np.sqrt(sum((a - ci) ** 2 for a, ci in zip(_sub_axes(axes, box), c)))
        sf, hull = shape_field[box], h_hull[box]
        r_core, r_edema = dist / np.clip(1 + 0.15 * sf, 0.6, 1.6), dist / np.clip(1 + 0.35 * sf, 0.6, 1.6)
        m_e, m_n = _ramp(r_core - r_e, h) * hull, _ramp(r_core - r_n, h) * hull
        m_ed = _ramp(r_edema - r_ed, h) * hull
        sub = frac[(slice(None),) + box]
        sub *= 1 - m_e
        sub[NECROSIS] += m_n
        sub[ENHANCING] += m_e - m_n
        for code, w in ((WM, 1.0), (DEEP_GM, 1.0), (GM, 0.3)):
            moved = sub[code] * m_ed * w
            sub[code] -= moved
            sub[EDEMA] += moved
        tumours.append({"center_mm": c.tolist(), "necrotic_radius_mm": r_n, "enhancing_radius_mm": r_e,
                        "edema_radius_mm": r_ed})
    return np.clip(frac, 0.0, 1.0), h_hull, tumours


def _jittered_parameters(rng: np.random.Generator, jitter: float) -> dict[int, TissueParams]:
    """Per-subject tissue parameters: relaxation, PD, ADC and gadolinium scaled by exp(N(0, jitter)),
    CT shifted by N(0, jitter * max(|HU|, 100)) (air stays -1000 HU)."""
    out = {}
    for code, p in TISSUE_PARAMETERS.items():
        mult = np.exp(rng.normal(0.0, jitter, 6))
        ct = p.ct + (0.0 if code == BACKGROUND else float(rng.normal(0.0, jitter * max(abs(p.ct), 100.0))))
        out[code] = TissueParams(*(float(v * m) for v, m in zip((p.pd, p.t1, p.t2, p.t2s, p.adc), mult)), ct,
                                 float(p.gd * mult[5]))
    return out


def _rigid_resample(img: np.ndarray, spacing, rng: np.random.Generator, mm: float, deg: float) -> np.ndarray:
    """Resample ``img`` through a random rigid motion about the volume centre (std ``mm`` and ``deg`` per axis)."""
    ax, ay, az = np.deg2rad(rng.normal(0.0, deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    sp, centre = np.asarray(spacing), (np.asarray(img.shape) - 1) / 2
    mat = np.diag(1 / sp) @ rz @ ry @ rx @ np.diag(sp)
    offset = centre - mat @ centre + rng.normal(0.0, mm, 3) / sp
    return ndimage.affine_transform(img, mat, offset=offset, order=1, mode="nearest")


def generate_subject(
    shape: Sequence[int] = (96, 112, 96),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    *,
    num_tumors: int | Sequence[int] = (0, 3),
    noise_level: float = 0.03,
    ct_noise_hu: float = 5.0,
    bias_strength: float = 0.12,
    intensity_jitter: float = 0.1,
    param_jitter: float = 0.03,
    texture_strength: float = 0.03,
    misregistration_mm: float = 0.0,
    misregistration_deg: float = 0.0,
    sequences: MRSequences = DEFAULT_SEQUENCES,
    relaxivity: float = GD_RELAXIVITY,
) -> PhantomSubject:
    """Generate one phantom subject.

    Args:
        shape: grid size (X, Y, Z); axes point to Right, Anterior, Superior. The head fills the field of view.
        spacing: voxel size in mm.
        seed: seed of the subject; anatomy, tissue parameters, acquisition and noise use separate streams,
            so switching noise or misregistration off leaves the anatomy unchanged.
        num_tumors: a number of tumours or an inclusive (min, max) range drawn uniformly.
        noise_level: Rician noise sigma relative to the white-matter signal of each MR series (Gaussian,
            relative to white-matter ADC, for the ADC map); 0 switches noise off.
        ct_noise_hu: Gaussian CT noise (HU).
        bias_strength: std of the log of the smooth multiplicative bias field (one per MR series; ``t1ce``
            shares the field of ``t1``); 0 disables it.
        intensity_jitter: std of the log of each series' gain (``t1ce`` shares ``t1``'s gain).
        param_jitter: per-subject relative jitter of the tissue parameters (see ``_jittered_parameters``).
        texture_strength: relative amplitude of smooth (4 mm) within-tissue variation of PD, T1, T2 (T2*
            and ADC follow T2).
        misregistration_mm, misregistration_deg: std of a random rigid motion applied to every image
            except ``t1`` (on which the masks are defined); 0 (default) keeps all contrasts co-registered.
        sequences: MR sequence parameters.
        relaxivity: r1 of the contrast agent in 1/(mM s).

    Returns:
        a :class:`PhantomSubject`.
    """
    shape, spacing = _check_geometry(shape, spacing)
    lo, hi = (num_tumors, num_tumors) if np.isscalar(num_tumors) else tuple(num_tumors)
    if not 0 <= int(lo) <= int(hi):
        raise ValueError(f"num_tumors must be a count >= 0 or a range (min, max) with 0 <= min <= max, got {num_tumors}.")
    for name, value in (("noise_level", noise_level), ("ct_noise_hu", ct_noise_hu), ("bias_strength", bias_strength),
                        ("intensity_jitter", intensity_jitter), ("param_jitter", param_jitter),
                        ("texture_strength", texture_strength), ("misregistration_mm", misregistration_mm),
                        ("misregistration_deg", misregistration_deg), ("relaxivity", relaxivity)):
        if not float(value) >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")
    rng_anat, rng_par, rng_acq, rng_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    frac, hull, tumours = _anatomy(rng_anat, shape, spacing, (int(lo), int(hi)))
    params = _jittered_parameters(rng_par, param_jitter)
    tex = {k: np.exp(texture_strength * _smooth_field(rng_par, shape, spacing, 4.0)).ravel() for k in ("pd", "t1", "t2")}
    gd_het = np.exp(0.3 * _smooth_field(rng_par, shape, spacing, 6.0)).ravel()

    # partial-volume mixture of per-tissue signals; t1ce takes T1' = 1 / (1/T1 + r1 C) where C > 0
    acc = {k: np.zeros(int(np.prod(shape)), np.float32) for k in IMAGE_KEYS}
    gd = np.zeros_like(acc["t1"])
    for code, p in params.items():
        fk = frac[code].ravel()
        idx = np.flatnonzero(fk > 0)
        f = fk[idx]
        acc["ct"][idx] += f * np.float32(p.ct)
        if p.pd <= 0:
            continue
        pd, t1, t2 = p.pd * tex["pd"][idx], p.t1 * tex["t1"][idx], p.t2 * tex["t2"][idx]
        t2s = p.t2s * tex["t2"][idx]
        s1 = sequences.t1w(pd, t1, t2s)
        acc["t1"][idx] += f * s1
        if p.gd > 0:
            conc = p.gd * (gd_het[idx] if code == ENHANCING else np.ones_like(f))
            gd[idx] += f * conc
            s1 = sequences.t1w(pd, 1.0 / (1.0 / t1 + relaxivity * 1e-3 * conc), t2s)
        acc["t1ce"][idx] += f * s1
        acc["t2"][idx] += f * sequences.t2w(pd, t1, t2)
        acc["flair"][idx] += f * sequences.flair(pd, t1, t2)
        acc["adc"][idx] += f * (p.adc * tex["t2"][idx])

    # acquisition: gain and bias per MR series (shared by t1 / t1ce), optional motion, then noise
    wm = params[WM]
    wm_ref = {"t1": sequences.t1w(wm.pd, wm.t1, wm.t2s), "t2": sequences.t2w(wm.pd, wm.t1, wm.t2),
              "flair": sequences.flair(wm.pd, wm.t1, wm.t2)}
    images, gains = {}, {}
    for key in ("t1", "t2", "flair"):
        gains[key] = float(1000.0 / wm_ref[key] * np.exp(rng_acq.normal(0.0, intensity_jitter)))
        scale = gains[key] * np.exp(bias_strength * _smooth_field(rng_acq, shape, spacing, 80.0))
        for k in (key, "t1ce") if key == "t1" else (key,):
            images[k] = acc[k].reshape(shape) * scale
    images["adc"], images["ct"] = acc["adc"].reshape(shape), acc["ct"].reshape(shape)
    if misregistration_mm > 0 or misregistration_deg > 0:
        for key in IMAGE_KEYS[1:]:
            images[key] = _rigid_resample(images[key], spacing, rng_acq, misregistration_mm, misregistration_deg)
    gains["t1ce"] = gains["t1"]
    if noise_level > 0:
        for key in ("t1", "t2", "flair", "t1ce"):
            sigma = np.float32(noise_level * gains[key] * wm_ref[key.replace("t1ce", "t1")])
            n1, n2 = (rng_noise.standard_normal(shape, dtype=np.float32) * sigma for _ in range(2))
            images[key] = np.sqrt((images[key] + n1) ** 2 + n2 ** 2)
        noise = rng_noise.standard_normal(shape, dtype=np.float32) * np.float32(noise_level * wm.adc)
        images["adc"] = np.maximum(images["adc"] + noise, 0.0)
    if ct_noise_hu > 0:
        images["ct"] = images["ct"] + rng_noise.standard_normal(shape, dtype=np.float32) * np.float32(ct_noise_hu)
    images["ct"] = np.clip(images["ct"], -1024.0, 3071.0)

    # hard labels: argmax of the memberships, tumour codes only inside the brain envelope
    brain = hull >= 0.5
    labels = frac.argmax(0).astype(np.uint8)
    outside = ~brain & (labels >= NECROSIS)
    labels[outside] = frac[:NECROSIS, outside].argmax(0)
    lut = np.zeros(len(TISSUE_LABELS), np.uint8)
    lut[[NECROSIS, EDEMA, ENHANCING]] = (1, 2, 3)
    volumes = {k: images[k].astype(np.float32) for k in IMAGE_KEYS}
    volumes.update(brain_mask=brain.astype(np.uint8), tumor_mask=lut[labels], labels=labels)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    info = {"seed": int(seed), "shape": list(shape), "spacing": list(spacing), "tumours": tumours, "gains": gains,
            "tissue_parameters": {TISSUE_LABELS[c]: vars(p) for c, p in params.items()}}
    return PhantomSubject(volumes, frac, gd.reshape(shape), affine, info)


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path, compresslevel: int) -> None:
    """Write a .nii.gz whose bytes depend only on the data (gzip mtime 0, no file name); atomic rename."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=compresslevel, mtime=0))
    os.replace(tmp, path)


def write_subject(subject: PhantomSubject, folder: str | os.PathLike, compresslevel: int = 1) -> dict[str, Path]:
    """Write ``<key>.nii.gz`` for the nine keys of ``subject.volumes`` into ``folder``; returns key -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in subject.volumes.items():
        paths[key] = folder / f"{key}.nii.gz"
        _save_nifti(array, subject.affine, paths[key], compresslevel)
    return paths


def _make_subject(job: tuple) -> dict[str, str]:
    folder, shape, spacing, seed, compresslevel, kwargs = job
    paths = write_subject(generate_subject(shape, spacing, seed, **kwargs), folder, compresslevel)
    return {k: str(v) for k, v in paths.items()}


def generate_dataset(
    output_dir: str | os.PathLike,
    num_subjects: int = 12,
    shape: Sequence[int] = (96, 112, 96),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    num_workers: int = 1,
    compresslevel: int = 1,
    **phantom_kwargs,
) -> Path:
    """Write ``num_subjects`` folders ``phantom_XXX/`` and ``<output_dir>/datalist.json``.

    Subject ``i`` uses ``subject_seed(seed, i)``; the split (``split_subjects`` with ``seed``) is by subject.
    Datalist entries hold ``subject`` and the keys of ``IMAGE_KEYS`` and ``MASK_KEYS`` as paths relative to
    the datalist. ``phantom_kwargs`` go to :func:`generate_subject`; ``num_workers`` > 1 uses processes
    (the files do not depend on it).

    Returns:
        the path of the datalist.
    """
    shape, spacing = _check_geometry(shape, spacing)
    if isinstance(num_subjects, bool) or int(num_subjects) != num_subjects or num_subjects < 1:
        raise ValueError(f"num_subjects must be a positive integer, got {num_subjects!r}.")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if int(num_workers) < 1 or not 0 <= int(compresslevel) <= 9:
        raise ValueError(f"num_workers must be >= 1 and compresslevel in 0..9, got {num_workers}, {compresslevel}.")
    root = Path(output_dir).absolute()
    ids = [f"phantom_{i:03d}" for i in range(int(num_subjects))]
    jobs = [(root / sid, shape, spacing, subject_seed(seed, i), int(compresslevel), phantom_kwargs)
            for i, sid in enumerate(ids)]
    if int(num_workers) > 1:
        with ProcessPoolExecutor(int(num_workers)) as pool:
            rows = list(pool.map(_make_subject, jobs))
    else:
        rows = [_make_subject(job) for job in jobs]
    entries = {sid: {"subject": sid, **row} for sid, row in zip(ids, rows)}
    splits = split_subjects(ids, fractions, seed=int(seed))
    extra = {"name": "phantom", "description": "physics-based multi-contrast brain phantom (common.data.phantom)",
             "tensorImageSize": "3D", "modality": {k: k for k in IMAGE_KEYS},
             "labels": {str(k): v for k, v in TISSUE_LABELS.items()},
             "tumor_labels": {"0": "none", **{str(k): v for k, v in TUMOR_LABELS.items()}},
             "shape": list(shape), "spacing": list(spacing), "seed": int(seed),
             "numTraining": len(splits["training"]), "numValidation": len(splits["validation"]),
             "numTest": len(splits["test"])}
    return write_datalist(root / "datalist.json", {k: [entries[s] for s in v] for k, v in splits.items()}, extra)
