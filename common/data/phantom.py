"""Physics-based multi-contrast brain phantom: the project's embedded demo data.

A head fills a RAS grid (world origin at its centre). Smooth signed distances give every tissue a fractional
membership (partial volume over one voxel): skin/muscle, fat, skull, CSF, a 2.5 mm cortical ribbon folded into
sulci along the zero set of a random field (and the interhemispheric fissure), white matter; deep grey nuclei,
ventricles, vessels and 0-3 tumours are painted in. Images mix the per-tissue signals of the signal equations
(:class:`MRSequences`) of the 3 T ``TISSUE_PARAMETERS`` by membership; gadolinium: 1/T1' = 1/T1 + r1 C.
Tissue codes (``labels.nii.gz``, argmax of the memberships; ``TISSUE_LABELS``): 0 background (air),
1 CSF (subarachnoid, sulcal, ventricular), 2 cortical grey matter, 3 white matter, 4 deep grey matter,
5 vessel, 6 skull bone, 7 fat, 8 skin/muscle, 9 necrotic core, 10 edema, 11 enhancing tumour.
``tumor_mask.nii.gz`` (``TUMOR_LABELS``): 0 none, 1 necrotic core, 2 edema, 3 enhancing rim.
``brain_mask.nii.gz``: the brain envelope (hull of the cortex) incl. sulcal CSF, ventricles, tumours.
Units: MR arbitrary (nominal white matter ~1000), ADC mm^2/s, CT HU. ``t1`` and ``t1ce`` share bias field and gain,
so (noise, optional misregistration aside) they differ only where gadolinium > 0. 3 T values: Wansapura et al.,
JMRI 9:531 (1999); Stanisz et al., MRM 54:507 (2005); r1: Rohrer et al., Invest. Radiol. 40:715 (2005); the
layered partial-volume design follows BrainWeb (Collins et al., IEEE TMI 17:463, 1998).
"""

from __future__ import annotations

import gzip
import os
from collections import namedtuple
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from common.data.datalist import split_subjects, write_datalist

__all__ = [
    "TissueParams",
    "TISSUE_PARAMETERS",
    "TISSUE_LABELS",
    "TUMOR_LABELS",
    "MRSequences",
    "DEFAULT_SEQUENCES",
    "GD_RELAXIVITY",
    "IMAGE_KEYS",
    "MASK_KEYS",
    "PhantomSubject",
    "subject_seed",
    "generate_subject",
    "write_subject",
    "generate_dataset",
]

BACKGROUND, CSF, GM, WM, DEEP_GM, VESSEL, BONE, FAT, SKIN, NECROSIS, EDEMA, ENHANCING = range(12)
TISSUE_LABELS = dict(
    enumerate(
        (
            "background",
            "csf",
            "grey_matter",
            "white_matter",
            "deep_grey_matter",
            "vessel",
            "bone",
            "fat",
            "skin_muscle",
            "necrotic_core",
            "edema",
            "enhancing_tumor",
        )
    )
)
TUMOR_LABELS = {1: "necrotic_core", 2: "edema", 3: "enhancing_rim"}
IMAGE_KEYS = ("t1", "t2", "flair", "adc", "t1ce", "ct")
MASK_KEYS = ("brain_mask", "tumor_mask", "labels")
GD_RELAXIVITY = 4.0  # r1 of a gadolinium chelate at 3 T, 1/(mM s)
TissueParams = namedtuple("TissueParams", "pd t1 t2 t2s adc ct gd")
TissueParams.__doc__ = "Proton density (water = 1), T1, T2, T2* (ms), ADC (mm^2/s), CT number (HU), gadolinium (mM)."
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
    """Sequence parameters (TR, TE, TI in ms; flip angle in degrees) and signal equations. T1w spoiled gradient
    echo: ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*)``, ``E1 = exp(-TR/T1)``; T2w spin echo:
    ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``; FLAIR: ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``,
    the default TI = T1 ln(2 / (1 + exp(-TR/T1))) nulls CSF (T1 = 4000 ms) at TR = 9000 ms."""

    t1_tr: float = 20.0
    t1_te: float = 4.0
    t1_flip: float = 20.0
    t2_tr: float = 5000.0
    t2_te: float = 100.0
    flair_tr: float = 9000.0
    flair_te: float = 120.0
    flair_ti: float = 2370.0

    def t1w(self, pd: ArrayLike, t1: ArrayLike, t2s: ArrayLike) -> np.ndarray:
        e1, a = np.exp(-self.t1_tr / t1), np.deg2rad(self.t1_flip)
        return pd * np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1) * np.exp(-self.t1_te / t2s)

    def t2w(self, pd: ArrayLike, t1: ArrayLike, t2: ArrayLike) -> np.ndarray:
        return pd * (1 - np.exp(-self.t2_tr / t1)) * np.exp(-self.t2_te / t2)

    def flair(self, pd: ArrayLike, t1: ArrayLike, t2: ArrayLike) -> np.ndarray:
        return (
            pd * np.abs(1 - 2 * np.exp(-self.flair_ti / t1) + np.exp(-self.flair_tr / t1)) * np.exp(-self.flair_te / t2)
        )


