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

from common.engines.guard import NonFiniteLossError, NonFiniteStateError
from common.engines.paired_gan import DiscriminatorSpec, PairedGanTrainer
from common.engines.utils import EpochSeedHandler, latest_checkpoint, loss_terms
from common.losses.adversarial import DiscriminatorLoss, PairedGeneratorLoss
from common.utils.errors import UserError


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


def _discriminator(in_channels, norm=None):
    return torch.nn.Sequential(
        Convolution(2, in_channels, 8, strides=2, kernel_size=3, act=("leakyrelu", {"negative_slope": 0.2}), norm=norm),
        Convolution(2, 8, 1, kernel_size=3, conv_only=True),
    )


def _g_loss(pixel_weight=10.0, pixel_losses=None):
    losses = pixel_losses or {"l1": torch.nn.L1Loss()}
    return PairedGeneratorLoss(
        losses, {k: pixel_weight for k in losses}, {"patch": 1.0, "ls": 0.5}, {"patch": "bce", "ls": "lsgan"}
    )


def _trainer(
    seed=0,
    epochs=2,
    g_lr=1e-2,
    shuffle=False,
    transform=None,
    pixel_weight=10.0,
    amp=False,
    handlers=(),
    schedulers=False,
    ls_steps=2,
    d_norm=None,
    check_finite=True,
):
    set_determinism(seed)
    ds = Dataset(_toy_data(), transform=transform)
    loader = DataLoader(ds, batch_size=2, shuffle=shuffle, num_workers=0)
    g = _generator()
    d_cond, d_uncond = _discriminator(2, d_norm), _discriminator(1)
    opt_cond, opt_uncond = torch.optim.Adam(d_cond.parameters(), 1e-2), torch.optim.Adam(d_uncond.parameters(), 1e-2)
    g_opt = torch.optim.Adam(g.parameters(), g_lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt_cond, 0.5) if schedulers else None
    g_sched = torch.optim.lr_scheduler.StepLR(g_opt, 1, 0.3) if schedulers else None
    discs = {
        "patch": DiscriminatorSpec(d_cond, opt_cond, DiscriminatorLoss("bce"), conditional=True, lr_scheduler=sched),
        "ls": DiscriminatorSpec(d_uncond, opt_uncond, DiscriminatorLoss("lsgan"), steps=ls_steps, conditional=False),
    }
    trainer = PairedGanTrainer(
        "cpu",
        epochs,
        loader,
        g,
        g_opt,
        _g_loss(pixel_weight),
        discs,
        amp=amp,
        train_handlers=list(handlers),
        check_finite=check_finite,
        g_lr_scheduler=g_sched,
    )
    EpochSeedHandler(seed, [ds]).attach(trainer)
    return trainer


def _weights(trainer):
    nets = [trainer.g_network] + [s.network for s in trainer.discriminators.values()]
    return [p.detach().clone() for n in nets for p in n.parameters()]


def _count_steps(optimizer):
    counter = [0]
    optimizer.register_step_post_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


def test_output_holds_pred_loss_and_terms():
    trainer = _trainer(epochs=1)
    trainer.run()
    terms = loss_terms(trainer.state.output)
    assert set(terms) == {"loss", "g_l1", "g_adv_patch", "g_adv_ls", "d_patch", "d_ls"}
    assert terms["loss"] == pytest.approx(terms["g_l1"] + terms["g_adv_patch"] + terms["g_adv_ls"], rel=1e-5)
    assert trainer.state.output[0]["pred"].shape == (1, 8, 8)


def test_two_pixel_terms_are_logged_and_summed():
    trainer = _trainer(epochs=1)
    trainer.g_loss = _g_loss(2.0, {"l1": torch.nn.L1Loss(), "l2": torch.nn.MSELoss()})
    trainer.run()
    terms = loss_terms(trainer.state.output)
    assert {"g_l1", "g_l2"} <= set(terms)
    assert terms["loss"] == pytest.approx(sum(terms[k] for k in ("g_l1", "g_l2", "g_adv_patch", "g_adv_ls")), rel=1e-5)


