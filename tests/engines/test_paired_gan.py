from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Events

from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.networks.blocks import Convolution
from monai.transforms import Compose, RandGaussianNoised
from monai.utils import set_determinism

from common.engines import DiscriminatorSpec, EpochSeedHandler, NonFiniteLossError, PairedGanTrainer, latest_checkpoint, loss_terms
from common.losses import DiscriminatorLoss, PairedGeneratorLoss


def _toy_data(n=8, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        x = torch.rand(1, size, size, generator=g)
        items.append({"image": x, "label": 2.0 * x - 0.5})
    return items


def _generator():
    return torch.nn.Sequential(
        Convolution(2, 1, 8, kernel_size=3, act="relu", norm=None), Convolution(2, 8, 1, kernel_size=3, conv_only=True)
    )


def _discriminator(in_channels):
    return torch.nn.Sequential(
        Convolution(2, in_channels, 8, strides=2, kernel_size=3, act=("leakyrelu", {"negative_slope": 0.2}), norm=None),
        Convolution(2, 8, 1, kernel_size=3, conv_only=True),
    )


def _trainer(seed=0, epochs=2, g_lr=1e-2, shuffle=False, transform=None, pixel_weight=10.0, amp=False, handlers=()):
    set_determinism(seed)
    ds = Dataset(_toy_data(), transform=transform)
    loader = DataLoader(ds, batch_size=2, shuffle=shuffle, num_workers=0)
    g = _generator()
    d_cond, d_uncond = _discriminator(2), _discriminator(1)
    discs = {
        "patch": DiscriminatorSpec(d_cond, torch.optim.Adam(d_cond.parameters(), 1e-2), DiscriminatorLoss("bce"), conditional=True),
        "ls": DiscriminatorSpec(
            d_uncond, torch.optim.Adam(d_uncond.parameters(), 1e-2), DiscriminatorLoss("lsgan"), steps=2, conditional=False
        ),
    }
    g_loss = PairedGeneratorLoss(torch.nn.L1Loss(), pixel_weight, {"patch": 1.0, "ls": 0.5}, {"patch": "bce", "ls": "lsgan"})
    trainer = PairedGanTrainer(
        "cpu", epochs, loader, g, torch.optim.Adam(g.parameters(), g_lr), g_loss, discs, amp=amp, train_handlers=list(handlers)
    )
    EpochSeedHandler(seed, [ds]).attach(trainer)
    return trainer


def _weights(trainer):
    nets = [trainer.g_network] + [s.network for s in trainer.discriminators.values()]
    return [p.detach().clone() for n in nets for p in n.parameters()]


def test_output_holds_pred_loss_and_terms():
    trainer = _trainer(epochs=1)
    trainer.run()
    terms = loss_terms(trainer.state.output)
    assert set(terms) == {"loss", "g_pixel", "g_adv_patch", "g_adv_ls", "d_patch", "d_ls"}
    assert terms["loss"] == pytest.approx(terms["g_pixel"] + terms["g_adv_patch"] + terms["g_adv_ls"], rel=1e-5)
    assert trainer.state.output[0]["pred"].shape == (1, 8, 8)


def test_pixel_loss_falls():
    trainer = _trainer(epochs=15)
    history = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(loss_terms(e.state.output)["g_pixel"]))
    trainer.run()
    assert sum(history[-4:]) / 4 < 0.5 * sum(history[:4]) / 4


def test_discriminators_prefer_real_after_training():
    trainer = _trainer(epochs=10, g_lr=0.0)  # frozen, imperfect generator: the discriminators must separate
    trainer.run()
    batch = next(iter(DataLoader(Dataset(_toy_data(seed=1)), batch_size=8)))
    x, y = batch["image"], batch["label"]
    with torch.no_grad():
        y_hat = trainer.g_network(x)
        for spec in trainer.discriminators.values():
            crit = spec.loss.criterion
            real = crit(spec.network(spec.inputs(x, y)), target_is_real=True)
            fake = crit(spec.network(spec.inputs(x, y_hat)), target_is_real=True)
            assert real < fake


def test_same_seed_same_weights():
    a, b = _trainer(seed=3, epochs=2, shuffle=True), _trainer(seed=3, epochs=2, shuffle=True)
    a.run()
    b.run()
    for p, q in zip(_weights(a), _weights(b)):
        assert torch.equal(p, q)
    c = _trainer(seed=4, epochs=2, shuffle=True)
    c.run()
    assert any(not torch.equal(p, q) for p, q in zip(_weights(a), _weights(c)))


def _save_dict(trainer):
    d = {"generator": trainer.g_network, "g_opt": trainer.g_optimizer, "trainer": trainer}
    for name, spec in trainer.discriminators.items():
        d[f"d_{name}"], d[f"d_{name}_opt"] = spec.network, spec.optimizer
    return d


def test_resume_equals_uninterrupted(tmp_path):
    noise = Compose([RandGaussianNoised(keys="image", prob=1.0, std=0.05)])
    full = _trainer(seed=1, epochs=3, shuffle=True, transform=noise)
    full.run()

    first = _trainer(seed=1, epochs=2, shuffle=True, transform=noise)
    CheckpointSaver(str(tmp_path), _save_dict(first), save_interval=1, n_saved=1, epoch_level=True).attach(first)
    first.run()
    path = latest_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_epoch=2.pt")

    resumed = _trainer(seed=1, epochs=3, shuffle=True, transform=noise)
    CheckpointLoader(path, _save_dict(resumed)).attach(resumed)
    resumed.run()
    assert resumed.state.epoch == 3
    for p, q in zip(_weights(full), _weights(resumed)):
        assert torch.allclose(p, q, atol=1e-6)


def test_non_finite_loss_raises_before_step():
    trainer = _trainer(epochs=1)
    before = _weights(trainer)

    class NanLoss(torch.nn.Module):
        def forward(self, pred, target):
            return (pred - target).abs().mean() * float("nan")

    trainer.g_loss = PairedGeneratorLoss(NanLoss(), 1.0, {"patch": 1.0, "ls": 1.0}, {"patch": "bce", "ls": "lsgan"})
    with pytest.raises(NonFiniteLossError, match="g_pixel"):
        trainer.run()
    after = _weights(trainer)
    gen_params = len(list(trainer.g_network.parameters()))
    for p, q in zip(before[:gen_params], after[:gen_params]):
        assert torch.equal(p, q)  # the generator never stepped
    assert all(torch.isfinite(q).all() for q in after)


def test_bf16_autocast_on_cpu():
    trainer = _trainer(epochs=1, amp=True)
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scalers == {}
    trainer.run()
    terms = loss_terms(trainer.state.output)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())


def test_spec_validation():
    net = _discriminator(1)
    opt = torch.optim.SGD(net.parameters(), 0.1)
    with pytest.raises(ValueError, match="steps"):
        DiscriminatorSpec(net, opt, DiscriminatorLoss(), steps=0)
    with pytest.raises(ValueError, match="loss"):
        DiscriminatorSpec(net, opt, torch.nn.L1Loss())
    with pytest.raises(FileNotFoundError, match="resume"):
        latest_checkpoint("/nonexistent/dir")
    copy.deepcopy(DiscriminatorLoss("hinge"))
