"""Tests of the evaluation handlers driven by a tiny MONAI SupervisedEvaluator and a minimal Ignite Engine."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

from common.handlers.cases import case_name
from common.handlers.evaluation import RegressionEvaluationSaver
from common.handlers.figure_grid import FigureGridSaver
from common.metrics.regression import compute_regression_metrics

SIZE = 16
REGIONS = {"brain": "brain_mask", "tumor": "tumor_mask", "lesion": "lesion_mask"}  # no case has "lesion_mask"


class Shift(torch.nn.Module):
    """An identity-like network: a fixed affine change of the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.9 * x + 0.05


def _cases(n: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for i in range(n):
        image = torch.rand(1, SIZE, SIZE, SIZE, generator=g)
        label = image + 0.05 * torch.randn(image.shape, generator=g)
        brain = torch.zeros_like(image)
        brain[:, 2:14, 2:14, 2:14] = 1
        tumor = torch.zeros_like(image)
        if i != 2:  # the last case has an empty tumour mask
            tumor[:, 5:9, 6:10, 5 + i : 8 + i] = 1
        cases.append({"image": image, "label": label, "brain_mask": brain, "tumor_mask": tumor, "subject": f"sub-{i}"})
    return cases


def _evaluate(cases, handlers, batch_size=2):
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(cases), batch_size=batch_size),
        network=Shift(),
        val_handlers=handlers,
    )
    evaluator.run()
    return evaluator


def _read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _strict_json(path):
    def no_constant(name):
        raise AssertionError(f"{name} in JSON")

    with open(path) as f:
        return json.load(f, parse_constant=no_constant)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    saver = RegressionEvaluationSaver(str(out), regions=REGIONS, slice_metrics={"psnr_tumor_slices": ("tumor_mask", 2)})
    grid = FigureGridSaver(str(out), input_keys=["image"], num_cases=2, figure_kwargs={"zoom": 2, "pad": 3})
    cases = _cases()
    with pytest.warns(UserWarning, match="sub-2.*tumor_mask.*empty"):
        evaluator = _evaluate(cases, [saver, grid])
    return out, cases, evaluator


def test_csv_rows_equal_the_per_case_function(evaluated):
    out, cases, _ = evaluated
    header, rows = _read_csv(out / "metrics.csv")
    metric_names = ["mae", "mse", "psnr", "ssim"]
    assert header == [
        "case",
        *metric_names,
        *(f"{m}_{r}" for r in ("brain", "tumor") for m in metric_names),
        "psnr_tumor_slices",
    ]
    assert [r[0] for r in rows] == ["sub-0", "sub-1", "sub-2"]
    for case, row in zip(cases, rows):
        pred = Shift()(case["image"][None])[0]
        values = dict(zip(header[1:], row[1:]))
        expected = compute_regression_metrics(pred, case["label"])
        for region in ("brain", "tumor"):
            if region == "brain" or case["subject"] != "sub-2":
                values_r = compute_regression_metrics(pred, case["label"], case[f"{region}_mask"])
                expected.update({f"{k}_{region}": v for k, v in values_r.items()})
        for name, value in expected.items():
            assert float(values[name]) == pytest.approx(value, rel=1e-9), name
    assert all(rows[2][header.index(f"{m}_tumor")] == "" for m in metric_names)  # skipped, not NaN
    assert rows[2][-1] == ""


def test_tumour_slice_psnr_by_hand(evaluated):
    out, cases, _ = evaluated
    header, rows = _read_csv(out / "metrics.csv")
    for i in (0, 1):
        pred = Shift()(cases[i]["image"][None])[0].double().numpy()[0]
        label = cases[i]["label"].double().numpy()[0]
        slices = range(5 + i, 8 + i)  # the slices along the last axis that hold tumour
        peak = [label[..., k].max() - label[..., k].min() for k in slices]  # default data range: target_range
        hand = [10 * np.log10(p**2 / ((pred[..., k] - label[..., k]) ** 2).mean()) for p, k in zip(peak, slices)]
        assert float(rows[i][header.index("psnr_tumor_slices")]) == pytest.approx(np.mean(hand), rel=1e-9)


