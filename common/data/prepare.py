"""Dataset-preparation logic: walk a local copy of a public data set and write a MONAI datalist.

Layouts (NIfTI): BraTS 2021 ``<s>/<s>_{t1,t1ce,t2,flair,seg}.nii.gz`` and BraTS 2023
``<s>/<s>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (Menze et al., IEEE TMI 34(10), 2015; Bakas et al.,
arXiv:1811.02629); IXI ``IXI<NNN>-<site>-<NNNN>-{T1,T2,PD}.nii.gz`` matched by ``IXI<NNN>``; SynthRAD2023
Task 1 ``Task1/{brain,pelvis}/<s>/{mr,ct,mask}.nii.gz`` (Thummerer et al., Med. Phys. 50(7), 2023).
Files are grouped by subject and only their NIfTI *headers* are read. Subjects lacking a required key,
holding duplicate or unreadable files, or whose modalities disagree in shape or affine are excluded; the
rest are split by subject (:func:`common.data.datalist.split_subjects`) into ``datalist.json`` (paths
relative to it). A :class:`PrepareReport` says who was included and why the others were not.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.datalist import SPLITS, split_subjects, write_datalist

__all__ = [
    "PrepareReport",
    "prepare_brats",
    "prepare_ixi",
    "prepare_synthrad",
    "BRATS_KEYS",
    "IXI_KEYS",
    "SYNTHRAD_KEYS",
]

logger = logging.getLogger(__name__)

BRATS_KEYS = ("t1", "t1ce", "t2", "flair", "tumor_mask")
IXI_KEYS = ("t1", "t2", "pd")
SYNTHRAD_KEYS = ("mr", "ct", "brain_mask")

_NIFTI = r"\.nii(?:\.gz)?$"
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


@dataclass
class PrepareReport:
    """Outcome of one preparation run; every excluded subject comes with human-readable reasons.

    Attributes:
        dataset: data set name ("brats", "ixi", "synthrad").
        roots: the folders that were walked.
        datalist: path of the written datalist, ``None`` when nothing was written.
        included: subjects written to the datalist.
        missing: subject -> required keys it lacks.
        mismatched: subject -> shape / affine disagreements between its modalities.
        invalid: subject -> other problems (duplicate or unreadable files, conflicting names).
        incomplete: included subject -> optional keys it lacks (absent from its datalist entry).
        ignored_files: NIfTI files whose names follow none of the expected patterns.
        splits: ``"training"/"validation"/"test"`` -> subject ids.
    """

    dataset: str
    roots: list[str]
    datalist: str | None = None
    included: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    mismatched: dict[str, list[str]] = field(default_factory=dict)
    invalid: dict[str, list[str]] = field(default_factory=dict)
    incomplete: dict[str, list[str]] = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)
    splits: dict[str, list[str]] = field(default_factory=dict)

    @property
    def excluded(self) -> dict[str, list[str]]:
        """Subject -> every reason it was left out of the datalist."""
        out = {subject: [f"missing required: {', '.join(keys)}"] for subject, keys in self.missing.items()}
        for problems in (self.mismatched, self.invalid):
            for subject, reasons in problems.items():
                out.setdefault(subject, []).extend(reasons)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        """Plain-dict view (JSON-serialisable), including ``excluded``."""
        return {**asdict(self), "excluded": self.excluded}

    def summary(self) -> str:
        """One-line summary for a command-line tool."""
        sizes = "/".join(str(len(self.splits.get(name, []))) for name in SPLITS)
        where = f"wrote {self.datalist}" if self.datalist else "no datalist written"
        return (
            f"{self.dataset}: {len(self.included)} subjects included (train/val/test {sizes}), "
            f"{len(self.excluded)} excluded ({len(self.missing)} missing, {len(self.mismatched)} mismatched, "
            f"{len(self.invalid)} invalid), {len(self.ignored_files)} files ignored; {where}"
        )


@dataclass
class _Subject:
    """Files and metadata collected for one subject while walking."""

    files: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, key: str, path: Path, meta: Mapping[str, object]) -> None:
        self.files.setdefault(key, []).append(os.path.abspath(path))
        for name, value in meta.items():
            if name in self.meta and self.meta[name] != value:
                self.problems.append(f"conflicting {name}: {self.meta[name]!r} vs {value!r}")
            self.meta.setdefault(name, value)


def _nifti_files(root: Path) -> Iterator[Path]:
    """Yield NIfTI files under ``root`` in sorted order, following symlinks once, skipping hidden names."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and re.search(_NIFTI, name):
                yield Path(dirpath, name)