DEFAULT_SEQUENCES = MRSequences()
PhantomSubject = namedtuple("PhantomSubject", "volumes fractions gd_concentration affine info")
PhantomSubject.__doc__ = """One subject. ``volumes``: file key -> (X, Y, Z) array (``IMAGE_KEYS`` float32, ``MASK_KEYS``
uint8); ``fractions``: (12, X, Y, Z) memberships by tissue code; ``gd_concentration``: (X, Y, Z) mM; ``affine``:
(4, 4) voxel -> RAS mm; ``info``: seed, tissue parameters after jitter, tumours, gains."""


def subject_seed(base_seed: int, index: int) -> int:
    """Seed of subject ``index`` of a data set generated with ``base_seed``."""
    return int(np.random.SeedSequence([int(base_seed), int(index)]).generate_state(1)[0])


def _check_geometry(shape, spacing) -> tuple[tuple[int, ...], tuple[float, ...]]:
    for name, v, ok, what in (
        ("shape", shape, lambda s: int(s) == s and s >= 8, "three integers >= 8"),
        ("spacing", spacing, lambda s: s > 0, "three positive numbers (mm)"),
    ):
        if (
            isinstance(v, str)
            or not isinstance(v, Sequence)
            or len(v) != 3
            or not all(isinstance(s, (int, float, np.number)) and not isinstance(s, bool) and ok(s) for s in v)
        ):
            raise ValueError(f"{name} must be {what}, got {v!r}.")
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing)


def _smooth_field(rng: np.random.Generator, shape, spacing, corr_mm: float) -> np.ndarray:
    """Zero-mean, unit-std random field, correlation ~``corr_mm``: white noise on nodes every corr/2 mm
    convolved with a Gaussian (sigma corr/2), evaluated separably by three matrix products."""
    mats = []
    for n, s in zip(shape, spacing):
        nodes = np.arange(-1.5 * corr_mm, n * s + 1.5 * corr_mm, corr_mm / 2)
        mats.append(np.exp(-0.5 * ((np.arange(n) * s)[:, None] - nodes[None]) ** 2 / (corr_mm / 2) ** 2))
    f = np.tensordot(mats[0], rng.standard_normal([m.shape[1] for m in mats]), axes=(1, 0))
    f = np.tensordot(np.tensordot(f, mats[1], axes=(1, 1)), mats[2], axes=(1, 1))
    return ((f - f.mean()) / f.std()).astype(np.float32)


def _ramp(sd, h: float) -> np.ndarray:
    """Partial-volume membership of a signed distance (mm, > 0 outside): linear over one voxel ``h``."""
    return np.clip(0.5 - sd / h, 0.0, 1.0).astype(np.float32)


def _ellipsoid_sd(x, y, z, center, semi, scale=1.0):
    """First-order signed distance (mm, > 0 outside) to an ellipsoid radially scaled by ``scale``."""
    u = [(c - c0) / a for c, c0, a in zip((x, y, z), center, semi)]
    r = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    g = np.sqrt((u[0] / semi[0]) ** 2 + (u[1] / semi[1]) ** 2 + (u[2] / semi[2]) ** 2)
    return (r - scale) * np.clip(r / np.maximum(g, 1e-12), min(semi), max(semi))


