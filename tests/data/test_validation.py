from __future__ import annotations

import io
import re
import traceback
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

from common.data.datalist import write_datalist
from common.data.validation import (
    InputDataError,
    check_cases,
    check_checkpoint,
    check_output_dir,
    load_datalist,
    read_image,
)
from common.utils.errors import UserError

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
        (
            lambda c, d: c.update(t1ce=_nii(d / "shape.nii.gz", np.random.rand(6, 7, 4))),
            r"shape.nii.gz.*\(6, 7, 4\).*t1.nii.gz",
        ),
        (
            lambda c, d: c.update(t1ce=_nii(d / "aff.nii.gz", np.random.rand(6, 7, 5), np.diag([1.0, 1.2, 2.5, 1.0]))),
            "aff.nii.gz.*affine",
        ),
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


def test_truncated_nifti_names_the_file(tmp_path):
    rng = np.random.default_rng(1)
    case = {"t1": _nii(tmp_path / "t1.nii.gz", rng.random((30, 30, 30)))}
    raw = (tmp_path / "t1.nii.gz").read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) * 2 // 3])
    case["t1ce"] = str(bad)
    assert check_cases([case], ["t1", "t1ce"], check_finite=False) == 1  # the header is intact
    with pytest.raises(InputDataError, match="truncated.nii.gz' cannot be read.*Compressed file ended") as info:
        check_cases([case], ["t1", "t1ce"], check_finite=True)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    with pytest.raises(InputDataError, match="truncated.nii.gz"):
        read_image(str(bad))


def test_nifti_read_with_nibabel_matches_header(tmp_path):
    data = np.random.default_rng(2).random((6, 7, 5)).astype(np.float32)
    path = _nii(tmp_path / "x.NII.GZ", data)
    shape, affine, read = read_image(path)
    assert shape == (6, 7, 5) and np.allclose(affine, AFFINE) and np.array_equal(read, data)
    assert read_image(path, load_data=False)[2] is None


def test_constant_image_warns_but_masks_do_not(case, tmp_path):
    case["t1ce"] = _nii(tmp_path / "zeros.nii.gz", np.zeros((6, 7, 5)))
    case["brain_mask"] = _nii(tmp_path / "mask.nii.gz", np.zeros((6, 7, 5)))
    case["tumor"] = _nii(tmp_path / "tumor.nii.gz", np.zeros((6, 7, 5)))
    with pytest.warns(UserWarning, match=r"case 's0'.*zeros.nii.gz' \(key 't1ce'\) is constant") as record:
        assert check_cases([case], ["t1", "t1ce", "brain_mask"], mask_keys=["brain_mask"], optional_keys=["tumor"]) == 1
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_cases([case], ["t1", "t1ce"], check_finite=False)  # headers only: no data, no warning
        check_cases([case], ["t1", "brain_mask"], mask_keys=["brain_mask"])


def test_inf_and_shared_file_read_once(case, tmp_path, monkeypatch):
    from common.data import validation

    data = np.ones((6, 7, 5))
    data[1, 2, 3] = np.inf
    inf_case = dict(case, t1ce=_nii(tmp_path / "inf.nii.gz", data))
    with pytest.raises(InputDataError, match=r"inf.nii.gz' \(key 't1ce'\) has 1 NaN/Inf"):
        check_cases([inf_case], ["t1", "t1ce"])
    calls = []
    real = validation.read_image
    monkeypatch.setattr(validation, "read_image", lambda p, load_data=True: calls.append(p) or real(p, load_data))
    assert check_cases([case, dict(case, subject="s1")], ["t1", "t1ce"]) == 2
    assert sorted(calls) == sorted([case["t1"], case["t1ce"]])


def _state_dict():
    return {"conv.weight": torch.randn(2, 1, 3, 3), "conv.bias": torch.zeros(2), "steps": torch.tensor(3)}


def test_checkpoint_valid_files_pass(tmp_path):
    plain = tmp_path / "model.pt"
    torch.save(_state_dict(), plain)
    assert check_checkpoint(str(plain)) is None
    full = tmp_path / "full.pt"
    torch.save({"model": _state_dict(), "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, full)
    assert check_checkpoint(str(full), ["model", "optimizer"]) is None


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not a PyTorch checkpoint"),
        (lambda p: p.write_bytes(_saved_bytes()[: len(_saved_bytes()) // 2]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b""), "truncated or corrupt"),
        (lambda p: None, "does not exist"),
        (lambda p: torch.save({"model": _state_dict()}, p), r"no \['optimizer'\] entries"),
        (lambda p: torch.save({"model": _state_dict(), "optimizer": 3}, p), r"\['optimizer'\] entries are not state"),
        (
            lambda p: torch.save({"model": {"w": torch.tensor([1.0, float("nan")])}, "optimizer": {}}, p),
            "tensor 'model.w' has 1 NaN/Inf",
        ),
        (lambda p: torch.save([torch.ones(1)], p), "holds a list"),
        (
            lambda p: torch.save({"model": _state_dict(), "optimizer": {"x": _Unpicklable()}}, p),
            "pickled Python object",
        ),
    ],
)
def test_checkpoint_refused_with_one_message(tmp_path, make, reason):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(InputDataError) as info:
        check_checkpoint(str(path), required_keys=["model", "optimizer"])
    message = str(info.value)
    assert message.startswith(f"checkpoint '{path}' is not a valid checkpoint: ")
    assert re.search(reason, message), message
    assert message.endswith("; train the bundle first or point --ckpt_path at a model.pt written by it.")
    assert "weights_only" not in message and "\n" not in message
    assert "weights_only" not in "".join(traceback.format_exception(info.value))  # torch's advice is stripped


class _Unpicklable:
    """A plain Python object: not loadable with ``weights_only=True``."""


def _saved_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(_state_dict(), buffer)
    return buffer.getvalue()


def test_image_extensions_still_importable_here():
    from common.data.validation import IMAGE_EXTENSIONS
    from common.utils import extensions

    assert IMAGE_EXTENSIONS is extensions.IMAGE_EXTENSIONS and ".npy" in IMAGE_EXTENSIONS