def test_pixel_loss_falls():
    trainer = _trainer(epochs=15)
    history = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(loss_terms(e.state.output)["g_l1"]))
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


def test_schedulers_step_once_per_epoch_before_handlers():
    seen = []

    class LrRecorder:
        def attach(self, engine):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

        def __call__(self, engine):
            d_opt = engine.discriminators["patch"].optimizer
            seen.append((engine.g_optimizer.param_groups[0]["lr"], d_opt.param_groups[0]["lr"]))

    trainer = _trainer(epochs=3, schedulers=True, handlers=[LrRecorder()])
    trainer.run()
    assert seen == [pytest.approx((1e-2 * 0.3**e, 1e-2 * 0.5**e)) for e in (1, 2, 3)]
    assert trainer.g_lr_scheduler.last_epoch == 3 and trainer.discriminators["patch"].lr_scheduler.last_epoch == 3
    assert trainer.discriminators["ls"].optimizer.param_groups[0]["lr"] == 1e-2  # no scheduler: untouched


def test_checkpoint_dict_keys(tmp_path):
    trainer = _trainer(epochs=1, schedulers=True)
    d = trainer.checkpoint_dict()
    assert d == {
        "model": trainer.g_network,
        "optimizer": trainer.g_optimizer,
        "lr_scheduler": trainer.g_lr_scheduler,
        "d_patch": trainer.discriminators["patch"].network,
        "d_patch_optimizer": trainer.discriminators["patch"].optimizer,
        "d_patch_lr_scheduler": trainer.discriminators["patch"].lr_scheduler,
        "d_ls": trainer.discriminators["ls"].network,
        "d_ls_optimizer": trainer.discriminators["ls"].optimizer,
        "trainer": trainer,
    }
    best = CheckpointSaver(str(tmp_path), {"model": trainer.g_network}, save_key_metric=True, key_metric_name="psnr")
    assert trainer.checkpoint_dict(best)["best_model"] is best._key_metric_checkpoint
    with pytest.raises(ValueError, match="best_model_saver"):
        trainer.checkpoint_dict(CheckpointSaver(str(tmp_path), {"model": trainer.g_network}, save_final=True))
    plain = {"model", "optimizer", "d_patch", "d_patch_optimizer", "d_ls", "d_ls_optimizer", "trainer"}
    assert set(_trainer(epochs=1).checkpoint_dict()) == plain  # no scheduler, no saver: no such keys


@pytest.mark.parametrize("schedulers", [False, True])
def test_resume_equals_uninterrupted(tmp_path, schedulers):
    noise = Compose([RandGaussianNoised(keys="image", prob=1.0, std=0.05)])
    full = _trainer(seed=1, epochs=3, shuffle=True, transform=noise, schedulers=schedulers)
    full.run()

    first = _trainer(seed=1, epochs=2, shuffle=True, transform=noise, schedulers=schedulers)
    CheckpointSaver(str(tmp_path), first.checkpoint_dict(), save_interval=1, n_saved=1, epoch_level=True).attach(first)
    first.run()
    path = latest_checkpoint(str(tmp_path))
    assert path.endswith("checkpoint_epoch=2.pt")

    resumed = _trainer(seed=1, epochs=3, shuffle=True, transform=noise, schedulers=schedulers)
    CheckpointLoader(path, resumed.checkpoint_dict()).attach(resumed)
    resumed.run()
    assert resumed.state.epoch == 3
    for p, q in zip(_weights(full), _weights(resumed)):
        assert torch.allclose(p, q, atol=1e-6)
    if schedulers:
        for get in (lambda t: t.g_lr_scheduler, lambda t: t.discriminators["patch"].lr_scheduler):
            assert get(resumed).state_dict() == get(full).state_dict()
            assert get(resumed).last_epoch == 3


