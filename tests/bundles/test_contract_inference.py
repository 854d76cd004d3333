"""The bundle contract, inference side, on every bundle of ``tests/bundles/contract.py::BUNDLES``: evaluation
equals inference, geometry, case naming, every bad input of contract section 6, the command line's last line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from contract import (
    BUNDLES,
    abs_case,
    bad_case,
    cli,
    error_in_chain,
    files_under,
    load,
    oblique_affine,
    output_path,
    psnr,
    run,
    save_like,
    workflow,
    write_datalist,
)

from common.data.validation import InputDataError

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
    files = spec.eval_infer_configs or spec.infer_configs
    wf = run(workflow(spec, files, root, "infer", dataset_dir=tiny_phantom, output_dir=str(out)))
    for case in cases:
        pred, _ = load(output_path(spec, wf, out, case["subject"]))
        target, _ = load(Path(tiny_phantom) / case[spec.target_key])
        peak = float(target.max() - target.min())  # the target file's range, also for a masked target
        if spec.eval_target_mask:
            target = target * (load(Path(tiny_phantom) / case[spec.eval_target_mask])[0] > 0)
        assert float(rows[case["subject"]]["psnr"]) == pytest.approx(psnr(pred, target, peak), abs=1e-3)


def test_inference_keeps_oblique_lps_geometry(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    affine, entry = oblique_affine(), {"subject": "oblique_case"}
    for key in (*spec.source_keys, *spec.extra_infer_keys):
        data, _ = load(case[key])
        entry[key] = save_like(case[key], tmp_path / f"{key}.nii.gz", data[:27, :33, :], affine)  # odd sizes
    datalist = write_datalist(tmp_path / "datalist.json", test=[entry])
    out = tmp_path / "out"
    wf = run(workflow(spec, spec.infer_configs, root, "infer", datalist=str(datalist), output_dir=str(out)))
    pred, pred_affine = load(output_path(spec, wf, out, "oblique_case"))
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
    written = files_under(out)
    assert written == [output_path(spec, wf, out, "case1"), output_path(spec, wf, out, "case2")]
    assert not np.array_equal(load(written[0])[0], load(written[1])[0])


def test_duplicate_case_names_are_refused(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    datalist = write_datalist(tmp_path / "datalist.json", test=[dict(case, subject="same"), dict(case, subject="same")])
    with pytest.raises(Exception) as info:
        run(workflow(spec, spec.infer_configs, root, "infer", datalist=str(datalist), output_dir=str(tmp_path / "out")))
    assert "same" in str(error_in_chain(info.value, InputDataError))
    assert not (tmp_path / "out").exists() or files_under(tmp_path / "out") == []


@pytest.mark.parametrize("kind,config", BAD, ids=[k for k, _ in BAD])
def test_bad_input_fails_clearly_and_writes_nothing(spec, kind, config, trained, tiny_phantom, tmp_path):
    if kind in ("shape", "affine") and not spec.paired:
        pytest.skip("source and target are one image at two grids (super-resolution): no pair to mismatch")
    root, _ = trained
    (tmp_path / "data").mkdir()
    out, extra = tmp_path / "out", {}
    if kind in ("unwritable", "bad_checkpoint", "truncated_checkpoint"):
        case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
        named = ""
    else:
        case, named = bad_case(spec, tiny_phantom, tmp_path / "data", kind)
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
    written = [p for p in files_under(tmp_path) if "data" not in p.relative_to(tmp_path).parts and p.name != "a_file"]
    assert written == []  # no output file of any kind


def test_constant_source_is_warned_about(spec, trained, tiny_phantom, tmp_path):
    root, _ = trained
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    key = spec.source_keys[0]
    case[key] = save_like(case[key], tmp_path / "zero.nii.gz", np.zeros_like(load(case[key])[0]))
    datalist = write_datalist(tmp_path / "datalist.json", test=[dict(case, subject="flat")])
    with pytest.warns(UserWarning, match="flat"):
        run(workflow(spec, spec.infer_configs, root, "infer", datalist=str(datalist), output_dir=str(tmp_path / "out")))


def test_command_line_refused_input_ends_with_the_culprit(tiny_phantom, tmp_path):
    """A refused input exits non-zero and the last line a user sees names the file (not MONAI's wrapper)."""
    bundle = BUNDLES[0]
    case = abs_case(tiny_phantom, json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0])
    case[bundle.source_keys[0]] = str(tmp_path / "missing_source.nii.gz")
    datalist = write_datalist(tmp_path / "datalist.json", test=[case])
    result = cli(
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
