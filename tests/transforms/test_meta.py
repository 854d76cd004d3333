from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from monai.data import MetaTensor
from monai.transforms import LoadImaged, SaveImaged

from common.transforms import CASE_NAME, SetCaseNamed, case_name_formatter


@pytest.mark.parametrize("subject,expected", [("subject_007", "subject_007"), (None, "IXI002-Guys-0828-T1")])
def test_saved_as_case_folder_and_name(tmp_path, subject, expected):
    affine = np.array([[-0.9, 0.1, 0, 10], [0.1, 0.9, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    src = tmp_path / "IXI002-Guys-0828-T1.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(5, 6, 4).astype(np.float32), affine), str(src))
    d = {"image": str(src)}
    if subject:
        d["subject"] = subject
    d = SetCaseNamed("image")(LoadImaged("image", ensure_channel_first=True)(d))
    out = tmp_path / "out"
    SaveImaged(
        "image",
        output_dir=str(out),
        output_postfix="synth",
        separate_folder=True,
        resample=False,
        output_name_formatter=case_name_formatter,
        print_log=False,
    )(d)
    path = out / expected / f"{expected}_synth.nii.gz"
    assert path.exists()
    assert np.allclose(nib.load(str(path)).affine, affine, atol=1e-5)


def test_formatter_fallback():
    assert case_name_formatter({"filename_or_obj": "/a/b/sub-1_t1.nii.gz"}) == {"subject": "sub-1_t1", "idx": None}


def test_case_folders_without_subject_do_not_overwrite(tmp_path):
    """``case1/t1.nii.gz``, ``case2/t1.nii.gz``, ...: one output per case, named after its folder."""
    from common.data.naming import assign_case_names

    rng = np.random.default_rng(0)
    cases = []
    for i in range(1, 4):
        (tmp_path / f"case{i}").mkdir()
        path = tmp_path / f"case{i}" / "t1.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((4, 5, 3)).astype(np.float32), np.eye(4)), str(path))
        cases.append({"image": str(path)})
    assign_case_names(cases, "image")
    out = tmp_path / "out"
    load, name = LoadImaged("image", ensure_channel_first=True), SetCaseNamed("image")
    save = SaveImaged(
        "image",
        output_dir=str(out),
        output_postfix="synth",
        separate_folder=True,
        resample=False,
        output_name_formatter=case_name_formatter,
        print_log=False,
    )
    for case in cases:
        save(name(load(case)))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == [f"case{i}/case{i}_synth.nii.gz" for i in range(1, 4)]


def test_subject_turned_into_path_gives_basename(tmp_path):
    img = MetaTensor(torch.zeros(1, 2, 2, 2), meta={"filename_or_obj": str(tmp_path / "subject_003" / "t1.nii.gz")})
    d = SetCaseNamed("image")({"image": img, "subject": str(tmp_path / "subject_003")})
    assert d["image"].meta[CASE_NAME] == "subject_003"
    d = SetCaseNamed("image")({"image": MetaTensor(torch.zeros(1, 2, 2, 2), meta={"filename_or_obj": "/a/T1.NII.GZ"})})
    assert d["image"].meta[CASE_NAME] == "T1"
    assert case_name_formatter(d["image"].meta) == {"subject": "T1", "idx": None}
    assert case_name_formatter({}) == {"subject": "case", "idx": None}
