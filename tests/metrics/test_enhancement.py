from __future__ import annotations

import math

import pytest
import torch

from common.metrics.enhancement import (
    EnhancementRecoveryMetric,
    FalseEnhancementMetric,
    compute_enhancement_metrics,
    enhancing_region,
)

SHAPES = {2: (1, 12, 10), 3: (1, 8, 10, 6)}


def _case(dims: int, seed: int = 0):
    """source, target (= source + 5 in the rim, label 3), tumour label map, brain mask."""
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[dims]
    source = 10 + torch.rand(shape, generator=g, dtype=torch.float64)
    tumour = torch.zeros(shape, dtype=torch.int64)
    tumour[:, 2:5, 3:6] = 3  # enhancing rim
    tumour[:, 3, 4] = 1  # necrotic core inside
    tumour[:, 5:7, 3:6] = 2  # edema
    brain = torch.zeros(shape)
    brain[:, 1:-1, 1:-1] = 1
    target = source + 5.0 * (tumour == 3)
    return source, target, tumour, brain


@pytest.mark.parametrize("dims", [2, 3])
def test_known_answers(dims):
    source, target, tumour, brain = _case(dims)
    kw = dict(region=tumour, brain=brain)
    perfect = compute_enhancement_metrics(target, target, source, **kw)
    assert perfect["enhancement_recovery"] == pytest.approx(1.0) and perfect["false_enhancement"] == 0.0
    copy = compute_enhancement_metrics(source, target, source, **kw)
    assert copy == {"enhancement_recovery": 0.0, "false_enhancement": 0.0}
    half = compute_enhancement_metrics((source + target) / 2, target, source, **kw)
    assert half["enhancement_recovery"] == pytest.approx(0.5)
    # +2 on every brain voxel outside the rim, -1 on the rest of the image: F = 2, R unchanged (= 1)
    rim = tumour == 3
    pred = target + 2.0 * ((brain > 0) & ~rim) - 1.0 * (brain == 0)
    known = compute_enhancement_metrics(pred, target, source, **kw)
    assert known["enhancement_recovery"] == pytest.approx(1.0) and known["false_enhancement"] == pytest.approx(2.0)
    # negative changes are not enhancement; +4 on a quarter of the outside voxels -> F = 1
    outside = ((brain > 0) & ~rim).flatten().nonzero().flatten()
    gain = torch.zeros(source.numel(), dtype=torch.float64)
    gain[outside[: len(outside) // 4]] = 4.0
    gain[outside[len(outside) // 4 :]] = -3.0
    pred = target + gain.reshape(source.shape)
    expected = 4.0 * (len(outside) // 4) / len(outside)
    assert compute_enhancement_metrics(pred, target, source, **kw)["false_enhancement"] == pytest.approx(expected)
    # without a brain mask: everything outside the rim
    no_brain = compute_enhancement_metrics(target + 1.0, target, source, region=tumour)
    assert no_brain["false_enhancement"] == pytest.approx(1.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_region_from_threshold_and_labels(dims):
    source, target, tumour, brain = _case(dims)
    found = enhancing_region(target, source, threshold=2.5, brain=brain)
    assert torch.equal(found, (tumour == 3) & (brain > 0))
    assert torch.equal(enhancing_region(target, source, tumour, region_label=None), tumour > 0)
    half = compute_enhancement_metrics(source + 0.5 * (target - source), target, source, threshold=2.5, brain=brain)
    assert half["enhancement_recovery"] == pytest.approx(0.5)
    # all tumour labels: the edema and core have no enhancement, so the denominator is diluted, R still 1
    assert compute_enhancement_metrics(target, target, source, tumour, None)["enhancement_recovery"] == pytest.approx(1)


def test_undefined_and_invalid():
    source, target, tumour, brain = _case(2)
    empty = compute_enhancement_metrics(target, target, source, torch.zeros_like(tumour), brain=brain)
    assert math.isnan(empty["enhancement_recovery"])  # no enhancing voxels; the rim's +5 then counts as false
    assert empty["false_enhancement"] == pytest.approx(5.0 * float((tumour == 3).sum()) / float(brain.sum()))
    same = compute_enhancement_metrics(source, source, source, tumour, brain=brain)  # no contrast in the target
    assert math.isnan(same["enhancement_recovery"])
    with pytest.raises(ValueError, match="threshold"):
        compute_enhancement_metrics(target, target, source)
    with pytest.raises(ValueError, match="one shape"):
        compute_enhancement_metrics(target, target, source[:, :-1])
    with pytest.raises(ValueError, match="region"):
        compute_enhancement_metrics(target, target, source, tumour[:, :-1])
    with pytest.raises(ValueError, match="threshold"):
        EnhancementRecoveryMetric(threshold=-1.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_cumulative_metrics(dims):
    cases = [_case(dims, seed) for seed in range(3)]
    source = torch.stack([c[0] for c in cases])
    target = torch.stack([c[1] for c in cases])
    tumour = torch.stack([c[2] for c in cases])
    brain = torch.stack([c[3] for c in cases])
    pred = source + torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64).view(-1, *[1] * (dims + 1)) * (target - source)
    metric = EnhancementRecoveryMetric(reduction="none")
    metric(pred, target, source=source, region=tumour, brain=brain)
    per_case = metric.aggregate()
    assert per_case.shape == (3, 1) and torch.allclose(per_case[:, 0], torch.tensor([1.0, 0.5, 0.0]))
    mean = EnhancementRecoveryMetric()
    mean(list(pred), list(target), source=list(source), region=list(tumour), brain=list(brain))
    assert float(mean.aggregate()) == pytest.approx(0.5)
    false = FalseEnhancementMetric(reduction="mean")
    false(pred + 1.0, target, source=source, region=tumour, brain=brain)
    assert float(false.aggregate()) == pytest.approx(1.0)
