"""Export a bundle with trained weights as one self-contained archive: ``dist/<name>_v<version>.zip``.

Usage:
    python scripts/export_bundle.py --bundle NAME --weights PATH --output dist/ [--demo | --override configs/X.json]

The archive's one top folder is the bundle: its configs rewritten to reach a vendored copy of ``common`` inside
it (``common.utils.vendoring``), ``models/model.pt`` (the generator's state dict itself, as the Model Zoo CI's
``ckpt_export`` loads it without ``key_in_ckpt``; ``CheckpointLoader(load_dict={"model": net})`` of
inference.json loads it as well), ``models/model.ts``
(TorchScript, checked against eager), ``large_files.yml`` with the sha256 of both, an ``inference.json`` whose
network matches the weights (the override's widths baked in when the weights need them: ``--demo`` /
``--override``, or detected by loading the state dict strictly into each candidate), and a metadata.json listing
every package the vendored code imports and saying which widths the weights have (``exported_weights``).
Refuses (one message) without weights, on weights that fit no candidate network, or when
``scripts/check_bundles.py`` fails on the bundle. Same weights -> byte-identical zip.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import io
import json
import re
import sys
import zipfile
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from common.utils.errors import UserError  # noqa: E402
from common.utils.vendoring import LARGE_FILES, common_modules, vendor_config  # noqa: E402

__all__ = ["bake_override", "code_packages", "export_bundle", "load_state_dict", "main", "match_override"]

DEMO = "configs/demo.json"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SKIP_DIRS = {"models", "eval", "__pycache__", "runs", "mlruns"}
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "ignite": "pytorch-ignite", "yaml": "pyyaml", "skimage": "scikit-image"}
OWN_FIELDS = {"torch", "monai", "numpy"}  # metadata has pytorch_version / monai_version / numpy_version
ZOO_CI_PACKAGES = ("pyyaml",)  # read large_files.yml in the Model Zoo CI; not imported by the bundle's code


def _load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_medsynth_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def load_state_dict(weights: Path) -> dict[str, Any]:
    """The generator state dict in ``weights``: a bare state dict or a checkpoint holding it as ``model``."""
    import torch

    if not weights.is_file():
        raise UserError(f"weights file '{weights}' not found: pass --weights with a trained models/model.pt")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"weights file '{weights}' cannot be read as a PyTorch checkpoint ({e})") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file '{weights}' holds no state dict (expected {{'model': state_dict}})")
    return state


def _parser(bundle: Path, overrides: Sequence[str]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "inference.json")] + [str(bundle / o) for o in overrides])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    return parser


def match_override(bundle: Path, state: dict[str, Any], overrides: Sequence[str] | None) -> tuple[list[str], Any]:
    """The override list whose network accepts ``state`` strictly, and that network (weights loaded, eval mode).

    Args:
        bundle: the bundle folder.
        state: the generator state dict.
        overrides: the override configs to use (relative to the bundle); ``None`` tries none, then demo.json.
    """
    candidates = [list(overrides)] if overrides is not None else [[], [DEMO]]
    tried = []
    for candidate in candidates:
        if any(not (bundle / o).is_file() for o in candidate):
            raise UserError(f"override config '{candidate}' not found in {bundle}")
        net = _parser(bundle, candidate).get_parsed_content("network_def")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            reason = " ".join(line.strip() for line in str(e).splitlines()[1:2])
            tried.append(f"{['configs/inference.json'] + candidate}: {reason[:300]}")
            continue
        return candidate, net.eval()
    raise UserError(f"the weights fit no network of bundle '{bundle.name}': " + "; ".join(tried))


def _refs(value: Any) -> set[str]:
    return {r.split("#")[0] for r in re.findall(r"@([\w#]+)", json.dumps(value))}


def bake_override(inference: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``inference`` with the ids of ``override`` it uses: those it has, and those they reference in turn."""
    out = dict(inference)
    wanted = [k for k in override if k.split("#")[0] in inference]
    done: set[str] = set()
    while wanted:
        key = wanted.pop()
        if key in done:
            continue
        done.add(key)
        if "#" in key:
            node = out
            *path, last = key.split("#")
            for part in path:
                node = node[int(part) if isinstance(node, list) else part]
            node[int(last) if isinstance(node, list) else last] = override[key]
        else:
            out[key] = override[key]
        wanted += [r for r in _refs(override[key]) if r in override and r not in out]
    return out


def code_packages(package: Path) -> dict[str, str]:
    """``{distribution: version}`` of the third-party packages imported anywhere in ``package``."""
    pins = _load_script("check_bundles").pinned_versions()
    names = set()
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    names -= set(sys.stdlib_module_names) | {package.name} | OWN_FIELDS
    found = {}
    for name in sorted(names):
        dist = DISTRIBUTIONS.get(name, name).lower()
        found[dist] = pins.get(dist) or importlib_metadata.version(dist)
    return found


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=4) + "\n").encode()


