"""The Model Zoo's ``ci/verify_bundle.py`` checks (``min`` and ``full``), offline, on bundle folders or archives.

Usage:
    python scripts/zoo_verify.py [-m min|full] [--schema PATH] [--published model_info.json] BUNDLE_OR_ZIP ...

A reimplementation (read from Project-MONAI/model-zoo ``ci/verify_bundle.py`` and ``ci/utils.py``, not copied)
of what the Zoo CI does per bundle, in its order:

``min``: put the bundle first on ``sys.path``; fetch the ``large_files`` entries (here: offline, so a listed file
must already be present and match its ``hash_val``; one that is absent is downloaded only from a ``file://``
url); the necessary files ``configs/metadata.json`` and ``LICENSE``; the preferred files ``models/model.pt`` and
``configs/inference.*``; ``version`` present and in ``changelog`` (and, given ``--published``, not already
published); ``verify_metadata`` against the schema (the offline copy; the CI downloads it).

``full`` adds: the workflow properties per supported app (the CI skips them when ``supported_apps`` is empty;
here the required ids of MONAI's own ``InferProperties`` and ``MetaProperties`` must exist in that case, which
is stricter; their values are not resolved, since that needs the data set); ``verify_net_in_out`` of
``network_def`` with ``configs/inference.*``; ``ckpt_export`` of ``models/model.pt`` to
``models/verify_model.ts`` and loading the provided ``models/model.ts``.

Archives are unpacked to a temporary folder first. The CI runs one bundle per process; here several bundles
run in one process, so the ``common`` package a bundle vendored is unloaded before the next bundle.
Exit status 1 when any bundle fails; one line per check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "monai" / "meta_schema_20240725.json"
NECESSARY = ("configs/metadata.json", "LICENSE")
PREFERRED = ("models/model.pt",)
CONFIG_SUFFIXES = ("json", "yaml", "yml")

__all__ = ["verify", "verify_path", "main"]


def _find(folder: Path, stem: str) -> Path | None:
    """``folder/stem.<json|yaml|yml>`` (the last suffix found, as the CI picks it)."""
    found = None
    for suffix in CONFIG_SUFFIXES:
        if (folder / f"{stem}.{suffix}").is_file():
            found = folder / f"{stem}.{suffix}"
    return found


def _large_files(bundle: Path) -> str:
    from monai.apps.utils import check_hash
    from monai.bundle import ConfigParser

    listing = _find(bundle, "large_files")
    if listing is None:
        return "no large_files listing"
    entries = ConfigParser.load_config_file(str(listing)).get("large_files") or []
    for entry in entries:
        path = bundle / entry["path"]
        url = entry.get("url", "")
        if not path.is_file():
            if not url.startswith("file://"):
                raise AssertionError(f"large file '{entry['path']}' is absent and cannot be fetched offline ({url!r})")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(url[len("file://") :], path)
        if entry.get("hash_val") and not check_hash(str(path), entry["hash_val"], entry.get("hash_type", "md5")):
            raise AssertionError(f"large file '{entry['path']}' does not match its {entry.get('hash_type')} hash_val")
    return f"{len(entries)} large file(s) present with matching hashes"


def _directory(bundle: Path) -> str:
    missing = [f for f in NECESSARY + PREFERRED if not (bundle / f).is_file()]
    if _find(bundle / "configs", "inference") is None:
        missing.append("configs/inference.*")
    if missing:
        raise AssertionError(f"missing files: {', '.join(missing)}")
    return "necessary and preferred files present"


def _version(bundle: Path, published: Path | None) -> str:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog"):
        if key not in meta:
            raise AssertionError(f"'{key}' is missing in configs/metadata.json")
    if meta["version"] not in meta["changelog"]:
        raise AssertionError(f"version {meta['version']} is not in the changelog")
    if published is not None and f"{bundle.name}_v{meta['version']}" in json.loads(published.read_text()):
        raise AssertionError(f"version {meta['version']} of {bundle.name} is already published")
    return f"version {meta['version']} in the changelog"


def _metadata(bundle: Path, schema: Path) -> str:
    from monai.bundle import verify_metadata

    local = bundle / "eval" / "schema.json"  # where the CI downloads the schema to
    local.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(schema, local)
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(local))
    return f"valid against {schema.name}"


def _properties(bundle: Path) -> str:
    from monai.bundle import ConfigParser
    from monai.bundle.properties import InferProperties, MetaProperties
    from monai.utils import BundleProperty, BundlePropertyConfig

    parser = ConfigParser()
    parser.read_config(str(_find(bundle / "configs", "inference")))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    required = {**MetaProperties, **InferProperties}
    missing = [
        name
        for name, prop in required.items()
        if prop[BundleProperty.REQUIRED] and prop[BundlePropertyConfig.ID] not in parser
    ]
    if missing:
        raise AssertionError(f"missing required inference properties: {missing}")
    return f"the {len(required)} MONAI inference/meta properties that are required are present"


def _net_in_out(bundle: Path) -> str:
    from monai.bundle import verify_net_in_out

    config = _find(bundle / "configs", "inference")
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(config),
        bundle_root=str(bundle),
    )
    return "network_def input/output as in the metadata"


def _torchscript(bundle: Path) -> str:
    import torch

    from monai.bundle import ckpt_export

    config = _find(bundle / "configs", "inference")
    ckpt_export(
        net_id="network_def",
        filepath=str(bundle / "models" / "verify_model.ts"),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(config),
        bundle_root=str(bundle),
    )
    provided = bundle / "models" / "model.ts"
    if provided.is_file():
        torch.jit.load(str(provided), map_location="cpu")
    return "ckpt_export works" + (" and models/model.ts loads" if provided.is_file() else "")


def _pop_common() -> dict[str, object]:
    """Remove every ``common`` module from ``sys.modules``; return them."""
    return {
        name: sys.modules.pop(name) for name in [m for m in sys.modules if m == "common" or m.startswith("common.")]
    }


def _unload_common(bundle: Path, previous: dict[str, object]) -> None:
    """Drop the bundle's vendored ``common`` and put back the modules imported before (class identities kept)."""
    _pop_common()
    sys.modules.update(previous)
    while str(bundle) in sys.path:
        sys.path.remove(str(bundle))


