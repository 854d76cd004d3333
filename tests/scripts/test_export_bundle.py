"""scripts/export_bundle.py: self-contained archives, round trip through ``monai.bundle download`` / ``run``.

Every bundle in ``bundles/`` (the folder is looped over): demo-width weights (seeded random init), exported,
downloaded with ``monai.bundle.download(url="file://...")`` and run with ``python -S -m monai.bundle run`` from an
unrelated folder, in an environment where only site-packages is importable (``-S`` skips the editable install's
``.pth``, so the repository's ``common`` is not visible); the written image equals the repository's own run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from script_loader import load_script

from common.utils.errors import UserError
from common.utils.vendoring import checked_weights

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))
eb = load_script("export_bundle")


def isolated_env() -> dict[str, str]:
    """Environment of a ``python -S`` that sees site-packages only (no repository, no editable ``common``)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
    }


def tiny_overrides(name: str, root: Path) -> list[str]:
    """``configs/demo.json`` and the contract harness's tiny widths of bundle ``name`` (when it has a spec)."""
    if "contract" not in sys.modules:  # tests/bundles/contract.py, as tests/bundles/conftest.py imports it
        spec = importlib.util.spec_from_file_location("contract", REPO / "tests" / "bundles" / "contract.py")
        sys.modules["contract"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["contract"])
    tiny = {s.name: s.tiny for s in sys.modules["contract"].BUNDLES}.get(name)
    if tiny is None:
        return [eb.DEMO]
    (root / "tiny.json").write_text(json.dumps(tiny))
    return [eb.DEMO, str(root / "tiny.json")]


def demo_weights(name: str, path: Path, overrides: list[str]) -> tuple[Path, torch.nn.Module]:
    """A seeded random generator with the widths of ``overrides``, saved at ``path`` (``{"model": sd}``)."""
    torch.manual_seed(0)
    net = eb._parser(REPO / "bundles" / name, overrides).get_parsed_content("network_def").eval()
    torch.save({"model": net.state_dict()}, path)
    return path, net


@pytest.fixture(scope="module")
def one_case(tiny_phantom, tmp_path_factory) -> Path:
    """A data folder with the first test case of the tiny phantom, axial slices 8..15 only (32 x 40 x 8)."""
    root = Path(tiny_phantom)
    case = json.loads((root / "datalist.json").read_text())["test"][0]
    folder = tmp_path_factory.mktemp("one_case")
    entry = {"subject": case["subject"]}
    for key, rel in case.items():
        if key == "subject":
            continue
        image = nib.load(root / rel)
        entry[key] = str(folder / f"{key}.nii.gz")
        nib.save(image.slicer[:, :, 8:16], entry[key])  # slicer shifts the affine's origin to the crop
    (folder / "datalist.json").write_text(json.dumps({"test": [entry]}))
    return folder


def _images(folder: Path) -> dict[str, nib.Nifti1Image]:
    return {p.relative_to(folder).as_posix(): nib.load(p) for p in sorted(folder.rglob("*.nii.gz"))}


def _repo_run(name: str, overrides: list[str], weights: Path, data: Path, out: Path) -> None:
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / name / "configs"
    wf = ConfigWorkflow(
        config_file=[str(configs / "inference.json")] + [str(REPO / "bundles" / name / o) for o in overrides],
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        workflow_type="inference",
        ckpt_path=str(weights),
        dataset_dir=str(data),
        output_dir=str(out),
    )
    wf.initialize()
    wf.run()
    wf.finalize()


