"""The bundle contract, tested on every bundle of ``tests/bundles/contract.py::BUNDLES``.

Everything runs in-process through ``monai.bundle.ConfigWorkflow`` on the session's tiny phantom (6 subjects
of 32 x 40 x 24 voxels; 3 training, 1 validation, 2 test) with each bundle's tiny overrides, except one
command-line smoke run per bundle and one command-line run of a refused input.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from contract import BUNDLES, BundleSpec, abs_case, error_in_chain, load, run, save_like, workflow, write_datalist

from common.data.validation import InputDataError
from common.engines import NonFiniteLossError, NonFiniteStateError, TrainingLock, TrainingLockError

IDS = [b.name for b in BUNDLES]


def _ckpt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).exists() else []


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP oversubscription on the 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=BUNDLES, ids=IDS)
def spec(request) -> BundleSpec:
    return request.param


@pytest.fixture(scope="module")
def trained(spec, tiny_phantom, tmp_path_factory):
    """A two-epoch schedule stopped after its first epoch: full state, best model, the workflow."""
    root = tmp_path_factory.mktemp(f"{spec.name}_trained")
    wf = run(
        workflow(spec, spec.train_configs, root, dataset_dir=tiny_phantom, **{**spec.schedule(2), "max_epochs": 1})
    )
    return root, wf


# --- training: state, resume, overrides ------------------------------------------------------------------


def test_train_writes_canonical_full_state(spec, trained):
    root, wf = trained
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert (trainer.state.epoch, trainer.state.iteration) == (1, spec.iterations)
    ckpt = _ckpt(root / "models" / "checkpoint_epoch=1.pt")
    assert {"model", "optimizer", "trainer", "best_model"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == spec.iterations
    network = wf.parser.get_parsed_content("network")
    network = getattr(network, "module", network)
    assert set(_ckpt(root / "models" / "model.pt")) == set(network.state_dict())  # bare generator weights
    assert set(ckpt["model"]) == set(network.state_dict())
    assert not (root / "models" / ".training.lock").exists()  # released at the end


def test_resume_equals_uninterrupted(spec, trained, tiny_phantom, tmp_path):
    root, first = trained
    resumed = tmp_path / "resumed"
    shutil.copytree(root / "models", resumed / "models")
    run(workflow(spec, spec.train_configs, resumed, dataset_dir=tiny_phantom, resume=True, **spec.schedule(2)))
    run(workflow(spec, spec.train_configs, tmp_path / "straight", dataset_dir=tiny_phantom, **spec.schedule(2)))
    a = _ckpt(resumed / "models" / "checkpoint_epoch=2.pt")
    b = _ckpt(tmp_path / "straight" / "models" / "checkpoint_epoch=2.pt")
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 2 * spec.iterations
    nets = [k for k in b if k == "model" or (k.startswith("d_") and not k.endswith(("optimizer", "scheduler")))]
    for name in nets:
        for key in b[name]:
            assert torch.allclose(a[name][key].float(), b[name][key].float(), atol=1e-6), (name, key)


def _override_files(spec: BundleSpec) -> list[str]:
    found = sorted(str(p.relative_to(spec.configs)) for p in (spec.configs / "ablations").glob("*.json"))
    return found + list(spec.extra_overrides)


OVERRIDES = [(b, f) for b in BUNDLES for f in _override_files(b)]


@pytest.mark.parametrize("bundle,override", OVERRIDES, ids=[f"{b.name}:{f}" for b, f in OVERRIDES])
def test_every_override_builds_and_trains_one_epoch(bundle, override, tiny_phantom, tmp_path):
    wf = run(workflow(bundle, [*bundle.train_configs, override], tmp_path, dataset_dir=tiny_phantom))
    assert wf.parser.get_parsed_content("train#trainer").state.iteration >= 1
    assert [p.name for p in _files(tmp_path / "models") if p.name.startswith("checkpoint_epoch")] == [
        "checkpoint_epoch=1.pt"
    ]


# --- evaluation and inference ------------------------------------------------------------------------------


def _psnr(pred: np.ndarray, target: np.ndarray) -> float:
    peak = float(target.max() - target.min())
    return 10 * math.log10(peak**2 / float(np.mean((pred.astype(np.float64) - target) ** 2)))


def _output(spec: BundleSpec, wf, out: Path, case: str) -> Path:
    suffix = wf.parser.get_parsed_content("output_suffix")
    return out / case / f"{case}_{suffix}.nii.gz"


def test_evaluate_matches_inference_output(spec, trained, tiny_phantom):
    root, _ = trained
    run(workflow(spec, spec.eval_configs, root, dataset_dir=tiny_phantom))
    cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
    import csv

    with open(root / "eval" / "metrics.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {c["subject"] for c in cases}
    summary = json.loads((root / "eval" / "summary.json").read_text())
    assert summary["n_cases"] == len(cases) and {"mae", "mse", "psnr", "ssim"} <= set(summary["metrics"])
    assert (root / "eval" / "figure_grid.png").stat().st_size > 0

    out = root / "infer"
    wf = run(workflow(spec, spec.infer_configs, root, "infer", dataset_dir=tiny_phantom, output_dir=str(out)))
    for case in cases:
        pred, _ = load(_output(spec, wf, out, case["subject"]))
        target, _ = load(Path(tiny_phantom) / case[spec.target_key])
        if spec.eval_target_mask:
            target = target * (load(Path(tiny_phantom) / case[spec.eval_target_mask])[0] > 0)
        assert float(rows[case["subject"]]["psnr"]) == pytest.approx(_psnr(pred, target), abs=1e-3)


def _oblique_affine(spacing=(0.9, 1.1, 2.5)) -> np.ndarray:
    """LPS-like orientation (x and y flipped), rotated 20 degrees about z and 10 about x: non-diagonal."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = [31.5, -12.25, 7.0]
    return affine