def _existing_dir(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset root {str(path)!r} does not exist.")
    if not path.is_dir():
        raise NotADirectoryError(f"dataset root {str(path)!r} is not a folder.")
    return path


def _as_keys(value: str | Sequence[str] | None, allowed: Sequence[str], name: str) -> list[str]:
    if value is None:
        return list(allowed)
    keys = value.split(",") if isinstance(value, str) else [str(k) for k in value]
    keys = [k.strip() for k in keys if k.strip()]
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; choose from {list(allowed)}.")
    return keys


def _header(path: str) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (trailing singleton dimensions beyond 3 dropped) and affine, from the header only."""
    img = nib.load(path)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape, np.asarray(img.affine, dtype=np.float64)


def _check(
    subject: _Subject, required: Sequence[str], same_grid: list[list[str]], affine_tol: float
) -> tuple[list[str], list[str], list[str]]:
    """Return (missing required keys, shape / affine mismatches, other problems) of one subject."""
    invalid = list(subject.problems)
    missing = [k for k in required if k not in subject.files]
    headers: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
    for key, paths in subject.files.items():
        if len(paths) > 1:
            invalid.append(f"duplicate {key}: {', '.join(paths)}")
            continue
        try:
            headers[key] = _header(paths[0])
        except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as err:
            invalid.append(f"unreadable {key} ({paths[0]}): {err}")
    mismatched = []
    for group in same_grid:
        present = [k for k in group if k in headers]
        for key in present[1:]:
            ref = present[0]
            (shape, affine), (ref_shape, ref_affine) = headers[key], headers[ref]
            diff = float(np.max(np.abs(affine - ref_affine)))
            if shape != ref_shape:
                mismatched.append(f"shape: {key} {shape} != {ref} {ref_shape}")
            elif not diff <= affine_tol:
                mismatched.append(f"affine: {key} differs from {ref} by up to {diff:.4g} (tolerance {affine_tol:g})")
    return missing, mismatched, invalid


_Parsed = "tuple[str, str, dict] | None"  # (subject, key, metadata), None for a file of another naming


def _prepare(
    dataset: str,
    roots: Sequence[Path],
    parse: Callable[[Path, Path], _Parsed],
    keys: Sequence[str],
    default_grid: list[list[str]],
    extra: Mapping,
    default_dir: Path,
    output: str | os.PathLike | None,
    require: str | Sequence[str] | None,
    fractions: Sequence[float],
    seed: int,
    affine_tol: float,
    same_grid: Sequence[Sequence[str]] | None,
    write: bool,
) -> PrepareReport:
    """Validate the arguments, collect and check every subject, split the usable ones and write the datalist."""
    if not affine_tol >= 0:
        raise ValueError(f"affine_tol must be >= 0, got {affine_tol}.")
    split_subjects([], fractions, seed)  # raises ValueError naming `fractions` when they are invalid
    required = _as_keys(require, keys, "require")
    if same_grid is not None and (isinstance(same_grid, str) or all(isinstance(g, str) for g in same_grid)):
        same_grid = [same_grid]  # one group given without the outer list
    grid = default_grid if same_grid is None else [_as_keys(g, keys, "same_grid") for g in same_grid]
    out = Path(output).expanduser() if output is not None else default_dir
    out = out if out.suffix.lower() == ".json" else out / "datalist.json"
    subjects: dict[str, _Subject] = {}
    ignored: list[Path] = []
    seen: set[str] = set()
    for root, path in ((r, p) for r in roots for p in _nifti_files(r)):
        if os.path.realpath(path) in seen:  # the same file reached through overlapping roots
            continue
        seen.add(os.path.realpath(path))
        parsed = parse(root, path)
        if parsed is None:
            ignored.append(path)
            continue
        subjects.setdefault(parsed[0], _Subject()).add(parsed[1], path, parsed[2])
    report = PrepareReport(dataset, [str(r) for r in roots], ignored_files=[str(p) for p in ignored])
    for sid in sorted(subjects):
        missing, mismatched, invalid = _check(subjects[sid], required, grid, affine_tol)
        for store, items in ((report.missing, missing), (report.mismatched, mismatched), (report.invalid, invalid)):
            if items:
                store[sid] = items
        if not (missing or mismatched or invalid):
            report.included.append(sid)
            absent = [k for k in keys if k not in subjects[sid].files]
            if absent:
                report.incomplete[sid] = absent
    for sid, reasons in report.excluded.items():
        logger.warning("%s: excluding %s: %s", dataset, sid, "; ".join(reasons))
    if ignored:
        logger.info("%s: %d NIfTI files match no expected name, e.g. %s", dataset, len(ignored), ignored[0])
    if report.included:
        report.splits = split_subjects(report.included, fractions, seed)
        rows = {
            name: [
                {
                    "subject": s,
                    **{k: subjects[s].files[k][0] for k in keys if k in subjects[s].files},
                    **subjects[s].meta,
                }
                for s in ids
            ]
            for name, ids in report.splits.items()
        }
        info = {
            **extra,
            "dataset": dataset,
            "required": required,
            "same_grid": grid,
            "seed": int(seed),
            "fractions": [float(f) for f in fractions],
            "excluded": report.excluded,
            **{f"num{n[0].upper()}{n[1:]}": len(report.splits[n]) for n in SPLITS},
        }
        if write:
            report.datalist = str(write_datalist(out, rows, info))
    else:
        logger.error("%s: no usable subject under %s", dataset, ", ".join(report.roots))
    logger.info("%s", report.summary())
    return report


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
