"""Shared core of the dataset preparation (:mod:`common.data.prepare`): collect, check, split, report.

A per-dataset walker (BraTS, IXI, SynthRAD in :mod:`common.data.prepare`) gives :func:`_prepare` its roots
and a ``parse(root, path)`` mapping every NIfTI file to ``(subject, key, metadata)``. Files are grouped by
subject and only their NIfTI *headers* are read. Subjects lacking a required key, holding duplicate or
unreadable files, or whose modalities disagree in shape or affine are excluded; the rest are split by
subject (:func:`common.data.datalist.split_subjects`) into ``datalist.json`` (paths relative to it). A
:class:`PrepareReport` says who was included and why the others were not.
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

__all__ = ["PrepareReport"]

logger = logging.getLogger("common.data.prepare")  # the public module's name, as before the split

_NIFTI = r"\.nii(?:\.gz)?$"


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
