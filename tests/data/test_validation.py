from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from common.data.validation import InputDataError, check_cases, check_output_dir, load_datalist, read_image
from common.data.datalist import write_datalist

AFFINE = np.diag([1.0, 1.2, 2.0, 1.0])


def _nii(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return str(path)


@pytest.fixture
def case(tmp_path):
    rng = np.random.default_rng(0)
    return {
        "subject": "s0",
        "t1": _nii(tmp_path / "t1.nii.gz", rng.random((6, 7, 5))),
        "t1ce": _nii(tmp_path / "t1ce.nii.gz", rng.random((6, 7, 5))),
    }


def test_good_case_passes(case):
    assert check_cases([case, case], ["t1", "t1ce"]) == 2


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda c, d: c.pop("t1ce"), r"has no \['t1ce'\] key"),
        (lambda c, d: c.update(t1ce=str(d / "nope.nii.gz")), "nope.nii.gz' does not exist"),
        (lambda c, d: c.update(t1ce=_nii(d / "nan.nii.gz", np.full((6, 7, 5), np.nan))), "nan.nii.gz.*NaN/Inf"),
        (lambda c, d: c.update(t1ce=_nii(d / "flat.nii.gz", np.zeros((6, 7)))), "flat.nii.gz.*needs 3D"),
        (lambda c, d: c.update(t1ce=_nii(d / "multi.nii.gz", np.zeros((6, 7, 5, 2)))), "multi.nii.gz.*2 channels"),
        (lambda c, d: c.update(t1ce=_nii(d / "shape.nii.gz", np.zeros((6, 7, 4)))), r"shape.nii.gz.*\(6, 7, 4\).*t1.nii.gz"),
        (lambda c, d: c.update(t1ce=_nii(d / "aff.nii.gz", np.zeros((6, 7, 5)), np.diag([1.0, 1.2, 2.5, 1.0]))), "aff.nii.gz.*affine"),
    ],
)
def test_bad_inputs_name_the_problem(case, tmp_path, mutate, match):
    mutate(case, tmp_path)
    with pytest.raises(InputDataError, match=match):
        check_cases([case], ["t1", "t1ce"])


def test_corrupt_file(case, tmp_path):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really a gzip file")
    case["t1ce"] = str(bad)
    with pytest.raises(InputDataError, match="corrupt.nii.gz.*cannot be read"):
        check_cases([case], ["t1", "t1ce"])


def test_header_only_mode_skips_finite_check(case, tmp_path):
    case["t1ce"] = _nii(tmp_path / "nan.nii.gz", np.full((6, 7, 5), np.nan))
    assert check_cases([case], ["t1", "t1ce"], check_finite=False) == 1


def test_itk_formats_are_read(tmp_path):
    import itk

    arr = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    img = itk.image_from_array(arr)
    img.SetSpacing([2.0, 1.5, 1.0])
    path = str(tmp_path / "vol.mha")
    itk.imwrite(img, path)
    shape, affine, data = read_image(path)
    assert shape == (7, 6, 5)  # ITK (z, y, x) array -> MONAI (x, y, z)
    assert np.allclose(np.abs(np.diag(affine))[:3], [2.0, 1.5, 1.0])
    assert data.sum() == arr.sum()


def test_datalist_and_output_dir(tmp_path, case):
    with pytest.raises(InputDataError, match="make_demo_data"):
        load_datalist(str(tmp_path / "datalist.json"), "test")
    path = write_datalist(tmp_path / "datalist.json", {"training": [case], "test": []})
    assert load_datalist(str(path), "training")[0]["t1"] == case["t1"]
    rel = write_datalist(tmp_path / "rel.json", {"training": [{"t1": "missing/t1.nii.gz", "subject": "s0"}]})
    entry = load_datalist(str(rel), "training")[0]
    assert entry["t1"] == str(tmp_path / "missing" / "t1.nii.gz") and entry["subject"] == "s0"
    with pytest.raises(InputDataError, match="empty 'test'"):
        load_datalist(str(path), "test")
    assert check_output_dir(str(tmp_path / "out" / "deep")) == str(tmp_path / "out" / "deep")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputDataError, match="not writable"):
        check_output_dir(str(blocker / "sub"))
