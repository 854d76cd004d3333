"""Bundle ``amcgan_contrast_mri``: what is specific to the AMCGAN paper.

The generic contract (train, resume, evaluate = inference, geometry, bad inputs, non-finite guard, lock,
``check_properties``, amp, command line) runs on this bundle through ``tests/bundles/test_contract.py``. Here:
the paper's objective and its terms, pix2pix's initialisation and schedule, the Table I rows, the tumour-slice
PSNR protocol and the de-normalisation of the output.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import BUNDLES, run, workflow

SPEC = next(b for b in BUNDLES if b.name == "amcgan_contrast_mri")


def _workflow(files, root, workflow_type="train", **override):
    return workflow(SPEC, files, root, workflow_type, **override)


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    """One tiny epoch (two iterations) of AMCGAN training."""
    root = tmp_path_factory.mktemp("amcgan_trained")
    wf = run(_workflow(["train.json"], root, dataset_dir=tiny_phantom))
    return root, wf


def test_objective_is_bce_cgan_plus_100_l1(trained):
    _, wf = trained
    out = wf.parser.get_parsed_content("train#trainer").state.output[0]  # decollated: one dict per sample
    # the paper's objective: BCE cGAN (generator and PatchGAN) + 100 * L1, each term logged by name
    assert {"g_l1", "g_adv_patch", "d_patch"} <= set(out) and out["pred"].shape == (1, 32, 40)
    g_loss = wf.parser.get_parsed_content("g_loss")
    assert g_loss.pixel_weights == {"l1": 100.0} and g_loss.adversarial_weights == {"patch": 1.0}
    assert wf.parser.get_parsed_content("d_loss").real_fake_weight == 0.5  # pix2pix halves D's objective


def test_initialize_applies_pix2pix_normal_init(tiny_phantom, tmp_path):
    wf = _workflow(["train.json"], tmp_path, dataset_dir=tiny_phantom, channels=16)
    wf.initialize()  # validates the data and initialises the networks; nothing is trained
    net = wf.parser.get_parsed_content("gnetwork_def")
    bn = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(float(bn.mean()) - 1.0) < 0.01 and 0.01 < float(bn.std()) < 0.03  # N(1, 0.02), default: all 1
    conv = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(conv.std()) - 0.02) < 0.002 and abs(float(conv.mean())) < 0.002  # N(0, 0.02)
    biases = [m.bias for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert biases and all(float(b.abs().max()) == 0.0 for b in biases)
    assert float(net.fam.beta) == 0.0
    dnet = wf.parser.get_parsed_content("dnetwork_def")
    first = dnet.model.conv1.conv.weight
    assert abs(float(first.std()) - 0.02) < 0.005 and float(dnet.model.conv1.conv.bias.abs().max()) == 0.0
    assert not (tmp_path / "models" / "checkpoint_epoch=1.pt").exists()
    wf.finalize()  # releases the training lock taken by initialize


def test_lr_schedule_is_constant_then_linear_decay(tmp_path):
    wf = _workflow(["train.json"], tmp_path, n_epochs_constant=300, n_epochs_decay=100)
    wf.parser.parse(reset=True)
    assert wf.parser.get_parsed_content("max_epochs") == 400
    factor = wf.parser.get_parsed_content("lr_lambda")
    # LambdaLR's step count during epoch e (1-based) is e - 1; pix2pix: 1 - max(0, e - 300) / 101
    assert [factor(e - 1) for e in (1, 300, 301, 400)] == pytest.approx([1.0, 1.0, 1 - 1 / 101, 1 / 101])
    assert wf.parser.get_parsed_content("g_optimizer").defaults["betas"] == (0.5, 0.999)
    assert wf.parser.get_parsed_content("d_optimizer").defaults["lr"] == pytest.approx(2e-4)


def _psnr(pred: np.ndarray, target: np.ndarray) -> float:
    peak = float(target.max() - target.min())
    return 10 * math.log10(peak**2 / float(np.mean((pred - target) ** 2)))


def test_tumour_slice_psnr_follows_the_papers_protocol(trained, tiny_phantom):
    """``psnr_tumor_slices`` = mean PSNR of the slices that contain tumour, on what inference writes."""
    root, _ = trained
    run(_workflow(["train.json", "evaluate.json"], root, dataset_dir=tiny_phantom))
    test_cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
    with open(root / "eval" / "metrics.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    summary = json.loads((root / "eval" / "summary.json").read_text())
    for column in ("psnr_brain", "mae_tumor", "psnr_tumor_slices"):
        assert column in summary["metrics"]
    infer_dir = root / "infer"
    run(_workflow(["inference.json"], root, "infer", dataset_dir=tiny_phantom, output_dir=str(infer_dir)))
    with_tumour = 0
    for case in test_cases:
        name, row = case["subject"], rows[case["subject"]]
        pred = np.asarray(nib.load(infer_dir / name / f"{name}_t1ce_synth.nii.gz").dataobj, dtype=np.float64)
        target = np.asarray(nib.load(Path(tiny_phantom) / case["t1ce"]).dataobj, dtype=np.float64)
        tumour = np.asarray(nib.load(Path(tiny_phantom) / case["tumor_mask"]).dataobj) > 0
        assert float(row["mae"]) == pytest.approx(np.abs(pred - target).mean(), rel=1e-4)
        slices = [k for k in range(target.shape[2]) if tumour[..., k].any()]
        if slices:
            expected = np.mean([_psnr(pred[..., k], target[..., k]) for k in slices])
            assert float(row["psnr_tumor_slices"]) == pytest.approx(expected, abs=1e-3)
            with_tumour += 1
        else:
            assert row["psnr_tumor_slices"] == ""
    assert with_tumour >= 1  # the tumour-slice PSNR was checked on at least one case


def test_output_is_denormalised_into_the_source_units(trained, tmp_path):
    root, _ = trained
    rng = np.random.default_rng(0)
    data = (rng.random((27, 33, 7)) * 1500).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "t1.nii.gz"))
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"subject": "case", "t1": "t1.nii.gz"}]}))
    out = tmp_path / "out"
    run(_workflow(["inference.json"], root, "infer", datalist=str(datalist), output_dir=str(out)))
    pred = np.asarray(nib.load(out / "case" / "case_t1ce_synth.nii.gz").dataobj, dtype=np.float64)
    # tanh's [-1, 1] maps back through the source's (0, 99.5) percentiles -> [-1, 0.5]: [lo, lo + (hi - lo) * 2 / 1.5]
    lo, hi = np.quantile(data, [0.0, 0.995])
    assert pred.min() >= lo - 1e-2 and pred.max() <= lo + (hi - lo) * 2.0 / 1.5 + 1e-2
    assert pred.std() > 0


ROWS = {"pix2pix": (False, False), "multi_scale": (True, False)}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_ablation_rows_change_the_network(row, tmp_path):
    """Table I rows: pix2pix drops MSFC and FAM, the multi-scale row drops FAM; each keeps its own folders.

    That every row trains is checked by the contract tests (``test_every_override_builds_and_trains_one_epoch``).
    """
    wf = _workflow(["train.json", f"ablations/{row}.json"], tmp_path, ckpt_dir=None, output_dir=None, log_dir=None)
    wf.parser.parse(reset=True)
    net = wf.parser.get_parsed_content("network_def")
    assert (net.use_msfc, net.use_fam) == ROWS[row]
    assert wf.parser.get_parsed_content("ckpt_dir").endswith(f"/models/{row}")

    full = _workflow(["train.json"], tmp_path / "full")
    full.parser.parse(reset=True)
    amcgan = full.parser.get_parsed_content("network_def")
    assert (amcgan.use_msfc, amcgan.use_fam) == (True, True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    if row == "pix2pix":
        assert count(net) < count(amcgan) and not hasattr(net.msfc, "branches")
    else:
        assert count(net) == count(amcgan) - 1  # FAM adds exactly its scale beta


DEMO_LEVERS = (
    "dropout",
    "norm",
    "lesion_loss_weight",
    "lesion_loss_threshold",
    "lambda_adv",
    "max_epochs",
    "n_epochs_decay",
    "learning_rate",
    "slices_per_volume",
    "val_interval",
)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_ablation_rows_keep_the_demo_levers(row, tmp_path):
    """Stacked after demo.json, an ablation row changes only the generator's MSFC/FAM switches: it keeps the demo's
    residual wrapper and every other demo lever, so ``scripts/run_ablations.py`` compares rows at equal budgets."""
    from common.networks.residual import ResidualOutput

    parsed = {}
    for name, files in (
        ("default", ["train.json", "demo.json"]),
        (row, ["train.json", "demo.json", f"ablations/{row}.json"]),
    ):
        wf = _workflow(files, tmp_path / name, ckpt_dir=None, output_dir=None, log_dir=None)
        wf.parser.parse(reset=True)
        net = wf.parser.get_parsed_content("network_def")
        assert isinstance(net, ResidualOutput)
        parsed[name] = ({k: wf.parser.get_parsed_content(k) for k in DEMO_LEVERS}, (net.use_msfc, net.use_fam))
    assert parsed[row][0] == parsed["default"][0]
    assert parsed[row][1] == ROWS[row] and parsed["default"][1] == (True, True)


def test_paper_objective_is_plain_l1_and_the_demo_weights_the_enhancement(tmp_path):
    """train.json: ``lesion_loss_weight`` 0, the ``l1`` term is exactly L1 (the paper); demo.json weights it up."""
    from common.losses.weighted import DifferenceWeightedL1Term

    torch.manual_seed(0)
    pred, target, image = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    values = {}
    for name, files in (("paper", ["train.json"]), ("demo", ["train.json", "demo.json"])):
        wf = _workflow(files, tmp_path / name)
        wf.parser.parse(reset=True)
        term = wf.parser.get_parsed_content("g_loss").pixel_losses["l1"]
        assert isinstance(term, DifferenceWeightedL1Term) and term.key == "image"
        values[name] = (term.loss.lesion_weight, term(pred, target, fake_outputs={}, batch={"image": image}))
    assert values["paper"] == (0.0, torch.nn.L1Loss()(pred, target))
    assert values["demo"][0] > 0 and float(values["demo"][1]) > float(values["paper"][1])


def test_demo_generator_is_residual_and_starts_as_the_source(tiny_phantom, tmp_path):
    """demo.json wraps the generator in ResidualOutput; after pix2pix's init its last layer is zero again."""
    from common.networks.residual import ResidualOutput

    wf = _workflow(["train.json", "demo.json"], tmp_path, dataset_dir=tiny_phantom)
    wf.initialize()
    net = wf.parser.get_parsed_content("gnetwork_def")
    assert isinstance(net, ResidualOutput) and (net.use_msfc, net.use_fam) == (True, True)
    convs = [m.weight.detach() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert float(torch.cat([w.flatten() for w in convs[:-1]]).std()) == pytest.approx(0.02, abs=0.003)  # normal_init
    assert float(convs[-1].abs().sum()) == 0.0  # ... and the last layer was zeroed after it
    x = torch.rand(3, 1, 32, 40) * 1.5 - 1.0
    assert torch.equal(net.eval()(x), x)
    wf.finalize()