def test_non_finite_loss_raises_before_step():
    trainer = _trainer(epochs=1)
    before = _weights(trainer)

    class NanLoss(torch.nn.Module):
        def forward(self, pred, target):
            return (pred - target).abs().mean() * float("nan")

    trainer.g_loss = _g_loss(1.0, {"l1": NanLoss()})
    with pytest.raises(NonFiniteLossError, match="g_l1"):
        trainer.run()
    after = _weights(trainer)
    gen_params = len(list(trainer.g_network.parameters()))
    for p, q in zip(before[:gen_params], after[:gen_params]):
        assert torch.equal(p, q)  # the generator never stepped
    assert all(torch.isfinite(q).all() for q in after)
    assert issubclass(NonFiniteLossError, UserError) and issubclass(NonFiniteLossError, FloatingPointError)


def test_non_finite_discriminator_loss_raises_before_its_step():
    """Catches a finite check dropped for the discriminator terms only."""
    trainer = _trainer(epochs=1)

    class NanDLoss(DiscriminatorLoss):
        def forward(self, real_logits, fake_logits):
            return super().forward(real_logits, fake_logits) * float("nan")

    spec = trainer.discriminators["ls"]
    spec.loss = NanDLoss("lsgan")
    before = [p.detach().clone() for p in spec.network.parameters()]
    d_steps, g_steps = _count_steps(spec.optimizer), _count_steps(trainer.g_optimizer)
    with pytest.raises(NonFiniteLossError, match="'d_ls'"):
        trainer.run()
    assert d_steps[0] == 0 and g_steps[0] == 0
    assert all(torch.equal(p, q) for p, q in zip(before, spec.network.parameters()))


def test_each_discriminator_steps_its_steps_per_iteration():
    """Catches a discriminator's ``steps`` being ignored."""
    trainer = _trainer(epochs=1, ls_steps=3)
    counts = {n: _count_steps(s.optimizer) for n, s in trainer.discriminators.items()}
    counts["generator"] = _count_steps(trainer.g_optimizer)
    per_iteration = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        per_iteration.append({n: c[0] for n, c in counts.items()})

    trainer.run()
    assert per_iteration == [{"patch": i, "ls": 3 * i, "generator": i} for i in range(1, 5)]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_adversarial_gradient_reaches_generator(spatial_dims):
    """Catches the generator's adversarial term being detached: with no pixel term, G(x) = a x + b and a linear
    critic D(z) = w z + c, the Wasserstein generator loss -mean(D(G(x))) has dL/da = -w mean(x), dL/db = -w."""
    set_determinism(0)
    size = (4,) * spatial_dims
    x = torch.rand(2, 1, *size)
    loader = DataLoader(Dataset([{"image": x[i], "label": 3.0 * x[i]} for i in range(2)]), batch_size=2)
    g = Convolution(spatial_dims, 1, 1, kernel_size=1, conv_only=True)
    d = Convolution(spatial_dims, 1, 1, kernel_size=1, conv_only=True)
    d_loss = DiscriminatorLoss("wasserstein", 1.0)
    spec = DiscriminatorSpec(d, torch.optim.SGD(d.parameters(), 0.1), d_loss, conditional=False)
    g_loss = PairedGeneratorLoss({"l1": torch.nn.L1Loss()}, {"l1": 0.0}, {"critic": 1.0}, "wasserstein")
    trainer = PairedGanTrainer("cpu", 1, loader, g, torch.optim.SGD(g.parameters(), 0.1), g_loss, {"critic": spec})
    before = [p.detach().clone() for p in g.parameters()]
    trainer.run()
    assert set(loss_terms(trainer.state.output)) == {"loss", "g_adv_critic", "d_critic"}
    w = d.conv.weight.detach().reshape(())  # D after its own step: the one G's step saw
    grad_a, grad_b = g.conv.weight.grad.reshape(()), g.conv.bias.grad.reshape(())
    assert grad_a.item() == pytest.approx(-w.item() * x.mean().item(), rel=1e-5)
    assert grad_b.item() == pytest.approx(-w.item(), rel=1e-5)
    assert all(not torch.equal(p, q) for p, q in zip(before, g.parameters()))


