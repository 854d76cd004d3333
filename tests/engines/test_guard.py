from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.handlers import CheckpointSaver
from monai.networks.blocks import Convolution
from monai.utils import set_determinism

from common.engines.guard import NonFiniteGuard, NonFiniteLossError, NonFiniteStateError, non_finite_tensors
from common.utils.errors import UserError


def _data(n=8, nan_at=None, spatial_dims=2):
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.rand(1, *(8,) * spatial_dims, generator=g)} for _ in range(n)]
    for item in items:
        item["label"] = 2.0 * item["image"]
    if nan_at is not None:
        items[nan_at]["image"][0, 0, 0] = float("nan")
    return items


def _net(spatial_dims=2):
    return torch.nn.Sequential(
        Convolution(spatial_dims, 1, 4, kernel_size=3, norm="batch", act="relu"),
        Convolution(spatial_dims, 4, 1, kernel_size=3, conv_only=True),
    )


def _supervised(data, lr, spatial_dims=2, handlers=()):
    set_determinism(0)
    net = _net(spatial_dims)
    opt = torch.optim.SGD(net.parameters(), lr)
    trainer = SupervisedTrainer(
        "cpu", 3, DataLoader(Dataset(data), batch_size=2), net, opt, torch.nn.MSELoss(), train_handlers=list(handlers)
    )
    return trainer, net, opt


def _count_steps(optimizer):
    counter = [0]
    optimizer.register_step_post_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_nan_input_raises_before_any_optimizer_step(spatial_dims):
    trainer, net, opt = _supervised(_data(nan_at=0, spatial_dims=spatial_dims), 0.1, spatial_dims)
    NonFiniteGuard().attach(trainer)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    steps = _count_steps(opt)
    with pytest.raises(NonFiniteLossError, match=r"'loss'.*epoch 1, iteration 1.*weights are unchanged"):
        trainer.run()
    assert steps[0] == 0
    params = dict(net.named_parameters())
    for name, value in initial.items():
        if name in params:
            assert torch.equal(params[name].detach(), value), name


def test_nan_in_a_later_batch_stops_there():
    trainer, net, opt = _supervised(_data(nan_at=5), 0.1)  # batch 3 holds the NaN
    NonFiniteGuard().attach(trainer)
    steps = _count_steps(opt)
    with pytest.raises(NonFiniteLossError, match="iteration 3"):
        trainer.run()
    assert steps[0] == 2 and all(torch.isfinite(p).all() for p in net.parameters())


def test_huge_learning_rate_overflows_a_batchnorm_buffer(tmp_path):
    """With lr 1e5 the loss stays finite while BatchNorm's running variance overflows: only the state check sees it
    (with 1e6 and this data the loss overflows first, which the loss check reports)."""
    trainer, net, _ = _supervised(_data(), 1e5)
    NonFiniteGuard().attach(trainer)
    # an iteration-level saver attached after the guard: it must not save the broken iteration
    CheckpointSaver(str(tmp_path), {"model": net}, save_interval=1, epoch_level=False).attach(trainer)
    with pytest.raises(NonFiniteStateError, match=r"network 'network'.*'0\.adn\.N\.running_var'.*nothing was saved"):
        trainer.run()
    assert not torch.isfinite(net[0].adn.N.running_var).all()
    assert all(torch.isfinite(p).all() for p in net.parameters())  # the loss stayed finite: a buffer-only failure
    failed = trainer.state.iteration
    saved = sorted(int(p.stem.split("=")[1]) for p in tmp_path.iterdir())
    assert failed > 1 and saved == list(range(1, failed))
    assert issubclass(NonFiniteStateError, UserError)


def test_named_networks_and_plain_ignite_engine():
    net = _net()
    other = torch.nn.Linear(2, 2)
    assert non_finite_tensors(net) == []

    def step(engine, batch):
        if engine.state.iteration == 2:
            with torch.no_grad():
                other.weight[0, 0] = float("nan")
        return {"loss": torch.tensor(1.0)}

    engine = Engine(step)
    NonFiniteGuard({"net": net, "head": other}).attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    with pytest.raises(NonFiniteStateError, match=r"'head'.*'weight'.*iteration 2"):
        engine.run([0, 1, 2], max_epochs=1)
    assert seen == [1]  # the handler attached after the guard never saw iteration 2
    assert non_finite_tensors(other) == ["weight"]


def test_argument_validation():
    with pytest.raises(ValueError, match="networks"):
        NonFiniteGuard({})
    with pytest.raises(ValueError, match="networks"):
        NonFiniteGuard({"a": "not a module"})
    with pytest.raises(ValueError, match="networks"):
        NonFiniteGuard().attach(Engine(lambda e, b: None))
