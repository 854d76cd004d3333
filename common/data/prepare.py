"""Dataset-preparation walkers: walk a local copy of a public data set and write a MONAI datalist.

Layouts (NIfTI): BraTS 2021 ``<s>/<s>_{t1,t1ce,t2,flair,seg}.nii.gz`` and BraTS 2023
``<s>/<s>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (Menze et al., IEEE TMI 34(10), 2015; Bakas et al.,
arXiv:1811.02629); IXI ``IXI<NNN>-<site>-<NNNN>-{T1,T2,PD}.nii.gz`` matched by ``IXI<NNN>``; SynthRAD2023
Task 1 ``Task1/{brain,pelvis}/<s>/{mr,ct,mask}.nii.gz`` (Thummerer et al., Med. Phys. 50(7), 2023).
Each walker parses its file names; the shared matching, checks, split and report
(:class:`PrepareReport`) are in :mod:`common.data.prepare_core`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from common.data.prepare_core import _NIFTI, PrepareReport, _as_keys, _existing_dir, _Parsed, _prepare

__all__ = [
    "PrepareReport",
    "prepare_brats",
    "prepare_ixi",
    "prepare_synthrad",
    "BRATS_KEYS",
    "IXI_KEYS",
    "SYNTHRAD_KEYS",
]

BRATS_KEYS = ("t1", "t1ce", "t2", "flair", "tumor_mask")
IXI_KEYS = ("t1", "t2", "pd")
SYNTHRAD_KEYS = ("mr", "ct", "brain_mask")

_BRATS_RE = re.compile(r"^(?P<subject>.+?)[_-](?P<suffix>t1ce|t1c|t1n|t1|t2w|t2f|t2|flair|seg)" + _NIFTI, re.I)
_BRATS_SUFFIX = {  # suffix -> (datalist key, enhancing-tumour label of that naming, None when shared)
    "t1": ("t1", 4),
    "t1ce": ("t1ce", 4),
    "t2": ("t2", 4),
    "flair": ("flair", 4),
    "seg": ("tumor_mask", None),
    "t1n": ("t1", 3),
    "t1c": ("t1ce", 3),
    "t2w": ("t2", 3),
    "t2f": ("flair", 3),
}
_BRATS_LABELS = {
    "2021": {
        "0": "background",
        "1": "necrotic and non-enhancing tumour core (NCR/NET)",
        "2": "peritumoral edema (ED)",
        "4": "GD-enhancing tumour (ET)",
    },
    "2023": {
        "0": "background",
        "1": "non-enhancing tumour core (NETC)",
        "2": "surrounding non-enhancing FLAIR hyperintensity / edema (SNFH)",
        "3": "enhancing tumour (ET)",
    },
}
_IXI_RE = re.compile(r"^(?P<subject>IXI\d+)-(?P<site>[A-Za-z]+)-(?P<series>\d+)-(?P<mod>T1|T2|PD)" + _NIFTI)
_SYNTHRAD_RE = re.compile(r"^(?P<name>mr|ct|mask)" + _NIFTI, re.I)
_SYNTHRAD_NAME = {"mr": "mr", "ct": "ct", "mask": "brain_mask"}
_SYNTHRAD_REGIONS = ("brain", "pelvis")


def _parse_brats(root: Path, path: Path) -> _Parsed:
    match = _BRATS_RE.match(path.name)
    if match is None:
        return None
    key, enhancing = _BRATS_SUFFIX[match["suffix"].lower()]
    return match["subject"], key, ({} if enhancing is None else {"enhancing_label": enhancing})


def prepare_brats(
    root: str | os.PathLike,
    output: str | os.PathLike | None = None,
    require: str | Sequence[str] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    affine_tol: float = 1e-3,
    same_grid: Sequence[Sequence[str]] | None = None,
    write: bool = True,
) -> PrepareReport:
    """Prepare a local BraTS copy (2021 ``_t1/_t1ce/_t2/_flair/_seg`` or 2023 ``-t1n/-t1c/-t2w/-t2f/-seg``).

    Keys: ``t1, t1ce, t2, flair, tumor_mask`` (from ``seg``), plus ``subject`` and ``enhancing_label``:
    4 for 2021-style names, 3 for 2023-style names (1 = necrotic / non-enhancing core and 2 = edema in
    both); the convention is inferred from the file names, not from voxel values. ``same_grid``
    defaults to all five keys.

    Args:
        root: folder holding the subject folders (searched recursively).
        output: datalist path (``.json``) or folder; default ``datalist.json`` in the data set folder.
        require: keys a subject must have (list or comma-separated string); default all of the data set's keys.
        fractions: training / validation / test fractions (sum 1).
        seed: seed of the split by subject.
        affine_tol: largest allowed absolute difference between corresponding affine entries (mm).
        same_grid: groups of keys whose files must share shape and affine.
        write: write the datalist; ``False`` only checks and reports.

    Returns:
        the :class:`PrepareReport`.
    """
    root_dir = _existing_dir(root)
    extra = {
        "name": "BraTS",
        "description": "BraTS multi-parametric brain MRI with tumour segmentation. tumor_mask labels: 1 necrotic/"
        "non-enhancing core, 2 edema, enhancing tumour 4 (BraTS 2021 and earlier names) or 3 (BraTS 2023 names); "
        "each entry's enhancing_label gives its value.",
        "labels": {f"brats{r}": names for r, names in _BRATS_LABELS.items()},
        "modalities": {
            "t1": "native T1-weighted",
            "t1ce": "post-gadolinium T1-weighted",
            "t2": "T2-weighted",
            "flair": "T2-FLAIR",
            "tumor_mask": "BraTS tumour segmentation (seg)",
        },
    }
    return _prepare(
        "brats",
        [root_dir],
        _parse_brats,
        BRATS_KEYS,
        [list(BRATS_KEYS)],
        extra,
        root_dir,
        output,
        require,
        fractions,
        seed,
        affine_tol,
        same_grid,
        write,
    )


def _parse_ixi(root: Path, path: Path) -> _Parsed:
    match = _IXI_RE.match(path.name)
    return None if match is None else (match["subject"], match["mod"].lower(), {"site": match["site"]})


def prepare_ixi(
    roots: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    require: str | Sequence[str] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    affine_tol: float = 1e-3,
    same_grid: Sequence[Sequence[str]] | None = None,
    write: bool = True,
) -> PrepareReport:
    """Prepare a local IXI copy: ``IXI<NNN>-<site>-<NNNN>-{T1,T2,PD}.nii.gz`` matched by ``IXI<NNN>``.

    Keys: ``t1, t2, pd`` plus ``subject`` and ``site`` (Guys, HH, IOP). In the released IXI data T2 and
    PD come from one dual-echo acquisition on one grid while T1 is acquired on its own (sagittal) grid,
    so ``same_grid`` defaults to ``[["t2", "pd"]]``; T1 must be resampled or registered (e.g.
    ``monai.transforms.ResampleToMatchd``) before voxel-wise pairing. Pass
    ``same_grid=[["t1", "t2", "pd"]]`` for a copy that was already co-registered. The default output
    folder is the folders' common parent (the folder itself when only one is given).

    Args:
        roots: one folder or several (e.g. IXI-T1, IXI-T2, IXI-PD); searched recursively.
        output, require, fractions, seed, affine_tol, same_grid, write: as in :func:`prepare_brats`.

    Returns:
        the :class:`PrepareReport`.
    """
    root_list = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    if not root_list:
        raise ValueError("roots must name at least one folder.")
    root_dirs = [_existing_dir(r) for r in root_list]
    common_dir = Path(os.path.commonpath([str(r.absolute()) for r in root_dirs]))
    extra = {
        "name": "IXI",
        "modalities": {"t1": "T1-weighted", "t2": "T2-weighted", "pd": "proton-density weighted"},
        "description": "IXI brain MRI of healthy subjects (sites Guys, HH, IOP). T2 and PD share a grid; T1 is "
        "on its own grid unless same_grid lists it with them.",
    }
    return _prepare(
        "ixi",
        root_dirs,
        _parse_ixi,
        IXI_KEYS,
        [["t2", "pd"]],
        extra,
        common_dir,
        output,
        require,
        fractions,
        seed,
        affine_tol,
        same_grid,
        write,
    )


def _synthrad_regions(root: Path, regions: Sequence[str]) -> dict[str, Path]:
    """Region name -> folder, for a root that is the data set folder, its ``Task1`` or one region folder."""
    if root.name.lower() in _SYNTHRAD_REGIONS:
        found = {root.name.lower(): root}
    else:
        base = next((p for p in root.iterdir() if p.is_dir() and p.name.lower() == "task1"), root)
        found = {p.name.lower(): p for p in base.iterdir() if p.is_dir() and p.name.lower() in _SYNTHRAD_REGIONS}
    found = {r: p for r, p in sorted(found.items()) if r in regions}
    if not found:
        raise FileNotFoundError(
            f"no SynthRAD region folder among {list(regions)} under {str(root)!r} "
            "(expected <root>/Task1/<region>/<subject>/{mr,ct,mask}.nii.gz)."
        )
    return found


def _parse_synthrad(region_root: Path, path: Path) -> _Parsed:
    match = _SYNTHRAD_RE.match(path.name)
    if match is None or path.parent == region_root:
        return None
    return path.parent.name, _SYNTHRAD_NAME[match["name"].lower()], {"region": region_root.name.lower()}


def prepare_synthrad(
    root: str | os.PathLike,
    output: str | os.PathLike | None = None,
    require: str | Sequence[str] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    affine_tol: float = 1e-3,
    same_grid: Sequence[Sequence[str]] | None = None,
    regions: str | Sequence[str] = _SYNTHRAD_REGIONS,
    write: bool = True,
) -> PrepareReport:
    """Prepare a local SynthRAD2023 Task 1 copy: ``Task1/{brain,pelvis}/<subject>/{mr,ct,mask}.nii.gz``.

    Keys: ``mr``, ``ct`` (HU), ``brain_mask`` (the released ``mask``: the dilated patient outline, for
    the pelvis the body contour), plus ``subject`` and ``region``. ``same_grid`` defaults to all keys.

    Args:
        root: the data set folder, its ``Task1`` folder or one region folder.
        output, require, fractions, seed, affine_tol, same_grid, write: as in :func:`prepare_brats`.
        regions: regions to include ("brain", "pelvis"; list or comma-separated string).

    Returns:
        the :class:`PrepareReport`.
    """
    root_dir = _existing_dir(root)
    region_dirs = _synthrad_regions(root_dir, _as_keys(regions, _SYNTHRAD_REGIONS, "regions"))
    extra = {
        "name": "SynthRAD2023 Task 1",
        "regions": list(region_dirs),
        "description": "SynthRAD2023 Task 1 paired MR / CT (HU); brain_mask is the released patient-outline mask.",
        "modalities": {
            "mr": "MR (T1-weighted brain; T1/T2-weighted pelvis)",
            "ct": "CT in HU",
            "brain_mask": "patient outline mask (mask.nii.gz)",
        },
    }
    return _prepare(
        "synthrad",
        list(region_dirs.values()),
        _parse_synthrad,
        SYNTHRAD_KEYS,
        [list(SYNTHRAD_KEYS)],
        extra,
        root_dir,
        output,
        require,
        fractions,
        seed,
        affine_tol,
        same_grid,
        write,
    )