def test_inference_keeps_oblique_lps_geometry(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    affine, entry = _oblique_affine(), {"subject": "oblique_case"}
    for key in (*spec.source_keys, *spec.extra_infer_keys):
        data, _ = load(case[key])
        entry[key] = save_like(case[key], tmp_path / f"{key}.nii.gz", data[:27, :33, :], affine)  # odd sizes
    datalist = write_datalist(tmp_path / "datalist.json", test=[entry])
    out = tmp_path / "out"
    wf = run(workflow(spec, spec.infer_configs, root, "infer", datalist=str(datalist), output_dir=str(out)))
    pred, pred_affine = load(_output(spec, wf, out, "oblique_case"))
    shape, expected = spec.geometry((27, 33, 24), affine)
    assert pred.shape == shape
    np.testing.assert_allclose(pred_affine, expected, atol=1e-4)
    assert np.isfinite(pred).all() and pred.std() > 0


def test_inference_names_cases_without_subject_key(spec, trained, tiny_phantom, tmp_path):
    """``caseN/<key>.nii.gz`` without a ``subject`` key: one output per case, named after its folder."""
    root, _ = trained
    cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][:2]
    entries = []
    for i, case in enumerate(cases):
        folder = tmp_path / "data" / f"case{i + 1}"
        folder.mkdir(parents=True)
        entry = {}
        for key in (*spec.source_keys, *spec.extra_infer_keys):
            shutil.copy(Path(tiny_phantom) / case[key], folder / f"{key}.nii.gz")
            entry[key] = f"case{i + 1}/{key}.nii.gz"
        entries.append(entry)
    datalist = write_datalist(tmp_path / "data" / "datalist.json", test=entries)
    out = tmp_path / "out"
    wf = run(workflow(spec, spec.infer_configs, root, "infer", datalist=str(datalist), output_dir=str(out)))
    written = _files(out)
    assert written == [_output(spec, wf, out, "case1"), _output(spec, wf, out, "case2")]
    assert not np.array_equal(load(written[0])[0], load(written[1])[0])