def verify(
    bundle: Path, mode: str = "full", schema: Path = DEFAULT_SCHEMA, published: Path | None = None
) -> dict[str, tuple[bool, str]]:
    """Run the Zoo CI checks of ``mode`` on an unpacked bundle folder; ``{check: (passed, detail)}``.

    Checks stop at the first failure, as in the CI (a later check assumes the earlier ones passed).
    """
    if mode not in ("min", "full"):
        raise ValueError(f"mode must be 'min' or 'full', got {mode!r}")
    bundle = bundle.resolve()
    checks: list[tuple[str, Callable[[], str]]] = [
        ("large_files", lambda: _large_files(bundle)),
        ("directory", lambda: _directory(bundle)),
        ("version", lambda: _version(bundle, published)),
        ("metadata", lambda: _metadata(bundle, schema)),
    ]
    if mode == "full":
        checks += [
            ("properties", lambda: _properties(bundle)),
            ("net_in_out", lambda: _net_in_out(bundle)),
            ("torchscript", lambda: _torchscript(bundle)),
        ]
    results: dict[str, tuple[bool, str]] = {}
    previous = _pop_common()  # a `common` imported before (e.g. the repository's) must not serve the archive
    sys.path.insert(0, str(bundle))
    try:
        for name, check in checks:
            try:
                results[name] = (True, check())
            except Exception as e:  # reported as the CI would fail on it
                detail = str(e).strip().splitlines()[-1] if str(e).strip() else ""
                results[name] = (False, f"{type(e).__name__}: {detail}")
                break
    finally:
        _unload_common(bundle, previous)
    return results


def verify_path(
    path: Path, mode: str = "full", schema: Path = DEFAULT_SCHEMA, published: Path | None = None
) -> dict[str, tuple[bool, str]]:
    """``verify`` a bundle folder, or an archive (one top folder) unpacked to a temporary folder."""
    if path.is_dir():
        return verify(path, mode, schema, published)
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as zf:
        tops = {n.split("/")[0] for n in zf.namelist()}
        if len(tops) != 1:
            return {"archive": (False, f"{path.name} has {len(tops)} top folders, expected one")}
        zf.extractall(tmp)
        return verify(Path(tmp) / tops.pop(), mode, schema, published)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="bundle folders or exported .zip archives")
    ap.add_argument("-m", "--mode", default="full", choices=("min", "full"))
    ap.add_argument("--schema", default=str(DEFAULT_SCHEMA), help="offline copy of the Model Zoo metadata schema")
    ap.add_argument("--published", default=None, help="model_info.json of published versions (optional)")
    args = ap.parse_args(argv)
    failed = 0
    for raw in args.paths:
        published = Path(args.published) if args.published else None
        for check, (ok, detail) in verify_path(Path(raw), args.mode, Path(args.schema), published).items():
            failed += not ok
            print(f"{Path(raw).name:40s} {args.mode:4s} {check:12s} {'PASS' if ok else 'FAIL'}  {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
