"""Resolution transforms: bicubic and k-space degradations, interpolation, cropping and the SR output grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.data import MetaTensor

from common.transforms.degradation import (
    BicubicDegraded,
    CropToMultipled,
    InterpolateResolutiond,
    KSpaceTruncated,
    SuperResolutionGeometryd,
    scaled_affine,
)


def _affine(spacing=(0.75, 0.8, 3.0)) -> torch.Tensor:
    a, b = np.deg2rad(20), np.deg2rad(10)  # oblique, LPS-like
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    m[:3, 3] = [12.0, -4.5, 7.0]
    return torch.as_tensor(m)


def _corners(affine, shape) -> np.ndarray:
    """World coordinates of the outer corners of the field of view (voxel edges, not centres)."""
    lo, hi = -0.5, np.asarray(shape) - 0.5
    pts = np.array([[lo, lo, lo, 1.0], [hi[0], hi[1], hi[2], 1.0]])
    return (np.asarray(affine) @ pts.T).T[:, :3]


def _hr(shape=(16, 24, 3), seed=0) -> MetaTensor:
    g = torch.Generator().manual_seed(seed)
    return MetaTensor(torch.rand(1, *shape, generator=g) * 100, affine=_affine())


@pytest.mark.parametrize("transform", [BicubicDegraded, KSpaceTruncated])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_degradation_grid_spacing_and_extent(transform, scale):
    hr = _hr()
    lr = transform("image", scale=scale, output_keys="lr")({"image": hr})["lr"]
    assert lr.shape == (1, 16 // scale, 24 // scale, 3)
    spacing = np.linalg.norm(np.asarray(lr.affine)[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, [0.75 * scale, 0.8 * scale, 3.0], rtol=1e-6)
    np.testing.assert_allclose(_corners(lr.affine, lr.shape[1:]), _corners(hr.affine, hr.shape[1:]), atol=1e-6)


@pytest.mark.parametrize("transform", [BicubicDegraded, KSpaceTruncated])
def test_degradation_keeps_constants_and_the_mean(transform):
    flat = MetaTensor(torch.full((1, 16, 16, 2), 7.0), affine=torch.eye(4))
    lr = transform("image", scale=4)({"image": flat})["image"]
    torch.testing.assert_close(lr.as_tensor(), torch.full((1, 4, 4, 2), 7.0))
    hr = _hr()
    lr = transform("image", scale=2)({"image": hr})["image"]
    assert float(lr.mean()) == pytest.approx(float(hr.mean()), rel=0.02)


def test_kspace_samples_band_limited_image_at_lr_voxel_centres():
    n, s = 32, 4
    x = torch.arange(n, dtype=torch.float64)
    wave = torch.cos(2 * torch.pi * 2 * x / n)  # 2 cycles: inside the LR band (Nyquist of 8 samples = 4 cycles)
    image = (wave[:, None] * torch.ones(1, 8, dtype=torch.float64))[None].float()
    lr = KSpaceTruncated("image", scale=s, spatial_axes=(0, 1), magnitude=False)({"image": image})["image"]
    centres = torch.arange(n // s, dtype=torch.float64) * s + (s - 1) / 2
    expected = torch.cos(2 * torch.pi * 2 * centres / n)
    torch.testing.assert_close(lr[0, :, 0].double(), expected, atol=1e-5, rtol=0)


def test_bicubic_other_axes_and_plain_tensors():
    image = torch.rand(1, 3, 8, 12)  # slices on axis 0, in-plane axes (1, 2)
    lr = BicubicDegraded("image", scale=2, spatial_axes=(1, 2))({"image": image})["image"]
    assert lr.shape == (1, 3, 4, 6) and not isinstance(lr, MetaTensor)
    for k in range(3):  # slice by slice: the same as degrading each 2D slice alone
        alone = BicubicDegraded("image", scale=2)({"image": image[:, k]})["image"]
        torch.testing.assert_close(lr[:, k], alone)


def test_not_a_multiple_of_the_scale_is_an_error_and_crop_fixes_it():
    hr = _hr((18, 26, 2))
    with pytest.raises(ValueError, match="not a multiple of the scale 4"):
        BicubicDegraded("image", scale=4)({"image": hr})
    cropped = CropToMultipled("image", k=4)({"image": hr})["image"]
    assert cropped.shape == (1, 16, 24, 2)
    np.testing.assert_allclose(np.asarray(cropped.affine), np.asarray(hr.affine), atol=1e-6)  # trailing crop
    torch.testing.assert_close(cropped.as_tensor(), hr.as_tensor()[:, :16, :24])
    with pytest.raises(ValueError, match="spatial_axes"):
        BicubicDegraded("image", scale=2, spatial_axes=(0, 0))
    with pytest.raises(ValueError, match="scale"):
        BicubicDegraded("image", scale=0)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_sr_geometry_restores_the_hr_grid(scale):
    hr = _hr()
    data = BicubicDegraded("image", scale=scale)({"image": hr, "label": hr})
    lr = data["image"]
    data["pred"] = torch.zeros(1, 16, 24, 3)  # a network output: plain tensor, HR size
    out = SuperResolutionGeometryd("pred", reference_key="image", scale=scale)(data)["pred"]
    assert isinstance(out, MetaTensor) and out.shape == hr.shape
    np.testing.assert_allclose(np.asarray(out.affine), np.asarray(hr.affine), atol=1e-6)  # exact round trip
    np.testing.assert_allclose(_corners(out.affine, out.shape[1:]), _corners(lr.affine, lr.shape[1:]), atol=1e-6)
    bic = InterpolateResolutiond("image", scale=scale, output_keys="bicubic")(data)["bicubic"]
    assert bic.shape == hr.shape
    np.testing.assert_allclose(np.asarray(bic.affine), np.asarray(hr.affine), atol=1e-6)
    data["pred"] = torch.zeros(1, 16, 24, 4)
    with pytest.raises(ValueError, match="expected"):
        SuperResolutionGeometryd("pred", scale=scale)(data)


def test_scaled_affine_known_answer():
    a = torch.diag(torch.tensor([2.0, 3.0, 1.0, 1.0], dtype=torch.float64))
    out = scaled_affine(a, {0: 4, 1: 0.5})
    expected = torch.tensor([[8.0, 0, 0, 3.0], [0, 1.5, 0, -0.75], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


def test_bicubic_upsampling_of_smooth_image_beats_nearest():
    x = torch.linspace(0, 1, 32)
    image = (torch.sin(3 * x)[:, None] * torch.cos(2 * x)[None, :])[None]
    lr = BicubicDegraded("image", scale=4)({"image": image})["image"]
    up = {m: InterpolateResolutiond("image", scale=4, mode=m)({"image": lr})["image"] for m in ("bicubic", "nearest")}
    err = {m: float(((v - image) ** 2).mean()) for m, v in up.items()}
    assert err["bicubic"] < err["nearest"]
