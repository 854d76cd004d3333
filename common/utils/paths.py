"""Where things are: the repository, a bundle's folder, the demo data set.

Bundle configs call these so that ``python -m monai.bundle run --config_file bundles/<name>/configs/train.json``
works from any working directory once ``common`` is installed (``pip install -e .``); ``--bundle_root`` and
``--dataset_dir`` override them for a bundle moved elsewhere (an archive, MONAI Label).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "bundle_root", "default_dataset_dir"]


def repo_root() -> str:
    """The repository holding ``common`` (the folder above the package)."""
    return str(Path(__file__).resolve().parents[2])


def bundle_root(name: str) -> str:
    """``<repo>/bundles/<name>``, or the current folder when it is that bundle (an unpacked archive)."""
    candidate = Path(repo_root()) / "bundles" / name
    if candidate.is_dir():
        return str(candidate)
    return os.getcwd()


def default_dataset_dir() -> str:
    """The demo data set, ``<repo>/data/demo`` (``MEDSYNTH_DATA`` overrides it)."""
    return os.environ.get("MEDSYNTH_DATA", str(Path(repo_root()) / "data" / "demo"))