def _box(axes, center, radius):
    """Voxel slices covering ``center +- radius`` (mm) and their broadcastable (X,1,1), (1,Y,1), (1,1,Z) mm axes."""
    box = tuple(
        slice(int(np.searchsorted(a, c - r)), int(np.searchsorted(a, c + r, side="right")))
        for a, c, r in zip(axes, center, radius)
    )
    return box, [a[s].reshape([-1 if i == j else 1 for j in range(3)]) for i, (a, s) in enumerate(zip(axes, box))]


def _paint(frac: np.ndarray, code: int, m: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """Alpha-composite tissue ``code`` of membership ``m`` over all memberships inside ``box``; returns the view."""
    sub = frac[(slice(None),) + box]
    sub *= 1 - m
    sub[code] += m
    return sub


def _head_and_cortex(rng, axes, spacing, h):
    """Layered head and folded cortex: memberships (12, X, Y, Z), brain hull, depth below it, centre, semi-axes."""
    shape, (x, y, z) = tuple(len(a) for a in axes), _box(axes, (0, 0, 0), (np.inf,) * 3)[1]
    field = lambda corr: _smooth_field(rng, shape, spacing, corr)  # noqa: E731
    hc = np.array([0.0, rng.normal(0, 1.5), rng.normal(0, 1.5)])
    a_head = np.asarray(shape) * spacing / 2 * np.array([0.86, 0.89, 0.85]) * np.exp(rng.normal(0, 0.03, 3))
    depth = -_ellipsoid_sd(x, y, z, hc, a_head, 1 + 0.03 * field(40.0))
    layers = np.array([1.5, 3.0, 5.0, 1.5]) * min(1.0, 0.3 * a_head.min() / 11.0)  # skin, fat, bone, CSF (mm)
    bounds = layers[0] + np.cumsum([t * np.clip(1 + 0.3 * field(30.0), 0.3, 2) for t in layers[1:]], axis=0)
    h_head = _ramp(-depth, h)
    h_fat, h_bone, h_ic, h_hull = (np.minimum(_ramp(b - depth, h), h_head) for b in (layers[0], *bounds))
    a_ic, a_b, db = a_head - layers[:3].sum(), a_head - layers.sum(), depth - bounds[2]
    fold = field(6.0)  # sulci: the pial surface dips along the zero set of a random field (u: distance to it)
    u = fold / np.maximum(np.sqrt(sum(g**2 for g in np.gradient(fold, *spacing))), 1e-3)
    phi = db - min(7.0, 0.22 * a_b.min()) * np.exp(-((u / 0.8) ** 2))
    core = _ellipsoid_sd(x, y, z, hc + (0, -0.05 * a_b[1], -0.25 * a_b[2]), (a_b[0], 0.55 * a_b[1], 0.65 * a_b[2]))
    phi = np.minimum(phi, np.maximum(np.abs(x - hc[0]) - 0.75, -core))  # interhemispheric fissure above the core
    phi = phi / np.maximum(np.sqrt(sum(g**2 for g in np.gradient(phi, *spacing))), 0.5)
    h_gm = np.minimum(_ramp(-phi, h), h_ic)
    h_wm = np.minimum(_ramp(min(2.5, 0.1 * a_b.min()) - phi, h), h_gm)
    frac = np.stack([1 - h_head, h_ic - h_gm, h_gm - h_wm, h_wm, *[np.zeros_like(h_wm)] * 8])
    frac[BONE], frac[FAT], frac[SKIN] = h_bone - h_ic, h_fat - h_bone, h_head - h_fat
    return frac, h_hull, h_ic, db, hc, a_ic - layers[3] / 2, a_b


def _ellipsoid(frac, axes, h, code, center, semi, limit, bend=0.0):
    """Paint an ellipsoid (optionally bent: its ends curve down by ``bend`` x its z semi-axis), within ``limit``."""
    semi = np.maximum(semi, h)
    box, (xb, yb, zb) = _box(axes, center, semi * (1 + bend) + 2 * h)
    m = _ramp(_ellipsoid_sd(xb, yb, zb + bend * semi[2] * ((yb - center[1]) / semi[1]) ** 2, center, semi), h)
    _paint(frac, code, m * limit[box], box)


def _tumour(frac, axes, h, center, radii, shape_field, hull) -> None:
    """Paint one tumour: the bulk (necrotic core inside an enhancing rim, irregular radii ``radii[:2]``)
    replaces all tissue; edema (radius ``radii[2]``, more irregular) replaces white / deep grey matter."""
    box, sub = _box(axes, center, [1.6 * radii[2] + 2 * h] * 3)
    dist = np.sqrt(sum((a - c) ** 2 for a, c in zip(sub, center)))
    sf, hull = shape_field[box], hull[box]
    r_core, r_edema = dist / np.clip(1 + 0.15 * sf, 0.6, 1.6), dist / np.clip(1 + 0.35 * sf, 0.6, 1.6)
    m_n, m_e = (_ramp(r_core - r, h) * hull for r in radii[:2])
    m_ed = _ramp(r_edema - radii[2], h) * hull
    sub = _paint(frac, ENHANCING, m_e, box)
    sub[ENHANCING] -= m_n
    sub[NECROSIS] += m_n
    for code, weight in ((WM, 1.0), (DEEP_GM, 1.0), (GM, 0.3)):
        moved = sub[code] * m_ed * weight
        sub[code] -= moved
        sub[EDEMA] += moved


def _anatomy(rng, shape, spacing, num_tumors: tuple[int, int]):
    """Tissue memberships (12, X, Y, Z), brain-hull membership (X, Y, Z) and the list of tumours."""
    axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
    h = float(np.prod(spacing)) ** (1 / 3)
    frac, hull, h_ic, db, hc, a_sinus, a_b = _head_and_cortex(rng, axes, np.asarray(spacing), h)
    place = lambda rel: hc + a_b * (np.asarray(rel) + rng.normal(0, 0.015, 3))  # noqa: E731
    vent = float(np.exp(rng.normal(0, 0.2)))  # ventricle size varies between subjects
    for side in (-1, 1):  # thalamus, lentiform nucleus, caudate head, lateral ventricle
        for rel_c, rel_a in (
            ((0.12, -0.14, -0.04), (0.12, 0.18, 0.16)),
            ((0.33, 0.08, -0.04), (0.09, 0.20, 0.16)),
            ((0.18, 0.24, 0.12), (0.08, 0.12, 0.12)),
        ):
            _ellipsoid(frac, axes, h, DEEP_GM, place((side * rel_c[0], *rel_c[1:])), a_b * rel_a, hull)
        _ellipsoid(frac, axes, h, CSF, place((side * 0.13, 0, 0.14)), a_b * (0.1 * vent, 0.4, 0.14 * vent), hull, 1.0)
    _ellipsoid(frac, axes, h, CSF, place((0.0, -0.05, -0.05)), a_b * (0.02 * vent, 0.18, 0.13), hull)
    th = np.linspace(0.12 * np.pi, 0.88 * np.pi, 9)  # superior sagittal sinus, then 2-4 arteries from the base
    tubes = [(hc + np.stack([0 * th, a_sinus[1] * np.cos(th), a_sinus[2] * np.sin(th)], 1), 1.6)]
    for _ in range(rng.integers(2, 5)):
        s, n = rng.choice([-1.0, 1.0]), rng.normal(0, 1, 5)
        rel = [
            (0.1 * s, 0.1, -0.45),
            (0.45 * s, 0.05 + 0.1 * n[0], -0.25 + 0.1 * n[1]),
            (0.72 * s, 0.25 * n[2], 0.05 + 0.15 * n[3]),
            (0.55 * s, 0.35 * n[4], 0.5),
        ]
        tubes.append((hc + a_b * np.asarray(rel), rng.uniform(0.6, 1.1)))
    for ctrl, radius in tubes:  # tube around the cubic spline through the control points
        pts = CubicSpline(np.linspace(0, 1, len(ctrl)), ctrl)(np.linspace(0, 1, 400 * len(ctrl)))
        box, sub = _box(axes, (pts.min(0) + pts.max(0)) / 2, (pts.max(0) - pts.min(0)) / 2 + radius + h)
        grid = np.stack(np.broadcast_arrays(*sub), -1)
        dist = cKDTree(pts).query(grid.reshape(-1, 3), distance_upper_bound=radius + 2 * h)[0]
        _paint(frac, VESSEL, _ramp(np.minimum(dist, 1e6) - radius, h).reshape(grid.shape[:3]) * h_ic[box], box)
    tumours, shape_field = [], _smooth_field(rng, shape, spacing, 8.0)
    cand = np.flatnonzero(frac[WM] > 0.999)
    for _ in range(int(rng.integers(num_tumors[0], num_tumors[1] + 1))):
        r_e = rng.uniform(0.15, 0.28) * a_b.min()
        radii = (max(0.0, min(r_e * rng.uniform(0.35, 0.65), r_e - max(1.5, h))), r_e, r_e * rng.uniform(1.3, 1.9))
        ok = cand[db.ravel()[cand] > 0.6 * r_e]  # centre in white matter, the bulk mostly inside the brain
        if ok.size:
            c = np.array([a[i] for a, i in zip(axes, np.unravel_index(ok[rng.integers(ok.size)], shape))], float)
            _tumour(frac, axes, h, c, radii, shape_field, hull)
            tumours.append({"center_mm": c.tolist(), "necrotic_enhancing_edema_radii_mm": [float(r) for r in radii]})
    return np.clip(frac, 0.0, 1.0), hull, tumours


def _mix_signals(frac, params, tex, gd_het, seq: MRSequences, relaxivity: float):
    """Sums over tissues of membership x signal (flat) and the gadolinium map (mM). The flat texture fields scale
    PD, T1, T2 (T2*, ADC follow T2); ``t1ce`` uses 1/T1' = 1/T1 + r1 C where C > 0, the ``t1`` numbers elsewhere."""
    acc = {k: np.zeros(frac[0].size, np.float32) for k in IMAGE_KEYS}
    gd = np.zeros_like(acc["t1"])
    for code, p in params.items():
        idx = np.flatnonzero(frac[code] > 0)
        f = frac[code].ravel()[idx]
        acc["ct"][idx] += f * np.float32(p.ct)
        if p.pd <= 0:
            continue
        pd, t1, t2 = p.pd * tex[0][idx], p.t1 * tex[1][idx], p.t2 * tex[2][idx]
        s1 = seq.t1w(pd, t1, p.t2s * tex[2][idx])
        acc["t1"][idx] += f * s1
        if p.gd > 0:
            conc = p.gd * (gd_het[idx] if code == ENHANCING else np.ones_like(f))
            gd[idx] += f * conc
            s1 = seq.t1w(pd, 1.0 / (1.0 / t1 + relaxivity * 1e-3 * conc), p.t2s * tex[2][idx])
        acc["t1ce"][idx] += f * s1
        acc["t2"][idx] += f * seq.t2w(pd, t1, t2)
        acc["flair"][idx] += f * seq.flair(pd, t1, t2)
        acc["adc"][idx] += f * (p.adc * tex[2][idx])
    return acc, gd


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
        shape, spacing: grid (X, Y, Z) pointing Right, Anterior, Superior; voxel size (mm). The head fills the FOV.
        seed: anatomy, parameters, acquisition and noise use separate streams of it (noise off: same anatomy).
        num_tumors: a number of tumours, or an inclusive (min, max) range drawn uniformly.
        noise_level: Rician noise sigma relative to each MR series' white-matter signal (Gaussian, relative to
            white-matter ADC, for ADC); 0 switches noise off. ``ct_noise_hu``: Gaussian CT noise (HU).
        bias_strength, intensity_jitter: std of the log of each MR series' smooth (80 mm) bias field and of its
            gain (``t1ce`` shares both with ``t1``).
        param_jitter: per-subject relative jitter of the tissue parameters.
        texture_strength: relative amplitude of smooth (4 mm) within-tissue variation of PD, T1 and T2.
        misregistration_mm, misregistration_deg: std of a random rigid motion of every image except ``t1``
            (the masks' reference); 0 (default) keeps the contrasts co-registered.
        sequences, relaxivity: MR sequence parameters and r1 of the contrast agent (1/(mM s)).

    Returns:
        a :class:`PhantomSubject`.
    """
    shape, spacing = _check_geometry(shape, spacing)
    lo, hi = (num_tumors, num_tumors) if np.isscalar(num_tumors) else tuple(num_tumors)
    if not 0 <= int(lo) <= int(hi):
        raise ValueError(f"num_tumors must be a count >= 0 or a range (min, max), 0 <= min <= max; got {num_tumors}.")
    for name in (
        "noise_level",
        "ct_noise_hu",
        "bias_strength",
        "intensity_jitter",
        "param_jitter",
        "texture_strength",
        "misregistration_mm",
        "misregistration_deg",
        "relaxivity",
    ):
        if not float(locals()[name]) >= 0:
            raise ValueError(f"{name} must be >= 0, got {locals()[name]}.")
    rng_anat, rng_par, rng_acq, rng_noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    frac, hull, tumours = _anatomy(rng_anat, shape, spacing, (int(lo), int(hi)))
    params = {}  # subject's PD, T1, T2, T2*, ADC, Gd: x exp(N(0, jitter)); CT: + N(0, jitter max(|HU|, 100))
    for code, p in TISSUE_PARAMETERS.items():
        mult, shift = np.exp(rng_par.normal(0, param_jitter, 7)), rng_par.normal(0, param_jitter * max(abs(p.ct), 100))
        params[code] = TissueParams(*(v * m for v, m in zip(p, mult)))._replace(ct=p.ct + shift * (code != BACKGROUND))
    tex = [np.exp(texture_strength * _smooth_field(rng_par, shape, spacing, 4.0)).ravel() for _ in range(3)]
    gd_het = np.exp(0.3 * _smooth_field(rng_par, shape, spacing, 6.0)).ravel()  # heterogeneous enhancement
    acc, gd = _mix_signals(frac, params, tex, gd_het, sequences, relaxivity)

    wm = params[WM]  # acquisition: gain and bias per MR series (shared by t1 / t1ce), optional motion, noise
    wm_ref = {
        "t1": sequences.t1w(wm.pd, wm.t1, wm.t2s),
        "t2": sequences.t2w(wm.pd, wm.t1, wm.t2),
        "flair": sequences.flair(wm.pd, wm.t1, wm.t2),
    }
    images, gains, sigmas = {"adc": acc["adc"].reshape(shape), "ct": acc["ct"].reshape(shape)}, {}, {}
    for key in ("t1", "t2", "flair"):
        gain = float(1000.0 / wm_ref[key] * np.exp(rng_acq.normal(0.0, intensity_jitter)))
        scale = gain * np.exp(bias_strength * _smooth_field(rng_acq, shape, spacing, 80.0))
        for k in ("t1", "t1ce") if key == "t1" else (key,):
            images[k], gains[k], sigmas[k] = acc[k].reshape(shape) * scale, gain, noise_level * gain * wm_ref[key]
    sp, centre = np.asarray(spacing), (np.asarray(shape) - 1) / 2
    for key in IMAGE_KEYS[1:] if misregistration_mm > 0 or misregistration_deg > 0 else ():  # rigid motion
        rot = Rotation.from_euler("xyz", rng_acq.normal(0.0, misregistration_deg, 3), degrees=True).as_matrix()
        mat, shift = np.diag(1 / sp) @ rot @ np.diag(sp), rng_acq.normal(0.0, misregistration_mm, 3) / sp
        images[key] = ndimage.affine_transform(images[key], mat, centre - mat @ centre + shift, order=1, mode="nearest")
    if noise_level > 0:
        for key in ("t1", "t2", "flair", "t1ce"):
            n1, n2 = (rng_noise.standard_normal(shape, dtype=np.float32) * np.float32(sigmas[key]) for _ in range(2))
            images[key] = np.sqrt((images[key] + n1) ** 2 + n2**2)
        noise = rng_noise.standard_normal(shape, dtype=np.float32) * np.float32(noise_level * wm.adc)
        images["adc"] = np.maximum(images["adc"] + noise, 0.0)
    noise = rng_noise.standard_normal(shape, dtype=np.float32) * np.float32(ct_noise_hu)
    images["ct"] = np.clip(images["ct"] + noise, -1024.0, 3071.0)

    brain = hull >= 0.5  # hard labels: argmax of the memberships, tumour codes only inside the brain envelope
    labels = frac.argmax(0).astype(np.uint8)
    outside = ~brain & (labels >= NECROSIS)
    labels[outside] = frac[:NECROSIS, outside].argmax(0)
    lut = np.array([0] * NECROSIS + [1, 2, 3], np.uint8)  # tissue code -> tumour label
    volumes = {k: images[k].astype(np.float32) for k in IMAGE_KEYS}
    volumes.update(brain_mask=brain.astype(np.uint8), tumor_mask=lut[labels], labels=labels)
    affine = nib.affines.from_matvec(np.diag(spacing), -(np.asarray(shape) - 1) / 2 * np.asarray(spacing))
    info = {
        "seed": int(seed),
        "shape": list(shape),
        "spacing": list(spacing),
        "tumours": tumours,
        "gains": gains,
        "tissue_parameters": {TISSUE_LABELS[c]: p._asdict() for c, p in params.items()},
    }
    return PhantomSubject(volumes, frac, gd.reshape(shape), affine, info)


def write_subject(subject: PhantomSubject, folder: str | os.PathLike, compresslevel: int = 1) -> dict[str, Path]:
    """Write ``<key>.nii.gz`` per key of ``subject.volumes`` into ``folder`` (returns key -> path); the bytes depend
    only on the data (gzip with mtime 0 and no file name) and each file appears atomically."""
    (folder := Path(folder)).mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in subject.volumes.items():
        img = nib.Nifti1Image(array, subject.affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(subject.affine, code=1)
        img.set_sform(subject.affine, code=1)
        paths[key] = folder / f"{key}.nii.gz"
        tmp = folder / f".{key}.nii.gz.part"
        tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=compresslevel, mtime=0))
        os.replace(tmp, paths[key])
    return paths


def _make_subject(job: tuple) -> dict[str, str]:
    shape, spacing, seed, kwargs, folder = job
    return {k: str(v) for k, v in write_subject(generate_subject(shape, spacing, seed, **kwargs), folder).items()}


def generate_dataset(
    output_dir: str | os.PathLike,
    num_subjects: int = 12,
    shape: Sequence[int] = (96, 112, 96),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    *,
    fractions: Sequence[float] = (0.6, 0.1, 0.3),
    num_workers: int = 1,
    **phantom_kwargs,
) -> Path:
    """Write ``phantom_XXX/`` (subject ``i`` from ``subject_seed(seed, i)``, ``phantom_kwargs`` go to
    :func:`generate_subject`; ``num_workers`` > 1 uses processes, same bytes) and ``datalist.json`` (``subject`` and
    every file key, paths relative to it; split by subject with ``split_subjects(ids, fractions, seed)``) into
    ``output_dir``; returns the datalist path."""
    shape, spacing = _check_geometry(shape, spacing)
    for name, value, low in (("num_subjects", num_subjects, 1), ("seed", seed, 0), ("num_workers", num_workers, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    root = Path(output_dir).absolute()
    ids = [f"phantom_{i:03d}" for i in range(num_subjects)]
    jobs = [(shape, spacing, subject_seed(seed, i), phantom_kwargs, root / sid) for i, sid in enumerate(ids)]
    with ProcessPoolExecutor(num_workers) if num_workers > 1 else nullcontext() as pool:
        rows = list((pool.map if pool else map)(_make_subject, jobs))
    entries = {sid: {"subject": sid, **row} for sid, row in zip(ids, rows)}
    splits = split_subjects(ids, fractions, seed=seed)
    extra = {
        "name": "phantom",
        "description": "physics-based multi-contrast brain phantom (common.data.phantom)",
        "modality": dict(zip(IMAGE_KEYS, ("T1w", "T2w", "FLAIR", "ADC", "T1w+Gd", "CT"))),
        "seed": int(seed),
        "shape": shape,
        "spacing": spacing,
        "labels": TISSUE_LABELS,
        "tumor_labels": {0: "none", **TUMOR_LABELS},
        **{f"num{name.capitalize()}": len(ids) for name, ids in splits.items()},
    }  # numTraining, ...
    return write_datalist(root / "datalist.json", {k: [entries[s] for s in v] for k, v in splits.items()}, extra)
