"""Unique case names for datalist entries, so that outputs ``<output_dir>/<case>/<case>_<suffix>.nii.gz`` never
overwrite each other.

Data sets such as the demo phantom or BraTS keep one folder per subject with modality-named files
(``case1/t1.nii.gz``, ``case2/t1.nii.gz``); naming outputs after the file stem would give every case the name
``t1`` and each output would overwrite the previous one. :func:`assign_case_names` gives every entry one name:

1. the entry's ``subject`` field when present (its last path component: MONAI's datalist loader turns a subject
   that is also a folder of the data set into an absolute path);
2. else the file stem (``IXI002-Guys-0828-T1``) when the stems of all entries are unique;
3. else the part of the file's path that distinguishes it, relative to the common ancestor of the files, the
   common file stem dropped and folders joined by ``_`` (``case1``; ``a_case1`` for ``a/case1/t1.nii.gz``).

Names never contain a path separator. Two entries that still share a name are refused with an
:class:`~common.data.validation.InputDataError` naming both, before anything is written.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from common.data.validation import InputDataError
from common.utils.extensions import strip_image_extension

__all__ = ["assign_case_names", "case_stem"]


def case_stem(path: str | os.PathLike) -> str:
    """File name of ``path`` without folders and image extension: ``/d/case1/T1.nii.gz`` -> ``T1``."""
    base = os.path.basename(os.path.normpath(os.fspath(path)))
    stem = strip_image_extension(base)
    if stem == base:
        stem = os.path.splitext(base)[0] or base
    return stem


def _given_name(value: Any) -> str:
    value = value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value
    return os.path.basename(os.path.normpath(str(value)))


def _first_file(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return None if value is None else os.fspath(value)


def _duplicates(names: Sequence[str | None]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        if name is not None:
            groups[name].append(i)
    return {name: idx for name, idx in groups.items() if len(idx) > 1}


def _path_names(files: Sequence[str | None], unnamed: Sequence[int]) -> dict[int, str]:
    """Distinguishing relative path of each unnamed entry's file (see the module docstring, rule 3)."""
    absolute = [os.path.abspath(f) for f in files if f is not None]
    try:
        ancestor = os.path.commonpath([os.path.dirname(f) for f in absolute])
    except ValueError:  # paths on different drives
        ancestor = ""
    parts = {}
    for i in unnamed:
        rel = os.path.relpath(strip_image_extension(os.path.abspath(files[i])), ancestor or os.sep)
        parts[i] = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    stems = {p[-1] for p in parts.values() if p}
    if len(stems) == 1 and all(len(p) >= 2 for p in parts.values()):
        parts = {i: p[:-1] for i, p in parts.items()}
    return {i: "_".join(p) or case_stem(files[i]) for i, p in parts.items()}


def _fill(names: Sequence[str | None], generated: dict[int, str]) -> list[str | None]:
    return [generated.get(i, name) for i, name in enumerate(names)]


def assign_case_names(cases: list[dict], key: str, name_key: str = "subject") -> list[dict]:
    """Give every datalist entry a unique case name in ``entry[name_key]``, in place.

    Bundles call it in ``initialize`` (before anything is written) on the list their dataset reads, e.g.
    ``"$common.data.assign_case_names(@datalist_data, @source_keys[0])"``; the entries are updated in place so
    the dataset built from the same list sees the names.

    Args:
        cases: datalist entries (``{key: path, ...}``), e.g. from :func:`common.data.load_datalist`.
        key: the image key whose file names a case without ``name_key`` (the source the output is saved from).
        name_key: field receiving the name; a value already there is kept (its last path component).

    Returns:
        ``cases``, each entry holding its name in ``name_key``.

    Raises:
        InputDataError: an entry has neither ``name_key`` nor ``key``, or two entries get the same name
            (e.g. duplicate subject values), listing the colliding entries and their files.
    """
    names: list[str | None] = []
    files: list[str | None] = []
    for i, case in enumerate(cases):
        value = case.get(name_key)
        files.append(_first_file(case.get(key)))
        if value is not None and str(value) != "":
            names.append(_given_name(value))
        elif files[-1] is None:
            raise InputDataError(
                f"datalist entry {i} has neither a '{name_key}' nor a '{key}' entry to name its outputs after "
                f"(it holds {sorted(case)})."
            )
        else:
            names.append(None)
    unnamed = [i for i, name in enumerate(names) if name is None]
    if unnamed:
        by_stem = _fill(names, {i: case_stem(files[i]) for i in unnamed})
        names = by_stem if not _duplicates(by_stem) else _fill(names, _path_names(files, unnamed))
    collisions = _duplicates(names)
    if collisions:
        groups = []
        for name, idx in collisions.items():
            entries = ", ".join(f"entry {i} ('{key}': '{files[i]}')" for i in idx)
            groups.append(f"'{name}' <- {entries}")
        raise InputDataError(
            f"datalist entries would share one case name, so their outputs would overwrite each other: "
            f"{'; '.join(groups)}; give each entry a unique '{name_key}' in the datalist."
        )
    for case, name in zip(cases, names):
        case[name_key] = name
    return cases
