"""Bundle ``context_gan_synthesis``: train, resume, stitching, evaluate, infer, auto-context, ablations, bad inputs.

In-process through ``monai.bundle.ConfigWorkflow`` on the session's tiny phantom (6 subjects of 32 x 40 x 24
voxels; 3 training, 1 validation, 2 test) with tiny widths and the demo's 24³ -> 16³ patch (5³ unpadded layers).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import BUNDLES, collated, load_checkpoint, run, workflow

from monai.bundle import ConfigWorkflow

from common.data.validation import InputDataError
from common.inferers import CenterCropStitchInferer
from common.networks.context_gan import ContextFCNGenerator

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "context_gan_synthesis" / "configs"
SPEC = next(b for b in BUNDLES if b.name == "context_gan_synthesis")


def _workflow(files, root, workflow_type="train", **override) -> ConfigWorkflow:
    """The contract harness's workflow of this bundle: its tiny settings, outputs under ``root``."""
    return workflow(SPEC, files, root, workflow_type, **override)


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    """One epoch (two iterations) of GAN + GDL training on the tiny phantom, killed before its second epoch."""
    root = tmp_path_factory.mktemp("context_gan_trained")
    wf = run(_workflow(["train.json"], root, dataset_dir=tiny_phantom))
    return root, wf


def test_train_writes_full_state_and_paper_objective(trained):
    root, wf = trained
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2
    ckpt = load_checkpoint(root / "models" / "checkpoint_epoch=1.pt")
    assert {"model", "optimizer", "d_patch", "d_patch_optimizer", "trainer"} <= set(ckpt)
    assert set(load_checkpoint(root / "models" / "model.pt")) == set(
        wf.parser.get_parsed_content("gnetwork").state_dict()
    )
    out = collated(trainer.state.output)
    assert {"g_l2", "g_gdl", "g_adv_patch", "d_patch"} <= set(out)
    assert out["image"].shape == (3, 1, 24, 24, 24) and out["label"].shape == out["pred"].shape == (3, 1, 16, 16, 16)
    g_loss = wf.parser.get_parsed_content("g_loss")  # the paper's lambda_1 = 0.5, lambda_2 = lambda_3 = 1
    assert g_loss.pixel_weights == {"l2": 1.0, "gdl": 1.0} and g_loss.adversarial_weights == {"patch": 0.5}
    d_spec = wf.parser.get_parsed_content("train#discriminators")["patch"]
    assert d_spec.loss.real_fake_weight == 1.0  # L_D = BCE(D(Y), 1) + BCE(D(G(X)), 0), not halved
    assert wf.parser.get_parsed_content("g_optimizer").defaults["betas"] == (0.5, 0.999)


def test_paper_generator_in_train_json(tmp_path):
    wf = _workflow(["train.json"], tmp_path, channels=None, kernel_sizes=None, patch_size=None, target_patch_size=None)
    wf.parser.parse(reset=True)
    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net, ContextFCNGenerator) and net.shrink == 16 and net.use_residual
    assert wf.parser.get_parsed_content("stitch_inferer").roi_size == (32, 32, 32)
    assert wf.parser.get_parsed_content("dnetwork_def").input_size == [16, 16, 16]


@pytest.mark.parametrize("dims", [2, 3])
def test_zero_init_last_starts_the_generator_as_its_residual(dims):
    """``zero_init_last``: the untrained generator is the centre crop of the source (0 without the residual)."""
    x = torch.rand(2, 1, *([24] * dims))
    kwargs = {"channels": [4] * 8, "kernel_sizes": [5, 3, 3, 3, 5, 1, 1, 1, 1], "zero_init_last": True}
    out = ContextFCNGenerator(dims, residual=True, **kwargs).eval()(x)
    assert torch.equal(out, x[(slice(None), slice(None)) + (slice(4, 20),) * dims])
    assert torch.count_nonzero(ContextFCNGenerator(dims, residual=False, **kwargs).eval()(x)) == 0
    default = ContextFCNGenerator(dims, residual=False, channels=[4] * 8, kernel_sizes=kwargs["kernel_sizes"])
    assert torch.count_nonzero(default.eval()(x)) > 0  # the paper's random start


