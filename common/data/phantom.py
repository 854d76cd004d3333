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

The anatomy (memberships, label codes) is in :mod:`common.data.phantom_anatomy`, the tissue parameters and
signal equations in :mod:`common.data.phantom_physics`; this module generates and writes subjects and data sets.
"""

from __future__ import annotations

import gzip
import os
from collections import namedtuple
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from common.data.datalist import split_subjects, write_datalist
from common.data.phantom_anatomy import (
    BACKGROUND,
    MASK_KEYS,
    NECROSIS,
    TISSUE_LABELS,
    TUMOR_LABELS,
    WM,
    _anatomy,
    _smooth_field,
)
from common.data.phantom_physics import (
    DEFAULT_SEQUENCES,
    GD_RELAXIVITY,
    IMAGE_KEYS,
    TISSUE_PARAMETERS,
    MRSequences,
    TissueParams,
    _mix_signals,
)

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
    "phantom_options_record",
]


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


def generate_subject(
    shape: Sequence[int] = (96, 112, 96),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    *,
    num_tumors: int | Sequence[int] = (0, 3),
    tumor_radius_range: Sequence[float] = (0.15, 0.28),
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
        tumor_radius_range: (min, max) outer radius of a tumour's enhancing rim, as a fraction of the brain's
            smallest semi-axis, drawn uniformly (necrotic core 35-65 % of it, edema 1.3-1.9x); the default
            (0.15, 0.28) gives 6-11 mm rims in the 96 x 112 x 96 demo head. Larger values: more enhancing tissue.
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
    if len(tumor_radius_range) != 2 or not 0 < float(tumor_radius_range[0]) <= float(tumor_radius_range[1]) <= 0.6:
        raise ValueError(f"tumor_radius_range must be (min, max) with 0 < min <= max <= 0.6, got {tumor_radius_range}.")
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
    radii = (float(tumor_radius_range[0]), float(tumor_radius_range[1]))
    frac, hull, tumours = _anatomy(rng_anat, shape, spacing, (int(lo), int(hi)), radii)
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


def phantom_options_record(options: dict) -> dict:
    """``generate_subject`` keyword options as the datalist records them (``phantom_options``): sorted, JSON lists."""
    return {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in sorted(options.items())}


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
        "phantom_options": phantom_options_record(phantom_kwargs),
        **{f"num{name.capitalize()}": len(ids) for name, ids in splits.items()},
    }  # numTraining, ...
    return write_datalist(root / "datalist.json", {k: [entries[s] for s in v] for k, v in splits.items()}, extra)