def test_summary_matches_numpy_and_has_no_nan(evaluated):
    out, _, evaluator = evaluated
    header, rows = _read_csv(out / "metrics.csv")
    summary = _strict_json(out / "summary.json")
    assert summary["n_cases"] == 3 and list(summary["metrics"]) == header[1:]
    for j, name in enumerate(header[1:], start=1):
        values = np.array([float(r[j]) for r in rows if r[j] != ""])
        entry = summary["metrics"][name]
        assert entry["count"] == len(values) == (2 if "tumor" in name else 3)
        assert entry["skipped"] == 3 - len(values) and entry["n_inf"] == 0
        assert entry["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert entry["std"] == pytest.approx(values.std(), rel=1e-9, abs=1e-15)
        assert evaluator.state.metrics[name] == entry["mean"]
    table = (out / "summary.md").read_text()
    assert "| psnr_tumor | " in table and "| 2 | 1 |" in table and "nan" not in table.lower()
    assert sorted(os.listdir(out)) == ["figure_grid.png", "metrics.csv", "summary.json", "summary.md"]  # no temp files


def test_figure_grid_size(evaluated):
    out, _, _ = evaluated
    with Image.open(out / "figure_grid.png") as img:
        # 3 columns (image, synthesized, target, |error|) = 4 tiles of 16*2 px, pad 3, title bands 14 px, 2 rows
        assert img.size == (3 + 4 * (32 + 3), 14 + 2 * (14 + 32 + 3))


def test_batched_output_of_a_plain_engine_identical_pred_and_item_transform(tmp_path):
    cases = _cases(2)
    batch = {k: (torch.stack([c[k] for c in cases]) if k != "subject" else [c[k] for c in cases]) for k in cases[0]}

    def step(engine, b):  # a batched (not decollated) output dict; the prediction equals the label
        return {"pred": b["label"].clone(), "label": b["label"]}

    engine = Engine(step)
    saver = RegressionEvaluationSaver(
        str(tmp_path),
        regions={"tumor": "tumor_mask"},
        metrics=("mae", "psnr"),
        region_metrics=("mae",),
        item_transform=lambda d: {**d, "pred": d["pred"] + 1.0},
        state_metrics_prefix="val_",
    )
    saver.attach(engine)
    engine.run([batch], max_epochs=1)
    header, rows = _read_csv(tmp_path / "metrics.csv")
    assert header == ["case", "mae", "psnr", "mae_tumor"] and [r[0] for r in rows] == ["sub-0", "sub-1"]
    assert all(float(r[1]) == pytest.approx(1.0) and float(r[3]) == pytest.approx(1.0) for r in rows)
    assert engine.state.metrics["val_mae"] == pytest.approx(1.0)

    engine2, out2 = Engine(step), tmp_path / "identical"
    RegressionEvaluationSaver(str(out2), metrics=("mae", "psnr")).attach(engine2)
    with pytest.warns(UserWarning, match="infinite"):
        engine2.run([batch], max_epochs=1)
    summary = _strict_json(out2 / "summary.json")["metrics"]
    assert summary["psnr"] == {"count": 0, "skipped": 0, "n_inf": 2} and summary["mae"]["mean"] == 0.0
    assert _read_csv(out2 / "metrics.csv")[1][0][2] == "inf"


def test_case_names_from_meta_and_duplicates(tmp_path):
    label = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/data/sub-7/sub-7_t1ce.nii.gz"})
    assert case_name({"label": label}, "subject", ["label"]) == "sub-7_t1ce"
    assert case_name({"label_meta_dict": {"filename_or_obj": "/x/case.mha"}}, None, ["label"]) == "case"
    assert case_name({"subject": "s1", "label": label}, "subject", ["label"]) == "s1"
    cases = [dict(c, subject="same") for c in _cases(2)]
    saver = RegressionEvaluationSaver(str(tmp_path), metrics=("mae",))
    with pytest.warns(UserWarning, match="repeated"):
        _evaluate(cases, [saver])
    assert [r[0] for r in _read_csv(tmp_path / "metrics.csv")[1]] == ["same", "same_2"]


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"metrics": ("dice",)}, "metrics"),
        ({"region_metrics": ("psnr", "x")}, "region_metrics"),
        ({"slice_metrics": {"p": ("tumor_mask", 5)}}, "slice_metrics"),
        ({"data_range": "peak"}, "data_range"),
        ({"write_event": "ITERATION_COMPLETED"}, "write_event"),
        ({"ssim_kwargs": {"win_size": 6}}, "win_size"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        RegressionEvaluationSaver(str(tmp_path), **kwargs)
    with pytest.raises(ValueError, match="num_cases"):
        FigureGridSaver(str(tmp_path), num_cases=0)


def test_missing_pred_key_is_a_clear_error(tmp_path):
    saver = RegressionEvaluationSaver(str(tmp_path), pred_key="synth", metrics=("mae",))
    with pytest.raises(ValueError, match="synth"):
        _evaluate(_cases(1), [saver])
    assert not os.path.exists(tmp_path / "metrics.csv")


def test_enhancement_columns_equal_the_metric(tmp_path):
    """Recovery / false enhancement per case in metrics.csv and the summary, with the source from the batch."""
    from common.metrics.enhancement import compute_enhancement_metrics

    cases = _cases()
    for case in cases:  # label = 0.9 image + 0.05 + 1 in the tumour ("rim", label 3): Shift() recovers nothing
        case["tumor_mask"] = 3 * case["tumor_mask"]
        case["label"] = Shift()(case["image"][None])[0] + (case["tumor_mask"] == 3).float()
        case["t1"] = case["image"] + 0.02
    saver = RegressionEvaluationSaver(
        str(tmp_path),
        regions={"brain": "brain_mask"},
        metrics=("psnr",),
        enhancement={"source_key": "t1", "region_key": "tumor_mask", "region_label": 3},
    )
    evaluator = _evaluate(cases, [saver])
    header, rows = _read_csv(tmp_path / "metrics.csv")
    assert header == ["case", "psnr", "psnr_brain", "enhancement_recovery", "false_enhancement"]
    for case, row in zip(cases, rows):
        pred = Shift()(case["image"][None])[0]
        expected = compute_enhancement_metrics(
            pred, case["label"], case["t1"], case["tumor_mask"], 3, None, case["brain_mask"]
        )
        gain = (pred - case["t1"]).double()
        rim = (case["tumor_mask"] == 3).expand_as(gain)
        if rim.any():  # by hand: mean gain in the rim over the 1.0 wanted there
            assert float(row[3]) == pytest.approx(
                float(gain[rim].mean()) / float((case["label"] - case["t1"])[rim].mean()), rel=1e-5
            )
        else:
            assert row[3] == ""  # sub-2 has no tumour: skipped
        outside = ((case["brain_mask"] > 0) & (case["tumor_mask"] != 3)).expand_as(gain)
        assert float(row[4]) == pytest.approx(float(gain.clamp_min(0)[outside].mean()), rel=1e-5)
        assert float(row[4]) == pytest.approx(expected["false_enhancement"], rel=1e-9)
    summary = _strict_json(tmp_path / "summary.json")["metrics"]
    assert summary["enhancement_recovery"]["count"] == 2 and summary["enhancement_recovery"]["skipped"] == 1
    assert evaluator.state.metrics["false_enhancement"] == pytest.approx(np.mean([float(r[4]) for r in rows]))
    with pytest.raises(ValueError, match="source_key"):
        RegressionEvaluationSaver(str(tmp_path), enhancement={"region_key": "tumor_mask"})
    with pytest.raises(ValueError, match="threshold"):
        RegressionEvaluationSaver(str(tmp_path), enhancement={"source_key": "t1"})


def test_target_file_range_peak_is_the_files_range_not_the_masked_labels(tmp_path):
    """A skull-stripped label scored with the peak of its (whole-head) target file, read from the label's meta."""
    import nibabel as nib

    cases, peaks = _cases(2), []
    for i, case in enumerate(cases):
        full = case["label"].clone()
        full[:, 0, 0, 0] = 10.0 + i  # a bright voxel outside the brain, in the file only
        peaks.append(float(full.max() - full.min()))
        path = tmp_path / f"target{i}.nii.gz"
        nib.save(nib.Nifti1Image(full[0].numpy(), np.eye(4)), str(path))
        case["label"] = MetaTensor(case["label"] * case["brain_mask"], meta={"filename_or_obj": str(path)})
    saver = RegressionEvaluationSaver(
        str(tmp_path / "eval"), regions={"brain": "brain_mask"}, metrics=("psnr",), data_range="target_file_range"
    )
    _evaluate(cases, [saver], batch_size=1)
    _, rows = _read_csv(tmp_path / "eval" / "metrics.csv")
    for i, (case, row) in enumerate(zip(cases, rows)):
        pred = Shift()(case["image"][None])[0].double()
        label = case["label"].as_tensor().double()
        peak = peaks[i]  # the file's max - min
        mse = float(((pred - label) ** 2).mean())
        assert float(row[1]) == pytest.approx(10 * np.log10(peak**2 / mse), abs=1e-4)
        masked_peak = float(label.max() - label.min())
        assert masked_peak < peak  # the label alone would have given a lower peak
    no_meta = _cases(1)
    saver = RegressionEvaluationSaver(str(tmp_path / "e2"), metrics=("psnr",), data_range="target_file_range")
    with pytest.raises(Exception, match="filename_or_obj"):
        _evaluate(no_meta, [saver])