def test_demo_overrides_are_the_readme_levers(tmp_path):
    """``demo.json`` (README): dilation 1, 1³ layers after the second unpadded layer, zero-started last layer,
    the authors' code's λ_adv = 0.05; ``train.json`` keeps the paper's dilation 2, 3³ layers and λ_adv = 0.5."""
    demo = json.loads((CONFIGS / "demo.json").read_text())
    assert demo["dilation"] == 1 and demo["kernel_sizes"] == [5, 3, 3, 3, 5, 1, 1, 1, 1]
    assert demo["zero_init_last"] is True and demo["lambda_adv"] == 0.05
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["dilation"] == 2 and train["zero_init_last"] is False and train["lambda_adv"] == 0.5
    net = ContextFCNGenerator(3, kernel_sizes=demo["kernel_sizes"], channels=demo["channels"], dilation=1).eval()
    assert net(torch.rand(1, 1, 24, 24, 24)).shape[2:] == (16, 16, 16)


def test_resume_continues_and_equals_uninterrupted(trained, tiny_phantom, tmp_path):
    root, _ = trained
    shutil.copytree(root / "models", tmp_path / "resumed" / "models")
    wf = run(_workflow(["train.json"], tmp_path / "resumed", dataset_dir=tiny_phantom, resume=True, max_epochs=2))
    assert wf.parser.get_parsed_content("train#trainer").state.iteration == 4
    run(_workflow(["train.json"], tmp_path / "straight", dataset_dir=tiny_phantom, max_epochs=2))
    a = load_checkpoint(tmp_path / "resumed" / "models" / "checkpoint_epoch=2.pt")
    b = load_checkpoint(tmp_path / "straight" / "models" / "checkpoint_epoch=2.pt")
    for name in ("model", "d_patch"):
        for key in b[name]:
            assert torch.allclose(a[name][key].float(), b[name][key].float(), atol=1e-6), (name, key)


@pytest.mark.parametrize("steps", [None, [2, 5, 5], [16, 16, 16]])
def test_stitching_equals_whole_volume_for_equivariant_network_and_covers_border(steps):
    # 1³ kernels between the unpadded layers: no zero padding anywhere, so the network is translation-equivariant
    torch.manual_seed(0)
    net = ContextFCNGenerator(3, channels=[3, 3, 3, 3, 3, 3, 3, 3], kernel_sizes=[9, 1, 1, 1, 9, 1, 1, 1, 1]).eval()
    volume = torch.rand(1, 1, 21, 26, 19)
    inferer = CenterCropStitchInferer(32, 16, overlap=0.25, steps=steps, sw_batch_size=7)
    with torch.no_grad():
        stitched = inferer(volume, net)
        whole = net(torch.nn.functional.pad(volume, [8] * 6, mode="replicate"))
    assert stitched.shape == volume.shape
    assert torch.allclose(stitched, whole, atol=1e-5)
    for axis in (2, 3, 4):  # the first and last voxel planes of every axis are predicted like the interior
        for index in (0, -1):
            assert torch.allclose(stitched.select(axis, index), whole.select(axis, index), atol=1e-5)
    # starts per axis: 21 -> {0, 5} (step 12 or 16) or {0, 2, 4, 5}; 26 -> {0, 10} or {0, 5, 10}; 19 -> {0, 3}
    expected = {None: 2 * 2 * 2, (2, 5, 5): 4 * 3 * 2, (16, 16, 16): 2 * 2 * 2}[tuple(steps) if steps else None]
    assert inferer.num_windows(volume.shape[2:]) == expected
    if steps == [2, 5, 5]:  # the authors' dense stitching of a demo volume: 41 x 21 x 17 windows
        assert inferer.num_windows((96, 112, 96)) == 14637


def _psnr(pred: np.ndarray, target: np.ndarray) -> float:
    return 10 * math.log10(float(target.max() - target.min()) ** 2 / float(np.mean((pred - target) ** 2)))


