"""Anatomy of the physics-based brain phantom (:mod:`common.data.phantom`): tissue memberships and label codes.

A head fills a RAS grid (world origin at its centre). Smooth signed distances give every tissue a fractional
membership (partial volume over one voxel): skin/muscle, fat, skull, CSF, a 2.5 mm cortical ribbon folded into
sulci along the zero set of a random field (and the interhemispheric fissure), white matter; deep grey nuclei,
ventricles, vessels and 0-3 tumours are painted in. Tissue codes (``TISSUE_LABELS``): 0 background (air),
1 CSF, 2 cortical grey matter, 3 white matter, 4 deep grey matter, 5 vessel, 6 skull bone, 7 fat,
8 skin/muscle, 9 necrotic core, 10 edema, 11 enhancing tumour; ``TUMOR_LABELS``: 0 none, 1 necrotic core,
2 edema, 3 enhancing rim. The layered partial-volume design follows BrainWeb (Collins et al., IEEE TMI 17:463,
1998).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial import cKDTree

__all__ = [
    "BACKGROUND",
    "CSF",
    "GM",
    "WM",
    "DEEP_GM",
    "VESSEL",
    "BONE",
    "FAT",
    "SKIN",
    "NECROSIS",
    "EDEMA",
    "ENHANCING",
    "TISSUE_LABELS",
    "TUMOR_LABELS",
    "MASK_KEYS",
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
MASK_KEYS = ("brain_mask", "tumor_mask", "labels")


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


def _anatomy(rng, shape, spacing, num_tumors: tuple[int, int], tumor_radius_range: tuple[float, float] = (0.15, 0.28)):
    """Tissue memberships (12, X, Y, Z), brain-hull membership (X, Y, Z) and the list of tumours; each tumour's
    enhancing radius is drawn uniformly in ``tumor_radius_range`` x the brain's smallest semi-axis."""
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
        r_e = rng.uniform(*tumor_radius_range) * a_b.min()
        radii = (max(0.0, min(r_e * rng.uniform(0.35, 0.65), r_e - max(1.5, h))), r_e, r_e * rng.uniform(1.3, 1.9))
        ok = cand[db.ravel()[cand] > 0.6 * r_e]  # centre in white matter, the bulk mostly inside the brain
        if ok.size:
            c = np.array([a[i] for a, i in zip(axes, np.unravel_index(ok[rng.integers(ok.size)], shape))], float)
            _tumour(frac, axes, h, c, radii, shape_field, hull)
            tumours.append({"center_mm": c.tolist(), "necrotic_enhancing_edema_radii_mm": [float(r) for r in radii]})
    return np.clip(frac, 0.0, 1.0), hull, tumours
