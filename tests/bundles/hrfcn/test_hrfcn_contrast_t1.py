"""Bundle ``hrfcn_contrast_t1`` (HR-FCN, T1 + T2 + ADC -> CE-T1): training, evaluation and inference.

On the tiny phantom with shrunken widths: stage-1 training and resumption, ``val_psnr`` in target units,
the brain/tumour evaluation in both metric spaces, inference units, stage-2 fine-tuning, zero-filled and
cascaded missing inputs. The generic contract runs on this bundle through ``tests/bundles/test_contract.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hrfcn_helpers import (
    TINY,
    ConstantNet,
    _assert_same_geometry,
    _constant_cascade_models,
    _infer_overrides,
    _Messages,
    _output,
    _run_inference,
    _same_state,
    _state,
    _workflow,
    _write_datalist,
)


def test_train_and_resume(trained, data):
    models = trained / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint_epoch=1.pt").is_file()
    full = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "trainer"} <= set(full)

    # resume: continues at epoch 2 from the full state (weights, optimizer, epoch and iteration counters)
    from ignite.engine import Events

    wf = _workflow(
        ["train.json"],
        bundle_root=str(trained),
        datalist=str(data["datalist"]),
        resume=True,
        **dict(TINY, max_epochs=2),
        **{"train#trainer#epoch_length": 2},
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    seen: dict = {"iterations": 0}
    trainer.add_event_handler(Events.STARTED, lambda e: seen.update(epoch=e.state.epoch, weights=_state(network)))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.update(iterations=seen["iterations"] + 1))
    wf.run()
    assert seen["epoch"] == 1 and _same_state(seen["weights"], full["model"])
    assert seen["iterations"] == 2 and (trainer.state.epoch, trainer.state.iteration) == (2, 4)
    from common.engines import latest_checkpoint

    assert latest_checkpoint(str(models)) == str(models / "checkpoint_epoch=2.pt")
    # the best-model tracking resumes too: model.pt is replaced only by a better validation PSNR
    best = wf.parser.get_parsed_content("validate#best_model_saver")._key_metric_checkpoint
    assert len(best._saved) == 1 and best._saved[0].priority >= full["best_model"]["_saved"][0][0]
    wf.finalize()


def test_val_psnr_is_in_target_units(trained, data):
    """val_psnr: de-normalised prediction vs the raw (skull-stripped) target, peak = the target's range."""
    wf = _workflow(["train.json"], bundle_root=str(trained), datalist=str(data["datalist"]), **TINY)
    wf.initialize()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    evaluator.network = ConstantNet(0.25)
    evaluator.run()
    (case,) = [c for c in data["cases"] if c in json.loads(Path(data["datalist"]).read_text())["validation"]]
    t1 = np.asarray(nib.load(case["t1"]).dataobj, dtype=np.float64)
    target = np.asarray(nib.load(case["t1ce"]).dataobj, dtype=np.float64)
    brain = np.asarray(nib.load(case["brain_mask"]).dataobj) > 0
    lo, hi = np.quantile(t1[brain], [0.0, 0.995])
    pred = np.where(brain, lo + 0.25 * (hi - lo), 0.0)
    label = np.where(brain, target, 0.0)
    expected = 10 * math.log10((label.max() - label.min()) ** 2 / np.mean((pred - label) ** 2))
    assert evaluator.state.metrics["val_psnr"] == pytest.approx(expected, abs=1e-3)
    wf.finalize()


