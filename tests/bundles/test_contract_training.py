"""The bundle contract, training side, on every bundle of ``tests/bundles/contract.py::BUNDLES``: full state,
resume = uninterrupted, every override trains, refused training data, the non-finite guard, the lock,
``check_properties``, amp, MLflow, the command-line train smoke run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from contract import (
    BUNDLES,
    abs_case,
    bad_case,
    cli,
    error_in_chain,
    files_under,
    load_checkpoint,
    override_files,
    run,
    sha256,
    workflow,
    write_datalist,
)

from common.data.validation import InputDataError
from common.engines import NonFiniteLossError, NonFiniteStateError, TrainingLock, TrainingLockError

OVERRIDES = [(b, f) for b in BUNDLES for f in override_files(b)]


def test_train_writes_canonical_full_state(spec, trained):
    root, wf = trained
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert (trainer.state.epoch, trainer.state.iteration) == (1, spec.iterations)
    ckpt = load_checkpoint(root / "models" / "checkpoint_epoch=1.pt")
    assert {"model", "optimizer", "trainer", "best_model"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == spec.iterations
    network = wf.parser.get_parsed_content("network")
    network = getattr(network, "module", network)
    assert set(load_checkpoint(root / "models" / "model.pt")) == set(network.state_dict())  # bare generator weights
    assert set(ckpt["model"]) == set(network.state_dict())
    assert not (root / "models" / ".training.lock").exists()  # released at the end


def test_resume_equals_uninterrupted(spec, trained, tiny_phantom, tmp_path):
    root, first = trained
    resumed = tmp_path / "resumed"
    shutil.copytree(root / "models", resumed / "models")
    run(workflow(spec, spec.train_configs, resumed, dataset_dir=tiny_phantom, resume=True, **spec.schedule(2)))
    run(workflow(spec, spec.train_configs, tmp_path / "straight", dataset_dir=tiny_phantom, **spec.schedule(2)))
    a = load_checkpoint(resumed / "models" / "checkpoint_epoch=2.pt")
    b = load_checkpoint(tmp_path / "straight" / "models" / "checkpoint_epoch=2.pt")
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 2 * spec.iterations
    nets = [k for k in b if k == "model" or (k.startswith("d_") and not k.endswith(("optimizer", "scheduler")))]
    for name in nets:
        for key in b[name]:
            assert torch.allclose(a[name][key].float(), b[name][key].float(), atol=1e-6), (name, key)


@pytest.mark.parametrize("bundle,override", OVERRIDES, ids=[f"{b.name}:{f}" for b, f in OVERRIDES])
def test_every_override_builds_and_trains_one_epoch(bundle, override, tiny_phantom, tmp_path):
    extra = bundle.override_settings.get(override, {})
    wf = run(workflow(bundle, [*bundle.train_configs, override], tmp_path, dataset_dir=tiny_phantom, **extra))
    assert wf.parser.get_parsed_content("train#trainer").state.iteration >= 1
    assert [p.name for p in files_under(tmp_path / "models") if p.name.startswith("checkpoint_epoch")] == [
        "checkpoint_epoch=1.pt"
    ]


@pytest.mark.parametrize("kind", ["nan", "truncated"])
def test_training_refuses_bad_voxels_before_writing(spec, kind, tiny_phantom, tmp_path):
    meta = json.loads((Path(tiny_phantom) / "datalist.json").read_text())
    (tmp_path / "data").mkdir()
    bad, named = bad_case(spec, tiny_phantom, tmp_path / "data", kind)
    training = [bad] + [abs_case(tiny_phantom, c) for c in meta["training"][1:]]
    validation = [abs_case(tiny_phantom, c) for c in meta["validation"]]
    datalist = write_datalist(tmp_path / "data" / "datalist.json", training=training, validation=validation)
    root = tmp_path / "bundle"
    with pytest.raises(Exception) as info:
        run(workflow(spec, spec.train_configs, root, datalist=str(datalist)))
    assert named in str(error_in_chain(info.value, InputDataError))
    assert files_under(root) == []  # no checkpoint, no TensorBoard file, no lock


def test_divergent_training_stops_and_keeps_existing_model(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    (tmp_path / "models").mkdir()
    shutil.copy(root / "models" / "model.pt", tmp_path / "models" / "model.pt")
    before = sha256(tmp_path / "models" / "model.pt")
    with pytest.raises(Exception) as info:
        run(workflow(spec, spec.train_configs, tmp_path, dataset_dir=tiny_phantom, **spec.divergent))
    assert error_in_chain(info.value, (NonFiniteLossError, NonFiniteStateError)) is not None, repr(info.value)
    assert sha256(tmp_path / "models" / "model.pt") == before
    assert [p.name for p in files_under(tmp_path / "models")] == ["model.pt"]  # no checkpoint of the diverged run


def test_second_training_into_one_folder_is_refused(spec, tiny_phantom, tmp_path):
    holder = TrainingLock(str(tmp_path / "models"))
    holder.acquire()
    try:
        with pytest.raises(Exception) as info:
            run(workflow(spec, spec.train_configs, tmp_path, dataset_dir=tiny_phantom))
        assert str(tmp_path / "models") in str(error_in_chain(info.value, TrainingLockError))
    finally:
        holder.release()
    assert [p.name for p in files_under(tmp_path / "models")] == []


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


def test_amp_gives_bf16_autocast_on_cpu(spec, tiny_phantom, tmp_path):
    from common.inferers import AutocastInferer

    cpu = "$torch.device('cpu')"
    wf = workflow(spec, spec.train_configs, tmp_path, amp=True, device=cpu, dataset_dir=tiny_phantom)
    wf.parser.parse(reset=True)
    assert wf.parser.get_parsed_content("train#trainer").amp is True
    for id_ in ("validate#inferer",):
        inferer = wf.parser.get_parsed_content(id_)
        assert isinstance(inferer, AutocastInferer) and inferer.enabled and inferer.dtype == torch.bfloat16
    wf = workflow(spec, spec.infer_configs, tmp_path, "infer", amp=True, device=cpu, dataset_dir=tiny_phantom)
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
    result = cli(bundle, bundle.train_configs, tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(tmp_path / "models" / "checkpoint_epoch=1.pt")["trainer"]["iteration"] == bundle.iterations
    assert (tmp_path / "models" / "model.pt").is_file()
