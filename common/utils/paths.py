"""Where things are: the repository, a bundle's folder, the demo data set.

Bundle configs call these so that ``python -m monai.bundle run --config_file bundles/<name>/configs/train.json``
works from any working directory once ``common`` is installed (``pip install -e .``); ``--bundle_root`` and
``--dataset_dir`` override them for a bundle moved elsewhere (an archive, MONAI Label).

``bundle_root(name)`` is the folder the running config was read from: MONAI's ``ConfigWorkflow`` (behind
``python -m monai.bundle run``) keeps it as ``config_root_path`` and sets up nothing else before the config's
expressions run, so it is read from the workflow on the call stack. Without a workflow (a bare ``ConfigParser``)
it is the current folder when that is the bundle, else the repository's ``bundles/<name>``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

__all__ = ["repo_root", "bundle_root", "config_bundle_root", "default_dataset_dir"]


def repo_root() -> str:
    """The repository holding ``common`` (the folder above the package)."""
    return str(Path(__file__).resolve().parents[2])


def config_bundle_root() -> str | None:
    """The bundle folder of the ``ConfigWorkflow`` running the caller, or ``None`` outside one.

    ``ConfigWorkflow`` stores the folder of its (first) config file as ``config_root_path``; a bundle's
    configs lie in ``<bundle>/configs``, so the bundle is its parent (the rule ``ConfigWorkflow.run`` uses to
    put the bundle on ``sys.path``).
    """
    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        # through __dict__: ConfigParser.__getattr__ looks unknown attributes up as config ids (KeyError)
        root = getattr(owner, "__dict__", {}).get("config_root_path")
        if isinstance(root, Path):
            root = root.absolute()
            return str(root.parent if root.name == "configs" else root)
        frame = frame.f_back
    return None


def _is_bundle(folder: Path) -> bool:
    return (folder / "configs" / "metadata.json").is_file()


def bundle_root(name: str) -> str:
    """The folder of bundle ``name`` whose config is running.

    Args:
        name: the bundle's folder name in ``bundles/``.

    Returns:
        In order: the folder the running ``ConfigWorkflow`` read its config from; the current folder when it is
        a bundle (an unpacked archive run from inside); ``<repo>/bundles/<name>``; the current folder.
    """
    from_workflow = config_bundle_root()
    if from_workflow is not None:
        return from_workflow
    cwd = Path.cwd()
    if _is_bundle(cwd):
        return str(cwd)
    candidate = Path(repo_root()) / "bundles" / name
    if candidate.is_dir():
        return str(candidate)
    return os.getcwd()


def default_dataset_dir() -> str:
    """The demo data set, ``<repo>/data/demo`` (``MEDSYNTH_DATA`` overrides it)."""
    return os.environ.get("MEDSYNTH_DATA", str(Path(repo_root()) / "data" / "demo"))