def _metadata(bundle: Path, overrides: list[str], sha: dict[str, str]) -> dict[str, Any]:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    # MONAI 1.6.1 renames optional_packages_version to required_packages_version when it reads metadata
    # (DEPRECATED_ID_MAPPING), replacing the required list: the archive keeps the union under the new name only
    required = {**meta.pop("optional_packages_version", {}), **meta.get("required_packages_version", {})}
    for dist, version in code_packages(REPO / "common").items():
        required.setdefault(dist, version)
    for dist in ZOO_CI_PACKAGES:
        required.setdefault(dist, importlib_metadata.version(dist))
    meta["required_packages_version"] = dict(sorted(required.items()))
    meta["exported_weights"] = {
        "widths": "demo" if overrides == [DEMO] else ("paper" if not overrides else "override"),
        "baked_overrides": overrides,
        "sha256": sha,
        "vendored": "common (imported through the 'common' config id; see common/utils/vendoring.py)",
    }
    return meta


def _torchscript(net: Any, parser: Any) -> bytes:
    import torch

    from monai.bundle.scripts import _get_fake_input_shape

    scripted = torch.jit.script(net)
    x = torch.rand(*_get_fake_input_shape(parser), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((net(x) - scripted(x)).abs().max())
    if diff > 1e-5:
        raise UserError(f"TorchScript of '{type(net).__name__}' differs from eager by {diff:.3g}")
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def _state_bytes(state: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


def _bundle_files(bundle: Path, overrides: list[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    configs = sorted((bundle / "configs").rglob("*.json"))
    modules = sorted(set().union(*(common_modules(json.loads(p.read_text())) for p in configs)))
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle)
        if not path.is_file() or SKIP_DIRS & set(rel.parts[:-1]) or path.suffix in (".pyc", ".ts"):
            continue
        if rel.as_posix() in ("configs/metadata.json", LARGE_FILES):
            continue
        if path.suffix == ".json" and rel.parts[0] == "configs":
            config = json.loads(path.read_text())
            if rel.as_posix() == "configs/inference.json":
                for override in overrides:
                    config = bake_override(config, json.loads((bundle / override).read_text()))
            files[rel.as_posix()] = _json(vendor_config(config, modules))
        else:
            files[rel.as_posix()] = path.read_bytes()
    for path in sorted((REPO / "common").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files[path.relative_to(REPO).as_posix()] = path.read_bytes()
    return files


def _write_zip(target: Path, top: str, files: dict[str, bytes]) -> None:
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{top}/{name}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, files[name])
    tmp.replace(target)


def export_bundle(
    name: str, weights: str | Path, output: str | Path, overrides: Sequence[str] | None = None, check: bool = True
) -> Path:
    """Write ``<output>/<name>_v<version>.zip`` and return its path.

    Args:
        name: bundle folder name in ``bundles/``.
        weights: the trained generator (state dict, or a checkpoint with it as ``model``).
        output: folder for the archive (created).
        overrides: override configs whose widths the weights have (``None``: detect; ``[]``: the paper's).
        check: run ``scripts/check_bundles.py`` on the bundle first (refuse when it fails).
    """
    bundle = REPO / "bundles" / name
    if not (bundle / "configs" / "metadata.json").is_file():
        known = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))
        raise UserError(f"no bundle '{name}' in {REPO / 'bundles'} (known: {', '.join(known)})")
    state = load_state_dict(Path(weights))
    chosen, net = match_override(bundle, state, overrides)
    if check:
        results = _load_script("check_bundles").check_bundle(bundle, overrides=chosen)
        failed = [f"{k}: {detail}" for k, (ok, detail) in results.items() if not ok]
        if failed:
            raise UserError(f"scripts/check_bundles.py fails on bundle '{name}', not exporting: " + "; ".join(failed))
    files = _bundle_files(bundle, chosen)
    files["models/model.pt"] = _state_bytes(state)
    files["models/model.ts"] = _torchscript(net, _parser(bundle, chosen))
    sha = {p: _sha(files[p]) for p in ("models/model.pt", "models/model.ts")}
    files[LARGE_FILES] = _json(
        {"large_files": [{"path": p, "url": "", "hash_val": h, "hash_type": "sha256"} for p, h in sha.items()]}
    )
    meta = _metadata(bundle, chosen, sha)
    files["configs/metadata.json"] = _json(meta)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}_v{meta['version']}.zip"
    _write_zip(target, name, files)
    return target


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, help="bundle folder name in bundles/")
    ap.add_argument("--weights", required=True, help="trained generator: models/model.pt or a checkpoint")
    ap.add_argument("--output", default=str(REPO / "dist"), help="folder for the archive (default: dist/)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--demo", action="store_true", help=f"the weights have the widths of {DEMO}")
    group.add_argument("--override", action="append", help="override config(s) the weights were trained with")
    args = ap.parse_args(argv)
    overrides = [DEMO] if args.demo else args.override
    try:
        target = export_bundle(args.bundle, args.weights, args.output, overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