def test_evaluate_csv_matches_inference_output(trained, tiny_phantom):
    root, _ = trained
    run(_workflow(["train.json", "evaluate.json"], root, dataset_dir=tiny_phantom))
    test_cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
    with open(root / "eval" / "metrics.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {c["subject"] for c in test_cases}
    summary = json.loads((root / "eval" / "summary.json").read_text())["metrics"]
    assert {"mae", "psnr", "ssim", "psnr_brain", "psnr_tumor"} <= set(summary)
    assert (root / "eval" / "figure_grid.png").stat().st_size > 0
    infer_dir = root / "infer"
    run(_workflow(["inference.json"], root, "infer", dataset_dir=tiny_phantom, output_dir=str(infer_dir)))
    for case in test_cases:
        name = case["subject"]
        saved = nib.load(infer_dir / name / f"{name}_t2_synth.nii.gz")
        target_img = nib.load(Path(tiny_phantom) / case["t2"])
        assert saved.shape == target_img.shape
        np.testing.assert_allclose(saved.affine, target_img.affine, atol=1e-4)
        pred, target = np.asarray(saved.dataobj, np.float64), np.asarray(target_img.dataobj, np.float64)
        assert float(rows[name]["psnr"]) == pytest.approx(_psnr(pred, target), abs=1e-3)
        assert float(rows[name]["mae"]) == pytest.approx(np.abs(pred - target).mean(), rel=1e-4)


def test_acm_stage2_dataset_carries_the_previous_stage_aligned(tiny_phantom, tmp_path):
    # the "stage-1 synthesis" is the source file itself: after the shared intensity map the two channels of every
    # patch must then be equal voxel for voxel (any offset between them would show, the source is not constant)
    cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())
    stage_dir = tmp_path / "models" / "stage2"
    stage_dir.mkdir(parents=True)
    lists = {}
    for split in ("training", "validation"):
        lists[split] = [
            dict(
                {k: str(Path(tiny_phantom) / v) if k != "subject" else v for k, v in c.items()},
                acm_prev=str(Path(tiny_phantom) / c["t1ce"]),
            )
            for c in cases[split]
        ]
    (stage_dir / "datalist.json").write_text(json.dumps(lists))
    wf = _workflow(["train.json", "acm_stage.json"], tmp_path, dataset_dir=tiny_phantom, ckpt_dir=None, output_dir=None)
    wf.parser.parse(reset=True)
    assert wf.parser.get_parsed_content("input_keys") == ["t1ce", "acm_prev"]
    assert wf.parser.get_parsed_content("network_def").in_channels == 2
    dataset = wf.parser.get_parsed_content("train#dataset")
    for i in range(4):
        sample = dataset[i][0]
        image = sample["image"]
        assert image.shape == (2, 24, 24, 24) and float(image[0].std()) > 0
        assert torch.equal(image[0], image[1])
    wf = run(
        _workflow(["train.json", "acm_stage.json"], tmp_path, dataset_dir=tiny_phantom, ckpt_dir=None, output_dir=None)
    )
    assert (stage_dir / "model.pt").is_file() and (stage_dir / "checkpoint_epoch=1.pt").is_file()


def test_inference_acm_runs_the_stages_in_sequence(trained, tiny_phantom, tmp_path):
    root, _ = trained
    acm_root = tmp_path / "models"
    (acm_root / "stage2").mkdir(parents=True)
    shutil.copy(root / "models" / "model.pt", acm_root / "model.pt")
    torch.manual_seed(1)
    stage2 = ContextFCNGenerator(
        3,
        in_channels=2,
        channels=SPEC.tiny["channels"],
        kernel_sizes=SPEC.tiny["kernel_sizes"],
        dilation=2,
        residual=True,
    )
    torch.save(stage2.state_dict(), acm_root / "stage2" / "model.pt")
    wf = run(
        _workflow(
            ["inference.json", "inference_acm.json"],
            root,
            "infer",
            dataset_dir=tiny_phantom,
            acm_stages=2,
            acm_root=str(acm_root),
            output_dir=str(tmp_path / "out"),
        )
    )
    cascade = wf.parser.get_parsed_content("network")
    assert len(cascade.stages) == 2 and cascade.stages[1].in_channels == 2
    assert torch.equal(cascade.stages[1].layers[0].conv.weight, stage2.layers[0].conv.weight)
    case = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]["subject"]
    assert (tmp_path / "out" / case / f"{case}_t2_synth.nii.gz").is_file()
    with pytest.raises(Exception) as info:
        run(
            _workflow(
                ["inference.json", "inference_acm.json"],
                root,
                "infer",
                dataset_dir=tiny_phantom,
                acm_stages=3,
                acm_root=str(acm_root),
                output_dir=str(tmp_path / "out3"),
            )
        )
    assert "stage3" in str(info.value) or "stage3" in str(info.value.__cause__)
    assert not (tmp_path / "out3").exists()