@pytest.mark.parametrize("name", BUNDLES)
def test_round_trip(name, one_case, tmp_path):
    from monai.bundle import download
    from monai.bundle.scripts import _get_fake_input_shape

    overrides = tiny_overrides(name, tmp_path)
    weights, net = demo_weights(name, tmp_path / "weights.pt", overrides)
    archive = eb.export_bundle(name, weights, tmp_path / "dist", overrides, check=False)
    again = eb.export_bundle(name, weights, tmp_path / "dist2", overrides, check=False)
    assert archive.name == again.name and archive.read_bytes() == again.read_bytes()  # byte-identical

    _repo_run(name, overrides, weights, one_case, tmp_path / "repo_out")
    download(url=f"file://{archive}", bundle_dir=str(tmp_path / "D"), name=name)
    bundle = tmp_path / "D" / name
    exported = json.loads((bundle / "configs" / "inference.json").read_text())
    assert "checked_weights(" in exported["ckpt_path"] and not any("common" in s for s in exported["imports"])
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["exported_weights"]["widths"] == ("demo" if overrides == [eb.DEMO] else "override")
    assert meta["exported_weights"]["baked_overrides"] == overrides and "scipy" in meta["required_packages_version"]

    marker = tmp_path / "common_file.txt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [
        sys.executable, "-S", "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "inference.json"),
        "--dataset_dir", str(one_case),
        "--output_dir", str(tmp_path / "archive_out"),
        "--finalize", f"$open({str(marker)!r}, 'w').write(@common.__file__)",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=elsewhere, env=isolated_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert bundle.resolve() in Path(marker.read_text()).resolve().parents  # the archive's own common

    ours, theirs = _images(tmp_path / "archive_out"), _images(tmp_path / "repo_out")
    assert ours.keys() == theirs.keys() and len(ours) == 1
    for key, image in ours.items():
        np.testing.assert_allclose(image.affine, theirs[key].affine, atol=1e-6)
        diff = np.abs(np.asarray(image.dataobj, np.float64) - np.asarray(theirs[key].dataobj, np.float64)).max()
        assert image.shape == theirs[key].shape and diff < 1e-5, (key, diff)

    scripted = torch.jit.load(str(bundle / "models" / "model.ts"), map_location="cpu")
    x = torch.rand(*_get_fake_input_shape(eb._parser(REPO / "bundles" / name, overrides)))
    with torch.no_grad():
        assert float((scripted(x) - net(x)).abs().max()) < 1e-5

    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state.keys() == net.state_dict().keys()
    assert checked_weights(str(bundle / "models" / "model.pt"), str(bundle)) == str(bundle / "models" / "model.pt")
    with open(bundle / "models" / "model.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="model.pt' does not match large_files.yml"):
        checked_weights(str(bundle / "models" / "model.pt"), str(bundle))


def test_refuses_without_weights(tmp_path):
    with pytest.raises(UserError, match="not found"):
        eb.export_bundle(BUNDLES[0], tmp_path / "none.pt", tmp_path / "dist", check=False)
    assert eb.main(["--bundle", BUNDLES[0], "--weights", str(tmp_path / "none.pt"), "--output", str(tmp_path)]) == 2
    assert not list(tmp_path.glob("*.zip"))


def test_detects_demo_widths(tmp_path):
    weights, _ = demo_weights(BUNDLES[0], tmp_path / "weights.pt", [eb.DEMO])
    chosen, net = eb.match_override(REPO / "bundles" / BUNDLES[0], eb.load_state_dict(weights), None)
    assert chosen == [eb.DEMO] and not net.training


def test_refuses_weights_of_no_network(tmp_path):
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match="fit no network"):
        eb.export_bundle(BUNDLES[0], tmp_path / "odd.pt", tmp_path / "dist", check=False)


def test_refuses_when_check_bundles_fails(tmp_path, monkeypatch):
    weights, _ = demo_weights(BUNDLES[0], tmp_path / "weights.pt", [eb.DEMO])

    class FailingChecks:
        @staticmethod
        def check_bundle(bundle, overrides=()):
            return {"files": (True, "ok"), "verify_metadata": (False, "ValidationError: 'task' is required")}

    monkeypatch.setattr(eb, "_load_script", lambda name: FailingChecks)
    with pytest.raises(UserError, match="check_bundles.py fails .*verify_metadata: ValidationError"):
        eb.export_bundle(BUNDLES[0], weights, tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_bake_override_takes_used_ids_and_their_references():
    inference = {"channels": 64, "network_def": {"_target_": "Net", "channels": "@channels"}, "run": []}
    override = {"channels": 8, "lr": 0.1, "network_def": {"_target_": "Wrap", "k": "@wrap_k"}, "wrap_k": 3}
    baked = eb.bake_override(inference, override)
    assert baked["channels"] == 8 and baked["network_def"]["_target_"] == "Wrap" and baked["wrap_k"] == 3
    assert "lr" not in baked and baked["run"] == []


def test_code_packages_lists_third_party_imports():
    found = eb.code_packages(REPO / "common")
    assert {"scipy", "pillow", "pytorch-ignite", "nibabel"} <= found.keys()
    assert not {"torch", "monai", "numpy", "common", "os"} & found.keys()


def onnx_arguments(spatial_dims: int) -> dict:
    """The ``converter_kwargs`` of ``monai.bundle onnx_export``: named input/output, dynamic batch and space.

    ``dynamo=False``: torch 2.13 defaults to the dynamo exporter, which needs onnxscript (not installed).
    """
    axes = {0: "batch", **{2 + i: f"s{i}" for i in range(spatial_dims)}}
    out_axes = {0: "batch", **{2 + i: f"o{i}" for i in range(spatial_dims)}}
    names = {"input_names": ["image"], "output_names": ["pred"]}
    return {**names, "dynamic_axes": {"image": axes, "pred": out_axes}, "dynamo": False}


@pytest.mark.parametrize("name", BUNDLES)
def test_onnx_export_with_dynamic_spatial_axes(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from monai.bundle import onnx_export
    from monai.bundle.scripts import _get_fake_input_shape

    overrides = tiny_overrides(name, tmp_path)
    weights, net = demo_weights(name, tmp_path / "weights.pt", overrides)
    torch.save(net.state_dict(), weights)  # onnx_export (like ckpt_export) loads a bare state dict
    bundle = REPO / "bundles" / name
    shape = list(_get_fake_input_shape(eb._parser(bundle, overrides)))
    onnx_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.onnx"),
        ckpt_file=str(weights),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=[str(bundle / "configs" / "inference.json")] + [str(bundle / o) for o in overrides],
        bundle_root=str(tmp_path),
        use_trace=True,
        input_shape=shape,
        converter_kwargs=onnx_arguments(len(shape) - 2),
    )
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for size in (shape, shape[:2] + [2 * s for s in shape[2:]]):  # the traced size and a larger one
        x = torch.rand(*size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            eager = net(x).numpy()
        (onnx_out,) = session.run(["pred"], {"image": x.numpy()})
        assert onnx_out.shape == eager.shape and np.abs(onnx_out - eager).max() < 1e-4, (size, name)