def test_evaluate_writes_brain_and_tumour_metrics(trained, data):
    out = trained / "eval_test"
    wf = _workflow(
        ["train.json", "evaluate.json"],
        bundle_root=str(trained),
        datalist=str(data["datalist"]),
        output_dir=str(out),
        **TINY,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    import csv

    # the collection's space (target units, peak = the target's range) in metrics.csv; the paper's own
    # [0, 1]-normalised space with peak 1 as a second, labelled table
    units = list(csv.DictReader((out / "metrics.csv").open()))
    assert sorted(r["case"] for r in units) == sorted(c["subject"] for c in data["test"])
    rows = list(csv.DictReader((out / "paper_space" / "metrics.csv").open()))
    assert sorted(r["case"] for r in rows) == sorted(c["subject"] for c in data["test"])
    for row, unit_row in zip(rows, units):
        assert float(unit_row["mae_brain"]) > 10 * float(row["mae_brain"])  # target units, not [0, 1]
        for column in ("mae_brain", "psnr_brain", "ssim_brain", "psnr_tumor"):
            assert math.isfinite(float(row[column])), (column, row)
        # PSNR in the [0, 1]-normalised space with peak 1: 10 log10(1 / MSE)
        assert float(row["psnr_brain"]) == pytest.approx(-10 * math.log10(float(row["mse_brain"])), rel=1e-6)
        assert -1.0 <= float(row["ssim_brain"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == len(data["test"]) and summary["metrics"]["psnr_tumor"]["count"] == len(data["test"])
    assert (out / "figure_grid.png").stat().st_size > 0


def test_inference_geometry_and_units(trained, data):
    _run_inference(["inference.json"], _infer_overrides(trained, data["datalist"], trained / "models" / "model.pt"))
    for case in data["test"]:
        _assert_same_geometry(_output(trained, case["subject"]), case["t1"])

    # a constant network through overlapping blended windows: inside the brain the output is exactly the
    # constant de-normalised with the T1's brain percentiles (0, 99.5); outside, 0 (skull-stripped output)
    net = ConstantNet(0.25)
    root = trained / "const"
    _run_inference(
        ["inference.json"],
        _infer_overrides(
            root, data["datalist"], trained / "models" / "model.pt", roi_hw=[16, 16], sw_overlap=[0.5, 0.5, 0.67]
        ),
        net,
    )
    assert net.inputs and tuple(net.inputs[0].shape[2:]) == (16, 16, 3)
    for case in data["test"]:
        out = _assert_same_geometry(_output(root, case["subject"]), case["t1"])
        t1 = np.asarray(nib.load(case["t1"]).dataobj, dtype=np.float64)
        brain = np.asarray(nib.load(case["brain_mask"]).dataobj) > 0
        lo, hi = np.quantile(t1[brain], [0.0, 0.995])
        np.testing.assert_allclose(out[brain], lo + 0.25 * (hi - lo), rtol=1e-4)
        assert np.all(out[~brain] == 0)


class _PointwiseNet(torch.nn.Module):
    """``(B, 3, H, W, D) -> (B, 1, H, W, D)``: a fixed per-voxel map of the inputs; records the window shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return 0.5 * x[:, :1] + 0.25 * x[:, 1:2] * x[:, 2:3] + 0.1


def test_inference_crops_to_the_brain(trained, data):
    """``crop_to_brain``: whole-plane windows span the brain's bounding box + ``crop_margin``, not the volume; a
    per-voxel network gives the same brain voxels as without the crop; the output keeps the input's grid."""
    outputs, nets = {}, {}
    for crop in (True, False):
        root = trained / f"crop_{crop}"
        nets[crop] = _PointwiseNet()
        _run_inference(
            ["inference.json"],
            _infer_overrides(
                root, data["datalist"], trained / "models" / "model.pt", crop_to_brain=crop, crop_margin=[2, 2, 1]
            ),
            nets[crop],
        )
        outputs[crop] = {
            c["subject"]: _assert_same_geometry(_output(root, c["subject"]), c["t1"]) for c in data["test"]
        }
    case = data["test"][0]
    brain = np.asarray(nib.load(case["brain_mask"]).dataobj) > 0
    idx = np.argwhere(brain)
    lo, hi = np.maximum(idx.min(0) - 2, 0), np.minimum(idx.max(0) + 3, brain.shape)  # bounding box + 2 voxels
    first_crop, first_full = nets[True].shapes[0], nets[False].shapes[0]
    assert first_full[2:4] == tuple(int(math.ceil(s / 4) * 4) for s in brain.shape[:2])  # whole plane, padded
    for axis in (0, 1):  # the margin clipped to the volume, then padded to a multiple of 4
        want = int(hi[axis] - lo[axis])
        assert want <= first_crop[2 + axis] < want + 4 and first_crop[2 + axis] <= first_full[2 + axis]
    assert math.prod(first_crop[2:4]) < math.prod(first_full[2:4])  # smaller windows
    assert sum(s[0] for s in nets[True].shapes) < sum(s[0] for s in nets[False].shapes)  # fewer slab windows
    for c in data["test"]:
        mask = np.asarray(nib.load(c["brain_mask"]).dataobj) > 0
        np.testing.assert_allclose(outputs[True][c["subject"]][mask], outputs[False][c["subject"]][mask], rtol=1e-5)
        assert np.all(outputs[True][c["subject"]][~mask] == 0)


def test_finetune_stage2_starts_from_stage1(trained, data):
    from ignite.engine import Events

    models = trained / "models"
    # stage 2: starts from stage 1's model.pt, lambda = (0.1, 0.1, 10), lr 1e-5, own folder
    stage1 = (models / "model.pt").read_bytes()
    stage1_weights = torch.load(models / "model.pt", weights_only=True)
    wf = _workflow(
        ["train.json", "finetune_local.json"],
        bundle_root=str(trained),
        datalist=str(data["datalist"]),
        **TINY,
        **{"train#trainer#epoch_length": 2},
    )
    wf.initialize()
    weights = wf.parser.get_parsed_content("g_loss").pixel_weights
    optimizer = wf.parser.get_parsed_content("optimizer")
    assert (weights["mae"], weights["ssim"], weights["local"]) == (0.1, 0.1, 10.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    seen = {}
    trainer.add_event_handler(Events.STARTED, lambda e: seen.update(weights=_state(network)))
    wf.run()
    assert _same_state(seen["weights"], stage1_weights)
    assert (models / "finetune_local" / "model.pt").is_file()
    assert (models / "model.pt").read_bytes() == stage1  # stage 1's model is not overwritten
    assert not _same_state(_state(network), stage1_weights)  # and stage 2 did train
    wf.finalize()


def test_zero_fill_missing_input(trained, data, tmp_path):
    cases = [{k: v for k, v in c.items() if k != "adc"} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(
        ["inference.json", "inference_missing.json"],
        _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
        net,
    )
    x = torch.cat(net.inputs)
    assert x.shape[1] == 3 and torch.all(x[:, 2] == 0) and x[:, 0].abs().max() > 0 and x[:, 1].abs().max() > 0
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
    # the trained network also runs with the zero-filled input
    root = tmp_path / "trained"
    _run_inference(
        ["inference.json", "inference_missing.json"], _infer_overrides(root, datalist, trained / "models" / "model.pt")
    )
    for case in cases:
        _assert_same_geometry(_output(root, case["subject"]), case["t1"])


def test_zero_fill_ignores_a_listed_missing_file(trained, data, tmp_path):
    """inference_missing.json while the datalist still lists the ADC: the file is ignored and zero-filled."""
    net = ConstantNet(0.5)
    with _Messages("common.transforms.modality") as messages:
        _run_inference(
            ["inference.json", "inference_missing.json"],
            _infer_overrides(tmp_path, data["datalist"], trained / "models" / "model.pt"),
            net,
        )
    x = torch.cat(net.inputs)
    assert torch.all(x[:, 2] == 0) and x[:, 1].abs().max() > 0
    for case in data["test"]:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
        lines = [m for m in messages if f"case {case['subject']}:" in m]
        assert any("'adc' is declared missing; ignoring the listed file" in m and case["adc"] in m for m in lines)


def test_cascade_synthesizes_missing_inputs(trained, data, tmp_path):
    from common.networks import HRFCN

    constants = {"t1_to_t2": 0.25, "t1_to_adc": 0.5}
    for name, value in constants.items():
        net = HRFCN(
            3,
            1,
            1,
            stem_channels=TINY["stem_width"],
            channels=TINY["channels"],
            strides=(2, 2, 1),
            num_res_blocks=TINY["num_res_blocks"],
        )
        with torch.no_grad():  # a known synthesis: the last 1x1 conv outputs its bias everywhere
            net.head[-1].conv.weight.zero_()
            net.head[-1].conv.bias.fill_(value)
        (tmp_path / "models" / name).mkdir(parents=True)
        torch.save(net.state_dict(), tmp_path / "models" / name / "model.pt")
    cases = [{k: c[k] for k in ("subject", "t1", "brain_mask")} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(
        ["inference.json", "inference_cascade.json"],
        _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
        net,
    )
    x = torch.cat(net.inputs)  # the windows the CE-T1 network saw: [T1, synthetic T2, synthetic ADC]
    brain = x[:, 1] != 0
    assert brain.any() and x[:, 0][brain].abs().max() > 0
    assert torch.all(x[:, 1][brain] == 0.25) and torch.all(x[:, 2][brain] == 0.5)  # synthesized in the brain
    assert torch.all(x[:, 2][~brain] == 0)  # skull-stripped like the real inputs
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
    # one command path with the trained CE-T1 model
    root = tmp_path / "trained"
    _run_inference(
        ["inference.json", "inference_cascade.json"],
        _infer_overrides(
            root,
            datalist,
            trained / "models" / "model.pt",
            t2_ckpt_path=str(tmp_path / "models/t1_to_t2/model.pt"),
            adc_ckpt_path=str(tmp_path / "models/t1_to_adc/model.pt"),
        ),
    )
    for case in cases:
        _assert_same_geometry(_output(root, case["subject"]), case["t1"])


def test_cascade_uses_real_images_where_present(trained, data, tmp_path):
    """inference_cascade.json: a listed real T2 is used (normalised by its own map); only absent inputs are
    synthesized; one log line per case and key says which."""
    from ignite.engine import Events

    _constant_cascade_models(tmp_path)
    with_t2, without = data["test"]
    cases = [
        {k: with_t2[k] for k in ("subject", "t1", "t2", "brain_mask")},
        {k: without[k] for k in ("subject", "t1", "brain_mask")},
    ]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    wf = _workflow(
        ["inference.json", "inference_cascade.json"],
        workflow_type="infer",
        **_infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
    )
    with _Messages("common.transforms.modality") as messages:
        wf.initialize()
        evaluator = wf.parser.get_parsed_content("evaluator")
        evaluator.network = net
        marks: list[int] = []
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: marks.append(len(net.inputs)))
        wf.run()
        wf.finalize()
    first, second = torch.cat(net.inputs[: marks[0]]), torch.cat(net.inputs[marks[0] :])
    for x in (first, second):
        brain = x[:, 2] != 0
        assert brain.any() and torch.all(x[:, 2][brain] == 0.5)  # ADC synthesized for both
    brain = first[:, 2] != 0
    assert (first[:, 1][brain] != 0.25).float().mean() > 0.9 and first[:, 1].max() > 0.5  # the real T2
    brain = second[:, 2] != 0
    assert torch.all(second[:, 1][brain] == 0.25)  # synthesized T2
    assert f"case {with_t2['subject']}: 't2' is present; using the real image." in messages
    assert f"case {without['subject']}: 't2' is absent; synthesizing it from ['t1']." in messages
    for case in (with_t2, without):
        assert f"case {case['subject']}: 'adc' is absent; synthesizing it from ['t1']." in messages
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])


def test_cascade_models_trained_by_the_bundle_feed_inference(trained, data, tmp_path):
    """train_t1_to_t2.json / train_t1_to_adc.json write the models inference_cascade.json loads, end to end."""
    for name in ("t1_to_t2", "t1_to_adc"):
        wf = _workflow(
            ["train.json", f"train_{name}.json"],
            bundle_root=str(tmp_path),
            datalist=str(data["datalist"]),
            **TINY,
            **{"train#trainer#epoch_length": 1},
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        assert (tmp_path / "models" / name / "model.pt").is_file()
    cases = [{k: c[k] for k in ("subject", "t1", "brain_mask")} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(
        ["inference.json", "inference_cascade.json"],
        _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
        net,
    )
    x = torch.cat(net.inputs)
    brain = x[:, 0] != 0
    assert torch.isfinite(x).all() and x[:, 1][brain].std() > 0 and x[:, 2][brain].std() > 0  # real syntheses
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
