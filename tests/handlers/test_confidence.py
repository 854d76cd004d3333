"""Confidence-map helpers of the dual-discriminator bundle: ``LocalConfidence`` and ``ConfidenceMapSaver``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from monai.inferers import SliceInferer

from common.handlers.confidence import ConfidenceMapSaver, LocalConfidence
from common.networks.dual_discriminator import LocalDiscriminator


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_local_confidence_is_sigmoid_of_d2_and_keeps_the_mode(spatial_dims):
    net = LocalDiscriminator(spatial_dims, channels=(2, 2, 2)).train()
    x = torch.randn(2, 1, *([8] * spatial_dims))
    conf = LocalConfidence(net, key="pred")({"pred": x})
    with torch.no_grad():
        expected = torch.sigmoid(net.eval()(x))
    net.train()
    torch.testing.assert_close(conf, expected)
    assert conf.shape == (2, 1, *([8] * spatial_dims)) and not conf.requires_grad
    LocalConfidence(net)(x)
    assert net.training  # restored after the call


def test_local_confidence_slice_by_slice_for_a_2d_network():
    net = LocalDiscriminator(2, channels=(2, 2, 2))
    volume = torch.randn(1, 1, 8, 10, 3)
    conf = LocalConfidence(net, inferer=SliceInferer(roi_size=(-1, -1), spatial_dim=2, progress=False))(volume)
    assert conf.shape == volume.shape
    with torch.no_grad():
        torch.testing.assert_close(conf[..., 1], torch.sigmoid(net.eval()(volume[..., 1])))


def test_saver_writes_one_row_per_case_with_four_columns(tmp_path):
    net = LocalDiscriminator(3, channels=(2, 2, 2))
    saver = ConfidenceMapSaver(net, str(tmp_path), beta=2.0, num_cases=2, slice_axis=2)
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    shape = (1, 12, 10, 6)
    items = [
        {
            "pred": torch.rand(shape),
            "label": torch.rand(shape),
            "pred_normalized": torch.rand(shape),
            "subject": f"c{i}",
        }
        for i in range(3)
    ]
    engine.state.batch = items
    engine.state.output = items
    engine.state.epoch = 1
    saver.reset()
    saver(engine)
    saver.write(engine)
    image = np.asarray(Image.open(tmp_path / "confidence_maps.png"))
    assert len(saver.rows) == 2 and [r["name"] for r in saver.rows] == ["c0", "c1"]
    assert image.shape == (14 + 2 * (14 + 10 + 4), 4 + 4 * (12 + 4))  # rot90 slices of 12 x 10
    assert 0.0 <= saver.rows[0]["confidence"].min() and saver.rows[0]["confidence"].max() <= 1.0
    with pytest.raises(ValueError, match="beta"):
        ConfidenceMapSaver(net, str(tmp_path), beta=-1.0)
