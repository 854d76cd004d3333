"""The MONAI Label infer task and app (``serving/monailabel``) on every bundle, in process.

Each bundle gets random tiny weights; its own ``inference.json`` run writes the reference outputs of the tiny
phantom's validation case; the served result must have the input's shape and affine (the x4 grid for
super-resolution) and equal the reference to < 1e-5. Skipped where monailabel is not installed (the project's
``.venv`` and CI): it lives in a separate venv, see docs/monailabel.md.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip(
    "monailabel",
    reason="monailabel is an optional extra in its own venv (requirements-monailabel.txt, docs/monailabel.md)",
)

from lib.bundle import SynthesisBundle  # noqa: E402
from lib.infers import SynthesisInferTask  # noqa: E402
from serving_support import APP_DIR, BUNDLE_NAMES, REPO, reference_run, spec_for, test_cases  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _load(path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _assert_served(served: str, reference: Path, source: str, name: str) -> None:
    out, out_affine = _load(served)
    ref, ref_affine = _load(reference)
    src = nib.load(source)
    shape, affine = spec_for(name).geometry(src.shape, src.affine)
    assert out.dtype == np.float32
    assert out.shape == tuple(shape) == ref.shape
    np.testing.assert_allclose(out_affine, affine, atol=1e-5)
    np.testing.assert_allclose(out_affine, ref_affine, atol=1e-6)
    assert float(np.abs(out.astype(np.float64) - ref).max()) < 1e-5
    assert float(np.std(out)) > 0.0  # a real synthesis, not a constant


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_infer_task_equals_bundle_inference(name, tiny_phantom, tmp_path):
    references = reference_run(name, tiny_phantom, tmp_path)
    spec = spec_for(name)
    bundle = SynthesisBundle(
        REPO / "bundles" / name, spec.infer_configs, overrides={**spec.tiny, "ckpt_dir": str(tmp_path / "models")}
    )
    task = SynthesisInferTask(bundle)
    info = task.info()
    assert info["type"] == "others" and info["labels"] == [] and info["output"] == "image"
    assert info["dimension"] == 3  # every bundle serves volumes, the 2D ones slice by slice
    assert task.is_valid()
    for case in test_cases(tiny_phantom):
        source = case[bundle.primary_key]
        served, result = task({"image": source, "device": "cpu"})  # other modalities: the files beside it
        try:
            _assert_served(served, references[case["subject"]], source, name)
            assert result["type"] == "image" and result["shape"] == list(nib.load(served).shape)
        finally:
            Path(served).unlink()


def test_infer_task_refuses_missing_weights(tmp_path):
    bundle = SynthesisBundle(REPO / "bundles" / "hrfcn_contrast_t1", overrides={"ckpt_dir": str(tmp_path)})
    assert not SynthesisInferTask(bundle).is_valid()


def test_app_maps_modalities_from_datastore_ids(tiny_phantom, tmp_path, monkeypatch):
    """The app from main.py on a flat datastore (``<case>_<key>.nii.gz``): HR-FCN's t2, adc and brain_mask are
    found from the request's t1 id; a modality named by id in the request is used instead."""
    from monailabel.config import settings
    from monailabel.interfaces.utils.app import app_instance, clear_cache

    monkeypatch.setattr(settings, "MONAI_LABEL_DATASTORE_AUTO_RELOAD", False)
    monkeypatch.setattr(settings, "MONAI_LABEL_SESSIONS", False)
    name = "hrfcn_contrast_t1"
    references = reference_run(name, tiny_phantom, tmp_path / "reference")
    spec = spec_for(name)
    case = test_cases(tiny_phantom)[0]
    studies = tmp_path / "studies"
    studies.mkdir()
    for key in ("t1", "t2", "adc", "brain_mask"):
        shutil.copy(case[key], studies / f"{case['subject']}_{key}.nii.gz")
    shutil.copy(case["flair"], studies / "other_t2.nii.gz")  # another image as t2, used only when named
    overrides = tmp_path / "tiny.json"
    overrides.write_text(json.dumps({**spec.tiny, "ckpt_dir": str(tmp_path / "reference" / "models")}))
    conf = {  # the per-bundle configs win over the global ones
        "models": name,
        "configs": "no_such_config.json",
        f"configs_{name}": f"inference.json,{overrides}",
        "bundles": str(REPO / "bundles"),
    }
    clear_cache()
    app = app_instance(str(APP_DIR), str(studies), conf)
    try:
        assert sorted(app.info()["models"]) == [name]
        result = app.infer({"model": name, "image": f"{case['subject']}_t1", "device": "cpu"})
        _assert_served(result["file"], references[case["subject"]], case["t1"], name)
        assert result["label"] == result["file"]  # not saved as a datastore label by default
        other = app.infer({"model": name, "image": f"{case['subject']}_t1", "t2": "other_t2", "device": "cpu"})
        assert not np.allclose(_load(other["file"])[0], _load(result["file"])[0])  # the named image was used
    finally:
        clear_cache()


SERVE_ARCHIVE = """
import json, sys
repo, app_dir, bundle, image, out = sys.argv[1:6]
sys.path[:] = [p for p in sys.path if p not in ("", repo)] + [app_dir]  # no repository `common`
import torch
torch.set_num_threads(1)
from lib.bundle import SynthesisBundle
from lib.infers import SynthesisInferTask
task = SynthesisInferTask(SynthesisBundle(bundle))
import common
served, _ = task({"image": image, "device": "cpu"})
import shutil
shutil.move(served, out)
print(json.dumps({"common": common.__file__, "dimension": task.dimension}))
"""


@pytest.mark.skipif(not (REPO / "scripts" / "export_bundle.py").is_file(), reason="scripts/export_bundle.py absent")
def test_exported_archive_is_served_with_its_vendored_common(tiny_phantom, tmp_path):
    """An archive of ``scripts/export_bundle.py`` (tiny weights, widths baked in) served from its unpacked folder,
    in a process that cannot import the repository's ``common``: same output as the repository's run."""
    import importlib.util
    import subprocess
    import sys
    import zipfile

    name = "dual_discriminator_synthesis"
    references = reference_run(name, tiny_phantom, tmp_path / "reference")
    widths = tmp_path / "tiny.json"
    widths.write_text(json.dumps(spec_for(name).tiny))
    module_spec = importlib.util.spec_from_file_location("_export_bundle", REPO / "scripts" / "export_bundle.py")
    export = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(export)
    archive = export.export_bundle(
        name, tmp_path / "reference" / "models" / "model.pt", tmp_path / "dist", overrides=[str(widths)], check=False
    )
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "unpacked")
    case = test_cases(tiny_phantom)[0]
    out = tmp_path / "served.nii.gz"
    args = [str(REPO), str(APP_DIR), str(tmp_path / "unpacked" / name), case["t1"], str(out)]
    done = subprocess.run(
        [sys.executable, "-c", SERVE_ARCHIVE, *args],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["common"].startswith(str(tmp_path / "unpacked" / name))
    assert report["dimension"] == 3
    _assert_served(str(out), references[case["subject"]], case["t1"], name)
