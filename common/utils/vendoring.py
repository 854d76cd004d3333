"""A bundle archive that carries its own copy of ``common``: the config rewrite and the run-time guards.

MONAI 1.6.1 evaluates a config's ``"$import ..."`` statements before anything else in it and puts the bundle
folder on ``sys.path`` only in ``ConfigWorkflow.run``, after ``initialize`` (``monai/bundle/workflows.py``); a
failed import leaves a placeholder that raises on first use. So an exported config cannot ``import common``:
``vendor_config`` drops those imports and routes every use of the package through one config id, ``common``,
whose expression puts ``@bundle_root`` first on ``sys.path``, imports the package and checks that it is the
archive's copy (``load_vendored``). ``bundle_root`` itself is found without ``common``: the folder of the
running ``ConfigWorkflow``'s config (the stdlib expression ``BUNDLE_ROOT_EXPR``, the rule of
``common.utils.paths.config_bundle_root``), else the current folder; ``--bundle_root`` (Zoo CI, MONAI Label,
``ckpt_export``) overrides it. The weights path goes through ``checked_weights``, which refuses a file whose
sha256 differs from ``large_files.yml``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import UserError

__all__ = [
    "BUNDLE_ROOT_EXPR",
    "COMMON_EXPR",
    "LOADER_EXPR",
    "LARGE_FILES",
    "checked_weights",
    "common_modules",
    "load_vendored",
    "sha256_of",
    "vendor_config",
]

LARGE_FILES = "large_files.yml"
BUNDLE_ROOT_EXPR = (
    "$next((str(s.config_root_path.absolute().parent) for s in (f.frame.f_locals.get('self') for f in inspect.stack(0))"
    " if 'config_root_path' in getattr(s, '__dict__', ())), os.getcwd())"
)
# MONAI parses any expression containing the word "import" as Python before substituting ``@`` references, so the
# loader (``importlib.import_module``) is an id of its own and ``COMMON_EXPR`` never spells that word.
LOADER_EXPR = "$importlib.import_module"
COMMON_EXPR = (
    "$sys.path.insert(0, @bundle_root) or @vendor_loader('common.utils.vendoring')"
    ".load_vendored(@bundle_root, @vendored_modules)"
)
_BOOT_IMPORTS = ["$import os", "$import sys", "$import inspect", "$import importlib"]
_COMMON_IMPORT = re.compile(r"^\$\s*(import|from)\s+common(\.|\s|$)")
_COMMON_NAME = re.compile(r"(?<![\w.@'\"])common\.")
_COMMON_PATH = re.compile(r"(?<![\w.@'\"])common(?:\.\w+)+")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _import_longest(name: str) -> None:
    """Import the longest importable prefix of the dotted ``name`` (a module, or an attribute of one)."""
    parts = name.split(".")
    while parts:
        module = ".".join(parts)
        try:
            importlib.import_module(module)
            return
        except ModuleNotFoundError as e:
            if e.name != module:  # the module exists but one of its own imports is missing
                raise
            parts.pop()


def load_vendored(bundle_root: str, modules: Sequence[str] = ()) -> ModuleType:
    """Import ``common`` with ``modules`` and check that it is the copy inside ``bundle_root``.

    Args:
        bundle_root: the unpacked bundle folder, already first on ``sys.path``.
        modules: dotted names the configs use (``common.networks.fagan.FAGANGenerator``); the module part of
            each is imported so that attribute access through the ``common`` id finds it.

    Raises:
        UserError: another ``common`` was imported earlier in this process (e.g. the repository's).
    """
    common = importlib.import_module("common")
    root = Path(bundle_root).resolve()
    here = Path(common.__file__).resolve()
    if root not in here.parents:
        raise UserError(
            f"bundle '{root}' carries its own 'common' package, but this process already imported '{here.parent}'; "
            "run the archive in a fresh process"
        )
    for name in modules:
        _import_longest(name)
    return common


def _entries(bundle_root: Path) -> list[dict[str, Any]]:
    listing = bundle_root / LARGE_FILES
    if not listing.is_file():
        return []
    text = listing.read_text()
    try:  # the archive writes JSON, which is also YAML
        return list(json.loads(text).get("large_files") or [])
    except json.JSONDecodeError:
        import yaml  # a hand-written YAML listing (Model Zoo style)

        return list((yaml.safe_load(text) or {}).get("large_files") or [])


def checked_weights(path: str, bundle_root: str) -> str:
    """``path``, after checking its sha256 against the bundle's ``large_files.yml``.

    Args:
        path: the weights file the config loads.
        bundle_root: the bundle folder holding ``large_files.yml``.

    Raises:
        UserError: the file is listed with a sha256 and its content differs.
    """
    root = Path(bundle_root).resolve()
    target = Path(path).resolve()
    for entry in _entries(root):
        if (root / entry.get("path", "")).resolve() != target or not entry.get("hash_val"):
            continue
        if str(entry.get("hash_type", "sha256")).lower() != "sha256":
            continue
        actual = sha256_of(target) if target.is_file() else "missing"
        if actual != entry["hash_val"]:
            raise UserError(
                f"weights file '{target}' does not match {LARGE_FILES} (sha256 {actual}, expected "
                f"{entry['hash_val']}); it was changed after the export: export again or restore the archive's file"
            )
    return path


def _rewrite(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v) for k, v in value.items()}
        target = out.get("_target_")
        if isinstance(target, str) and target.startswith("common."):
            out["_target_"] = "$@" + target
        return out
    if isinstance(value, list):
        return [_rewrite(v) for v in value]
    if isinstance(value, str) and value.startswith("$"):
        return _COMMON_NAME.sub("@common.", value)
    return value


def common_modules(config: Any) -> set[str]:
    """The dotted ``common...`` names a config uses: its imports, ``_target_`` paths and expressions."""
    if isinstance(config, dict):
        return set().union(*(common_modules(v) for v in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(common_modules(v) for v in config)) if config else set()
    if isinstance(config, str) and config.startswith("$"):
        return set(_COMMON_PATH.findall(config))
    if isinstance(config, str) and config.startswith("common."):
        return {config}
    return set()


def vendor_config(config: dict[str, Any], modules: Sequence[str] | None = None) -> dict[str, Any]:
    """A copy of a bundle config (full or override file) that reaches ``common`` through the ``common`` id.

    Args:
        config: the config as read from JSON.
        modules: the ``common`` modules to import when the package loads (default: ``common_modules(config)``);
            pass the union over every config of the bundle so that an override file's targets resolve.

    Full configs (those with ``imports``) also get the stdlib imports, ``bundle_root`` = ``BUNDLE_ROOT_EXPR``,
    the ``vendor_loader``, ``vendored_modules`` and ``common`` ids and the weights check on ``ckpt_path``.
    """
    out = _rewrite(copy.deepcopy(config))
    if "imports" not in config:
        return out
    kept = [s for s in config["imports"] if not (isinstance(s, str) and _COMMON_IMPORT.match(s))]
    out["imports"] = _BOOT_IMPORTS + [s for s in kept if s not in _BOOT_IMPORTS]
    rest = {k: v for k, v in out.items() if k not in ("imports", "bundle_root")}
    boot = {
        "bundle_root": BUNDLE_ROOT_EXPR,
        "vendor_loader": LOADER_EXPR,
        "vendored_modules": sorted(common_modules(config) if modules is None else set(modules)),
        "common": COMMON_EXPR,
    }
    out = {"imports": out["imports"], **boot, **rest}
    ckpt = out.get("ckpt_path")
    if isinstance(ckpt, str):
        inner = ckpt[1:] if ckpt.startswith("$") else repr(ckpt)
        out["ckpt_path"] = f"$@common.utils.vendoring.checked_weights({inner}, @bundle_root)"
    return out