def test_duplicate_case_names_are_refused(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    datalist = write_datalist(tmp_path / "datalist.json", test=[dict(case, subject="same"), dict(case, subject="same")])
    with pytest.raises(Exception) as info:
        run(workflow(spec, spec.infer_configs, root, "infer", datalist=str(datalist), output_dir=str(tmp_path / "out")))
    assert "same" in str(error_in_chain(info.value, InputDataError))
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []


# --- bad inputs (contract section 6) --------------------------------------------------------------------------


def _bad_case(spec: BundleSpec, tiny_phantom: str, folder: Path, kind: str) -> tuple[dict, str]:
    """One test case broken in one way: ``(entry, text the error must name)``."""
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    key = spec.source_keys[0]
    data, affine = load(case[key])
    bad = folder / f"bad_{key}.nii.gz"
    if kind == "shape":
        case[spec.target_key] = save_like(
            case[spec.target_key], folder / "target.nii.gz", load(case[spec.target_key])[0][:, :, :-2]
        )
        return case, case[spec.target_key]
    if kind == "affine":
        moved = affine.copy()
        moved[0, 3] += 3.0
        case[spec.target_key] = save_like(
            case[spec.target_key], folder / "target.nii.gz", load(case[spec.target_key])[0], moved
        )
        return case, case[spec.target_key]
    if kind == "missing_file":
        case[key] = str(folder / "no_such_file.nii.gz")
    elif kind == "missing_key":
        case.pop(key)
        return case, f"'{key}'"
    elif kind == "nan":
        data[3, 4, 5] = np.nan
        case[key] = save_like(case[key], bad, data)
    elif kind == "multichannel":
        case[key] = save_like(case[key], bad, np.stack([data, data], axis=-1))
    elif kind == "corrupt":
        bad.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
        case[key] = str(bad)
    elif kind == "truncated":
        raw = Path(case[key]).read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
        case[key] = str(bad)
    elif kind == "2d":
        case[key] = save_like(case[key], bad, data[:, :, 0])
    else:
        raise ValueError(kind)
    return case, case[key]


BAD = [
    ("shape", "eval"),
    ("affine", "eval"),
    ("missing_file", "infer"),
    ("missing_key", "infer"),
    ("nan", "infer"),
    ("multichannel", "infer"),
    ("corrupt", "infer"),
    ("truncated", "infer"),
    ("2d", "infer"),
    ("unwritable", "infer"),
    ("bad_checkpoint", "infer"),
    ("truncated_checkpoint", "infer"),
]


@pytest.mark.parametrize("kind,config", BAD, ids=[k for k, _ in BAD])
def test_bad_input_fails_clearly_and_writes_nothing(spec, kind, config, trained, tiny_phantom, tmp_path):
    root, _ = trained
    (tmp_path / "data").mkdir()
    out, extra = tmp_path / "out", {}
    if kind in ("unwritable", "bad_checkpoint", "truncated_checkpoint"):
        case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
        named = ""
    else:
        case, named = _bad_case(spec, tiny_phantom, tmp_path / "data", kind)
    if kind == "unwritable":
        (tmp_path / "a_file").write_text("not a folder")
        out = tmp_path / "a_file" / "out"
        named = str(out)
    elif kind.endswith("checkpoint"):
        model = tmp_path / "data" / "model.pt"
        raw = (root / "models" / "model.pt").read_bytes()
        model.write_bytes(os.urandom(4096) if kind == "bad_checkpoint" else raw[: len(raw) // 3])
        extra["ckpt_path"], named = str(model), str(model)
    datalist = write_datalist(tmp_path / "data" / "datalist.json", test=[case])
    files, wtype = (spec.infer_configs, "infer") if config == "infer" else (spec.eval_configs, "train")
    with pytest.raises(Exception) as info:
        run(workflow(spec, files, root, wtype, datalist=str(datalist), output_dir=str(out), **extra))
    error = error_in_chain(info.value, InputDataError)
    assert error is not None, repr(info.value)
    assert named in str(error), str(error)
    assert "weights_only=False" not in str(error)
    written = [p for p in _files(tmp_path) if "data" not in p.relative_to(tmp_path).parts and p.name != "a_file"]
    assert written == []  # no output file of any kind


@pytest.mark.parametrize("kind", ["nan", "truncated"])
def test_training_refuses_bad_voxels_before_writing(spec, kind, tiny_phantom, tmp_path):
    meta = json.loads((Path(tiny_phantom) / "datalist.json").read_text())
    (tmp_path / "data").mkdir()
    bad, named = _bad_case(spec, tiny_phantom, tmp_path / "data", kind)
    training = [bad] + [abs_case(tiny_phantom, c) for c in meta["training"][1:]]
    validation = [abs_case(tiny_phantom, c) for c in meta["validation"]]
    datalist = write_datalist(tmp_path / "data" / "datalist.json", training=training, validation=validation)
    root = tmp_path / "bundle"
    with pytest.raises(Exception) as info:
        run(workflow(spec, spec.train_configs, root, datalist=str(datalist)))
    assert named in str(error_in_chain(info.value, InputDataError))
    assert _files(root) == []  # no checkpoint, no TensorBoard file, no lock


def test_divergent_training_stops_and_keeps_existing_model(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    (tmp_path / "models").mkdir()
    shutil.copy(root / "models" / "model.pt", tmp_path / "models" / "model.pt")
    before = _sha(tmp_path / "models" / "model.pt")
    with pytest.raises(Exception) as info:
        run(workflow(spec, spec.train_configs, tmp_path, dataset_dir=tiny_phantom, **spec.divergent))
    assert error_in_chain(info.value, (NonFiniteLossError, NonFiniteStateError)) is not None, repr(info.value)
    assert _sha(tmp_path / "models" / "model.pt") == before
    assert [p.name for p in _files(tmp_path / "models")] == ["model.pt"]  # no checkpoint of the diverged run


def test_second_training_into_one_folder_is_refused(spec, tiny_phantom, tmp_path):
    holder = TrainingLock(str(tmp_path / "models"))
    holder.acquire()
    try:
        with pytest.raises(Exception) as info:
            run(workflow(spec, spec.train_configs, tmp_path, dataset_dir=tiny_phantom))
        assert str(tmp_path / "models") in str(error_in_chain(info.value, TrainingLockError))
    finally:
        holder.release()
    assert [p.name for p in _files(tmp_path / "models")] == []


def test_constant_source_is_warned_about(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    key = spec.source_keys[0]
    case[key] = save_like(case[key], tmp_path / "zero.nii.gz", np.zeros_like(load(case[key])[0]))
    datalist = write_datalist(tmp_path / "datalist.json", test=[dict(case, subject="flat")])
    with pytest.warns(UserWarning, match="flat"):
        run(workflow(spec, spec.infer_configs, root, "infer", datalist=str(datalist), output_dir=str(tmp_path / "out")))


# --- configs: properties, amp ---------------------------------------------------------------------------------


def test_every_config_passes_check_properties(spec, trained, tiny_phantom):
    root, _ = trained
    checks = [(spec.train_configs, "train"), (spec.eval_configs, "train"), (spec.infer_configs, "infer")]
    checks += [((*spec.infer_configs, f), "infer") for f in spec.infer_overrides]
    for files, wtype in checks:
        wf = workflow(spec, files, root, wtype, dataset_dir=tiny_phantom, log_dir=str(root / "logs_properties"))
        wf.initialize()
        try:
            assert wf.check_properties() == [], files  # MONAI returns the ids that are missing or wrong
        finally:
            wf.finalize()


def test_amp_gives_bf16_autocast_on_cpu(spec, tmp_path):
    from common.inferers import AutocastInferer

    wf = workflow(spec, spec.train_configs, tmp_path, amp=True, device="$torch.device('cpu')")
    wf.parser.parse(reset=True)
    assert wf.parser.get_parsed_content("train#trainer").amp is True
    for id_ in ("validate#inferer",):
        inferer = wf.parser.get_parsed_content(id_)
        assert isinstance(inferer, AutocastInferer) and inferer.enabled and inferer.dtype == torch.bfloat16
    wf = workflow(spec, spec.infer_configs, tmp_path, "infer", amp=True, device="$torch.device('cpu')")
    wf.parser.parse(reset=True)
    inferer = wf.parser.get_parsed_content("inferer")
    assert isinstance(inferer, AutocastInferer) and inferer.enabled and inferer.dtype == torch.bfloat16


def test_mlflow_tracking_logs_every_loss_term(spec, tiny_phantom, tmp_path):
    """``--tracking common/engines/mlflow_tracking.json``: every term of the trainer's output, and val_psnr."""
    pytest.importorskip("mlflow", reason="MLflow is installed on demand (pip install mlflow); not in requirements")
    import mlflow

    settings = Path(__file__).resolve().parents[2] / "common" / "engines" / "mlflow_tracking.json"
    wf = workflow(
        spec,
        spec.train_configs,
        tmp_path,
        dataset_dir=tiny_phantom,
        tracking=str(settings),
        experiment_name=f"contract_{spec.name}",
    )
    run(wf)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'eval' / 'mlruns.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == f"contract_{spec.name}"]
    runs = client.search_runs([experiment.experiment_id])
    logged = {k for r in runs for k in r.data.metrics}
    terms = set(wf.parser.get_parsed_content("train#trainer").state.output[0]) - {"image", "label", "pred"}
    expected = {k for k in terms if k == "loss" or k.startswith(("g_", "d_"))}
    assert expected and expected <= logged and "val_psnr" in logged, (expected, logged)


# --- the command line -----------------------------------------------------------------------------------------


def _cli(spec: BundleSpec, files, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str([str(spec.configs / f) for f in files]).replace(" ", ""),
        "--meta_file",
        str(spec.configs / "metadata.json"),
        "--logging_file",
        str(spec.configs / "logging.conf"),
        *args,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.cli_smoke], ids=[b.name for b in BUNDLES if b.cli_smoke])
def test_command_line_train_smoke(bundle, tiny_phantom, tmp_path):
    args = [
        "--dataset_dir",
        tiny_phantom,
        "--bundle_root",
        str(tmp_path),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--log_dir",
        str(tmp_path / "logs"),
    ]
    for key, value in {**bundle.tiny, **bundle.tiny_train}.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    result = _cli(bundle, bundle.train_configs, tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _ckpt(tmp_path / "models" / "checkpoint_epoch=1.pt")["trainer"]["iteration"] == bundle.iterations
    assert (tmp_path / "models" / "model.pt").is_file()


def test_command_line_refused_input_ends_with_the_culprit(tiny_phantom, tmp_path):
    """A refused input exits non-zero and the last line a user sees names the file (not MONAI's wrapper)."""
    bundle = BUNDLES[0]
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    case[bundle.source_keys[0]] = str(tmp_path / "missing_source.nii.gz")
    datalist = write_datalist(tmp_path / "datalist.json", test=[case])
    result = _cli(
        bundle,
        bundle.infer_configs,
        tmp_path,
        "--bundle_root",
        str(tmp_path),
        "--datalist",
        str(datalist),
        "--output_dir",
        str(tmp_path / "out"),
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "missing_source.nii.gz" in last and "does not exist" in last, last
    assert not (tmp_path / "out").exists()
