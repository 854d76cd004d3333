"""MONAI datalist helpers shared by the phantom generator and the dataset-preparation scripts.

The datalist format is MONAI's ``load_decathlon_datalist`` format: a JSON object whose ``training``,
``validation`` and ``test`` lists hold one dict per subject, mapping modality keys to file paths
*relative to the datalist file*.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["split_subjects", "write_datalist", "SPLITS"]

SPLITS = ("training", "validation", "test")


def split_subjects(
    subject_ids: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[str]]:
    """Split subject ids into training / validation / test by subject (never by slice or patch).

    Args:
        subject_ids: unique subject identifiers.
        fractions: fractions of (training, validation, test); they must sum to 1.
        seed: seed of the permutation; the same ids and seed give the same split.

    Returns:
        dict mapping ``"training"``, ``"validation"``, ``"test"`` to sorted lists of ids. With at least
        three subjects every split gets at least one.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}.")
    ids = sorted(subject_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("subject_ids must be unique.")
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    if n >= 3:
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    n_train = n - n_val - n_test
    parts = np.split(order, [n_train, n_train + n_val])
    return {name: sorted(ids[i] for i in part) for name, part in zip(SPLITS, parts)}


def write_datalist(
    path: str | os.PathLike, splits: Mapping[str, Sequence[Mapping[str, str]]], extra: Mapping | None = None
) -> Path:
    """Write a datalist JSON whose file paths are relative to the datalist's folder.

    Args:
        path: output JSON path.
        splits: ``{"training": [...], "validation": [...], "test": [...]}``, each entry a dict of
            modality key -> absolute or relative path (non-path values such as ``"subject"`` are kept).
        extra: other top-level fields (description, modality names, ...).

    Returns:
        the path written.
    """
    path = Path(path).absolute()
    root = path.parent
    out: dict = dict(extra or {})
    for name in SPLITS:
        rows = []
        for entry in splits.get(name, []):
            row = {}
            for key, value in entry.items():
                if isinstance(value, (str, os.PathLike)) and key != "subject" and os.path.isabs(str(value)):
                    value = os.path.relpath(str(value), root)
                row[key] = str(value) if isinstance(value, os.PathLike) else value
            rows.append(row)
        out[name] = rows
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, path)
    return path
