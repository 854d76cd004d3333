"""Tests of common.engines.lr_logging.LearningRateLogger: lr/<name> scalars in the TensorBoard event file."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from monai.engines import SupervisedTrainer
from monai.handlers import LrScheduleHandler, TensorBoardStatsHandler

from common.engines.lr_logging import LearningRateLogger, trainer_optimizers
from common.engines.paired_gan import DiscriminatorSpec, PairedGanTrainer
from common.losses.adversarial import DiscriminatorLoss


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_two_optimizers_after_lambda_lr_steps(tmp_path):
    g_opt, d_opt = _optimizer(0.1), _optimizer(0.02)
    g_sched = torch.optim.lr_scheduler.LambdaLR(g_opt, lambda e: 1.0 - 0.25 * e)
    d_sched = torch.optim.lr_scheduler.LambdaLR(d_opt, lambda e: 0.5**e)
    engine = Engine(lambda e, b: (g_opt.step(), d_opt.step()))
    # the schedulers step at EPOCH_COMPLETED; attached first on purpose: the order must not matter
    LrScheduleHandler(g_sched, print_lr=False).attach(engine)
    LrScheduleHandler(d_sched, print_lr=False).attach(engine)
    LearningRateLogger({"generator": g_opt, "d_patch": d_opt}, log_dir=str(tmp_path)).attach(engine)
    engine.run([0, 1], max_epochs=3)
    scalars = _scalars(tmp_path)
    assert set(scalars) == {"lr/generator", "lr/d_patch"}
    for tag, expected in (("lr/generator", [0.1, 0.075, 0.05]), ("lr/d_patch", [0.02, 0.01, 0.005])):
        assert [s for s, _ in scalars[tag]] == [1, 2, 3]
        assert [v for _, v in scalars[tag]] == pytest.approx(expected, rel=1e-6)


def test_shared_writer_with_stats_handler_and_param_groups(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path))
    opt = torch.optim.SGD(
        [
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.3},
            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.03},
        ]
    )
    engine = Engine(lambda e, b: torch.tensor(1.5))
    TensorBoardStatsHandler(summary_writer=writer, output_transform=lambda x: x).attach(engine)
    logger = LearningRateLogger({"net": opt}, summary_writer=writer, epoch_level=False)
    logger.attach(engine)
    engine.run([0, 1, 2], max_epochs=1)
    assert not logger.internal_writer
    writer.close()
    scalars = _scalars(tmp_path)
    assert scalars["lr/net/group_0"] == [(1, pytest.approx(0.3)), (2, pytest.approx(0.3)), (3, pytest.approx(0.3))]
    assert [v for _, v in scalars["lr/net/group_1"]] == pytest.approx([0.03] * 3)
    assert "Loss" in scalars  # the stats handler wrote into the same writer


def test_discovery_from_trainers():
    g, d = torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(2, 1, 1)
    g_opt, d_opt = _optimizer(1e-3), torch.optim.Adam(d.parameters(), lr=4e-4)
    spec = DiscriminatorSpec(d, d_opt, DiscriminatorLoss("lsgan"))
    gan = PairedGanTrainer("cpu", 1, [], g, g_opt, g_loss=lambda *a: {}, discriminators={"patch": spec})
    assert trainer_optimizers(gan) == {"generator": g_opt, "d_patch": d_opt}
    sup = SupervisedTrainer("cpu", 1, [], g, g_opt, torch.nn.L1Loss())
    assert trainer_optimizers(sup) == {"optimizer": g_opt}
    logger = LearningRateLogger(summary_writer=object())
    logger.attach(gan)
    assert logger.learning_rates() == {"lr/generator": pytest.approx(1e-3), "lr/d_patch": pytest.approx(4e-4)}
    with pytest.raises(ValueError, match="optimizers"):
        trainer_optimizers(Engine(lambda e, b: None))
    with pytest.raises(ValueError, match="optimizers\\['x'\\]"):
        LearningRateLogger({"x": g}, summary_writer=object())