def test_input_fn_builds_the_discriminator_input():
    trainer = _trainer(epochs=1)
    seen = []
    d = _discriminator(2)
    crop = DiscriminatorSpec(
        d,
        torch.optim.Adam(d.parameters(), 1e-2),
        DiscriminatorLoss("wasserstein", 1.0, 10.0),
        input_fn=lambda x, y: torch.cat([x, y], 1)[..., 2:6, 2:6],  # D sees the centre 4x4 of x ⊕ y
    )
    d.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    trainer.discriminators = {"crop": crop}
    trainer.g_loss = PairedGeneratorLoss({"l1": torch.nn.L1Loss()}, {"l1": 1.0}, {"crop": 1.0}, "wasserstein")
    trainer.run()
    assert set(seen) == {(2, 2, 4, 4)}
    assert {"d_crop", "d_crop_gp", "g_adv_crop"} <= set(loss_terms(trainer.state.output))
    x, y = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    assert torch.equal(crop.inputs(x, y), torch.cat([x, y], 1)[..., 2:6, 2:6])
    assert crop.conditional is None
    assert DiscriminatorSpec(d, crop.optimizer, DiscriminatorLoss()).conditional is True


def test_non_finite_state_raises_naming_network_and_buffer(tmp_path):
    trainer = _trainer(epochs=2, d_norm="batch")
    spec = trainer.discriminators["patch"]
    bn = next(m for m in spec.network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # corrupt a running statistic after the D step: train-mode BN ignores it, so every loss stays finite
    spec.optimizer.register_step_post_hook(lambda *_: bn.running_mean.fill_(float("inf")))
    CheckpointSaver(str(tmp_path), trainer.checkpoint_dict(), save_interval=1, epoch_level=False).attach(trainer)
    with pytest.raises(NonFiniteStateError, match=r"'d_patch'.*running_mean.*epoch 1, iteration 1.*nothing was saved"):
        trainer.run()
    assert list(tmp_path.iterdir()) == []
    assert issubclass(NonFiniteStateError, UserError) and issubclass(NonFiniteStateError, FloatingPointError)

    quiet = _trainer(epochs=1, d_norm="batch", check_finite=False)
    quiet_bn = next(m for m in quiet.discriminators["patch"].network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    quiet_opt = quiet.discriminators["patch"].optimizer
    quiet_opt.register_step_post_hook(lambda *_: quiet_bn.running_mean.fill_(float("inf")))
    quiet.run()  # the flag turns the check off
    assert quiet.state.iteration == 4


def test_bf16_autocast_on_cpu():
    trainer = _trainer(epochs=1, amp=True)
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scalers == {}
    trainer.run()
    terms = loss_terms(trainer.state.output)
    assert all(torch.isfinite(torch.tensor(v)) for v in terms.values())


def test_amp_reads_the_command_line_spelling():
    """``--amp false`` arrives as the string 'false' (truthy): the trainer must read it as off."""
    assert _trainer(epochs=1, amp="false").amp is False
    assert _trainer(epochs=1, amp="true").amp is True
    with pytest.raises(ValueError, match="amp must be true or false"):
        _trainer(epochs=1, amp="fp16")


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
    with pytest.raises(ValueError, match="input_fn"):
        DiscriminatorSpec(net, opt, DiscriminatorLoss(), conditional=True, input_fn=lambda x, y: y)
    with pytest.raises(ValueError, match="input_fn"):
        DiscriminatorSpec(net, opt, DiscriminatorLoss(), input_fn="crop")
    other = torch.optim.SGD(net.parameters(), 0.1)
    with pytest.raises(ValueError, match="lr_scheduler"):
        DiscriminatorSpec(net, opt, DiscriminatorLoss(), lr_scheduler=torch.optim.lr_scheduler.StepLR(other, 1))
    with pytest.raises(ValueError, match="lr_scheduler"):
        DiscriminatorSpec(net, opt, DiscriminatorLoss(), lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
    g = _generator()
    g_opt = torch.optim.SGD(g.parameters(), 0.1)
    with pytest.raises(ValueError, match="g_lr_scheduler"):
        PairedGanTrainer("cpu", 1, [], g, g_opt, _g_loss(), g_lr_scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))