ABLATIONS = {  # row: (discriminator used, pixel weights, residual)
    "fcn_l2": (False, {"l2": 1.0, "gdl": 0.0}, True),
    "fcn_gdl": (False, {"l2": 1.0, "gdl": 1.0}, True),
    "gan_no_gdl": (True, {"l2": 1.0, "gdl": 0.0}, True),
    "no_residual": (True, {"l2": 1.0, "gdl": 1.0}, False),
}


@pytest.mark.parametrize("row", sorted(ABLATIONS))
def test_ablation_overrides(row, tiny_phantom, tmp_path):
    wf = _workflow(
        ["train.json", f"ablations/{row}.json"],
        tmp_path,
        dataset_dir=tiny_phantom,
        ckpt_dir=None,
        output_dir=None,
        log_dir=None,
    )
    wf.parser.parse(reset=True)
    uses_d, weights, residual = ABLATIONS[row]
    assert bool(wf.parser.get_parsed_content("train#discriminators")) == uses_d
    assert wf.parser.get_parsed_content("g_loss").pixel_weights == weights
    assert wf.parser.get_parsed_content("network_def").use_residual == residual
    assert wf.parser.get_parsed_content("ckpt_dir").endswith(f"models/{row}")
    if row == "fcn_l2":  # one run: the generator alone, on L2 only
        run(wf)
        out = collated(wf.parser.get_parsed_content("train#trainer").state.output)
        assert set(k for k in out if k.startswith(("g_", "d_"))) == {"g_l2"}


def test_mr_to_ct_task_writes_hounsfield_units(tiny_phantom, tmp_path):
    wf = _workflow(
        ["train.json", "task_mr_to_ct.json"], tmp_path, dataset_dir=tiny_phantom, ckpt_dir=None, output_dir=None
    )
    wf.parser.parse(reset=True)
    assert wf.parser.get_parsed_content("target_key") == "ct" and not wf.parser.get_parsed_content("residual")
    item = wf.parser.get_parsed_content("validate#dataset")[0]
    case = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["validation"][0]
    ct = np.asarray(nib.load(Path(tiny_phantom) / case["ct"]).dataobj, np.float32)
    assert np.allclose(item["label"][0].numpy(), ct)  # the metric's reference stays in HU
    # network space: HU -1000..2000 -> [-1, 1] (noisy air slightly below -1000 HU)
    assert np.allclose(np.asarray(item["ct"][0]), (ct + 1000.0) / 1500.0 - 1.0, atol=1e-5)
    post = wf.parser.get_parsed_content("validate#postprocessing")
    back = post({"pred": item["ct"].clone(), "image_scale": item["image_scale"]})["pred"]
    assert np.allclose(np.asarray(back[0]), ct, atol=1e-2)  # the inverse map returns HU


def _bad_case(tiny_phantom, folder: Path, kind: str):
    src = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]
    img = nib.load(Path(tiny_phantom) / src["t1ce"])
    data, affine = np.asarray(img.dataobj, np.float32), img.affine
    path = folder / "t1ce.nii.gz"
    case = {"subject": "bad", "t1ce": path.name, "t2": str(Path(tiny_phantom) / src["t2"])}
    named = str(path)
    if kind == "2d":
        data = data[:, :, 0]
    elif kind == "nan":
        data = data.copy()
        data[2, 3, 4] = np.nan
    elif kind == "shape":
        data = data[:, :, :-2]
    nib.save(nib.Nifti1Image(data, affine), str(path))
    if kind == "missing_key":
        case.pop("t1ce")
        named = "'t1ce'"
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"test": [case]}))
    return datalist, named


@pytest.mark.parametrize(
    "kind,config,expected",
    [
        ("2d", "inference", "2D"),
        ("nan", "inference", "NaN"),
        ("missing_key", "inference", "key"),
        ("shape", "evaluate", "shape"),
    ],
)
def test_bad_inputs_fail_clearly_and_write_nothing(kind, config, expected, trained, tiny_phantom, tmp_path):
    root, _ = trained
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    datalist, named = _bad_case(tiny_phantom, data_dir, kind)
    files = ["inference.json"] if config == "inference" else ["train.json", "evaluate.json"]
    wf = _workflow(
        files,
        root,
        "infer" if config == "inference" else "train",
        datalist=str(datalist),
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(Exception) as info:
        run(wf)
    error = info.value
    while error is not None and not isinstance(error, InputDataError):
        error = error.__cause__
    assert isinstance(error, InputDataError), info.value
    assert named in str(error) and expected in str(error)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != data_dir] == []
