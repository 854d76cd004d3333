from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from monai.transforms import LoadImaged, SaveImaged

from common.transforms import SetCaseNamed, case_name_formatter


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
    SaveImaged("image", output_dir=str(out), output_postfix="synth", separate_folder=True, resample=False,
               output_name_formatter=case_name_formatter, print_log=False)(d)
    path = out / expected / f"{expected}_synth.nii.gz"
    assert path.exists()
    assert np.allclose(nib.load(str(path)).affine, affine, atol=1e-5)


def test_formatter_fallback():
    assert case_name_formatter({"filename_or_obj": "/a/b/sub-1_t1.nii.gz"}) == {"subject": "sub-1_t1", "idx": None}
