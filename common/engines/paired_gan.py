"""The paired-GAN trainer shared by every adversarial bundle, and why MONAI's GAN trainers are not used.

Paired synthesis (MRI -> CE-MRI, T1 -> T2, MRI -> CT) maps a source image ``x`` to its co-registered target
``y`` with one generator and one or more discriminators that judge ``y`` / ``G(x)``, usually conditioned on
``x`` (pix2pix, Isola et al. CVPR 2017). MONAI 1.6.1 has two GAN trainers in ``monai/engines/trainer.py``;
neither trains that objective:

- ``GanTrainer`` is unconditional: the generator's input is a random latent code from ``g_prepare_batch``
  (``default_make_latent``), the batch supplies only the reals, ``g_loss_function(fakes)`` and
  ``d_loss_function(fakes, reals)`` never see a source image or a paired target (no pixel loss, no
  conditional D); one discriminator; the D loss receives the non-detached fakes; its iteration never autocasts.
- ``AdversarialTrainer`` (reconstruction + adversarial) sets ``REALS = inputs``: its discriminator's real
  samples are the **source** batch, not the target (it is built for autoencoders, where input == target),
  so for paired synthesis D would learn "source vs. synthetic"; D sees only the image (``d_inferer(fakes)``),
  never ``x ⊕ y``; it updates G first and then D once (pix2pix updates D first; no ``steps`` for WGAN
  critics), takes exactly one discriminator, has no gradient penalty (``d_loss_function`` gets logits, not
  the network), outputs one reconstruction, one generator and one D loss, runs AMP only on CUDA
  (``torch.cuda.amp.GradScaler``), leaves D trainable during G's backward, and has no NaN/Inf checks.

:class:`PairedGanTrainer` does: ``G(x)`` once per iteration, then ``steps_k`` updates of every named D_k on
``(D_k(in_k(x, y)), D_k(in_k(x, G(x).detach())))`` with its own :class:`~common.losses.adversarial.DiscriminatorLoss`
(WGAN-GP penalty included), then one G update on named, weighted terms with the D_k frozen; per-term
logging, float16 (CUDA) / bfloat16 (CPU) autocast, NaN/Inf checks of every loss term before its step and of
every network's state after the steps, epoch-level schedulers and a canonical checkpoint dict. Swapping in
MONAI's trainers changes the objective (what D compares, the update order, the number of critic steps),
not only the code path: results are then not those of the reproduced papers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Events
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.engines.workflow import Workflow
from monai.inferers import Inferer, SimpleInferer
from monai.utils.enums import CommonKeys as Keys

from common.engines.checkpoint import canonical_save_dict
from common.engines.guard import NonFiniteLossError, NonFiniteStateError, check_finite_loss, check_finite_state
from common.losses.adversarial import DiscriminatorLoss
from common.utils.flags import as_flag

__all__ = ["DiscriminatorSpec", "PairedGanTrainer", "NonFiniteLossError", "NonFiniteStateError"]


def _validate_scheduler(arg: str, scheduler: Any, optimizer: Optimizer) -> None:
    """A scheduler the trainer steps once per epoch: an ``LRScheduler`` of ``optimizer``, not ReduceLROnPlateau."""
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau) or not isinstance(scheduler, LRScheduler):
        raise ValueError(
            f"{arg} must be an epoch-level torch.optim.lr_scheduler.LRScheduler (ReduceLROnPlateau needs a metric: "
            f"use monai.handlers.LrScheduleHandler with step_transform), got {type(scheduler).__name__}."
        )
    if scheduler.optimizer is not optimizer:
        raise ValueError(f"{arg} must schedule the optimizer it is given with, not another one.")


class DiscriminatorSpec:
    """One discriminator of a :class:`PairedGanTrainer`: its network, optimizer, loss, schedule and input.

    Args:
        network: maps (B, C_in, *spatial) to logits (B, ...). ``C_in`` is source + target channels when
            ``conditional`` (pix2pix's input ``x ⊕ y``), else target channels only.
        optimizer: optimizer over ``network``'s parameters.
        loss: the discriminator's :class:`~common.losses.adversarial.DiscriminatorLoss` (owns its weights
            and optional gradient penalty).
        steps: discriminator updates per generator update (WGAN critics often use 5). All steps of one
            iteration use the same batch and the same synthetic images.
        conditional: whether the discriminator sees the source image concatenated to the target (default
            True). Exclusive with ``input_fn``.
        input_fn: ``(source (B, C_x, *S), image (B, C_y, *S)) -> D input`` replacing the ``conditional`` rule,
            e.g. ``lambda x, y: y`` for an unconditional super-resolution D on differently sized source and
            image, or a centre crop of ``x ⊕ y``. It must be differentiable in ``image`` (the generator's
            adversarial gradient flows through it) and give real and synthetic inputs of the same shape.
        lr_scheduler: an epoch-level scheduler of ``optimizer``; the trainer steps it at every EPOCH_COMPLETED.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss: DiscriminatorLoss,
        steps: int = 1,
        conditional: bool | None = None,
        input_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        lr_scheduler: LRScheduler | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
        if not isinstance(loss, DiscriminatorLoss):
            raise ValueError(f"loss must be a DiscriminatorLoss, got {type(loss).__name__}.")
        if input_fn is not None and not callable(input_fn):
            raise ValueError(f"input_fn must be callable, got {type(input_fn).__name__}.")
        if input_fn is not None and conditional is not None:
            raise ValueError("conditional and input_fn are exclusive: input_fn builds the discriminator's input.")
        _validate_scheduler("lr_scheduler", lr_scheduler, optimizer)
        self.network = network
        self.optimizer = optimizer
        self.loss = loss
        self.steps = int(steps)
        self.input_fn = input_fn
        self.conditional = None if input_fn is not None else (True if conditional is None else bool(conditional))
        self.lr_scheduler = lr_scheduler

    def inputs(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """D's input for a (source, target-or-synthetic) pair: ``input_fn(x, y)``, ``x ⊕ y`` or ``y``."""
        if self.input_fn is not None:
            return self.input_fn(source, image)
        return torch.cat([source, image], dim=1) if self.conditional else image


class PairedGanTrainer(Trainer):
    """Paired image-to-image GAN training: one generator G, any number of named discriminators D_k.

    One iteration on a batch ``(x, y)``:

    1. ``y_hat = G(x)``;
    2. for each discriminator k, ``steps_k`` times: minimise ``L_Dk(D_k(in_k(x, y)), D_k(in_k(x, y_hat)))``
       (+ its gradient penalty) with ``y_hat`` detached, ``in_k`` being ``x ⊕ y``, ``y`` or ``input_fn``;
    3. with the discriminators frozen, minimise ``sum(g_loss(y_hat, y, {k: D_k(in_k(x, y_hat))}, batch).values())``.

    With ``check_finite`` every loss term is checked before its backward pass (a NaN/Inf raises
    :class:`~common.engines.guard.NonFiniteLossError` naming the term, so no optimizer steps on non-finite
    gradients), and after the steps every parameter and buffer of G and of each D_k is checked
    (:class:`~common.engines.guard.NonFiniteStateError` naming the network, ``generator`` or ``d_<name>``, and
    the tensor), before any handler can save the state. ``engine.state.output`` holds ``image``, ``label``,
    ``pred``, ``loss`` (the generator's total, what MLflow logs) and every term (``g_*`` generator terms,
    ``d_<name>`` and ``d_<name>_gp`` discriminator terms) for TensorBoard.

    Schedulers (``g_lr_scheduler`` and each spec's ``lr_scheduler``) are stepped once per epoch at
    EPOCH_COMPLETED, before every handler given in ``train_handlers`` or attached later (so an epoch-level
    checkpoint holds the stepped schedule); configs need no ``LrScheduleHandler`` for them.
    :meth:`checkpoint_dict` gives the canonical save dict for ``CheckpointSaver`` / ``CheckpointLoader``.

    Mixed precision: ``amp=True`` runs forward passes under ``torch.autocast`` — float16 with a gradient
    scaler per optimizer on CUDA, bfloat16 without scaling on CPU (``amp_dtype`` overrides the dtype).

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: yields dicts with ``image`` (source) and ``label`` (target) by default.
        g_network: the generator.
        g_optimizer: the generator's optimizer.
        g_loss: callable ``(pred, target, fake_outputs: dict[str, Tensor], batch) -> dict[str, Tensor]`` of
            weighted terms, e.g. :class:`~common.losses.adversarial.PairedGeneratorLoss`.
        discriminators: ``{name: DiscriminatorSpec}``; empty or None trains G on ``g_loss`` alone.
        epoch_length, non_blocking, prepare_batch, iteration_update, postprocessing, key_train_metric,
        additional_metrics, metric_cmp_fn, train_handlers, decollate, to_kwargs: as in
            ``monai.engines.SupervisedTrainer``.
        amp: mixed precision, see above.
        amp_dtype: autocast dtype; default float16 on CUDA, bfloat16 on CPU.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        check_finite: raise on non-finite loss terms and network states (on by default).
        inferer: how the generator is applied to the batch during training (default ``SimpleInferer``).
        g_lr_scheduler: an epoch-level scheduler of ``g_optimizer`` (e.g. pix2pix's linear decay as a ``LambdaLR``).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        g_network: torch.nn.Module,
        g_optimizer: Optimizer,
        g_loss: Callable[..., Mapping[str, torch.Tensor]],
        discriminators: Mapping[str, DiscriminatorSpec] | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        amp_dtype: torch.dtype | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        check_finite: bool = True,
        inferer: Inferer | None = None,
        g_lr_scheduler: LRScheduler | None = None,
    ) -> None:
        amp = as_flag(amp, "amp")
        discriminators = dict(discriminators or {})
        for name, spec in discriminators.items():
            if not isinstance(spec, DiscriminatorSpec):
                raise ValueError(f"discriminators[{name!r}] must be a DiscriminatorSpec, got {type(spec).__name__}.")
        _validate_scheduler("g_lr_scheduler", g_lr_scheduler, g_optimizer)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=None,  # registered below, after the scheduler step
            amp=amp,
            decollate=decollate,
            to_kwargs=to_kwargs,
        )
        self.g_network = g_network
        self.network = g_network  # the name MONAI handlers and tools look for
        self.g_optimizer = g_optimizer
        self.g_loss = g_loss
        self.g_lr_scheduler = g_lr_scheduler
        self.discriminators = discriminators
        self.optim_set_to_none = optim_set_to_none
        self.check_finite = check_finite
        self.inferer = SimpleInferer() if inferer is None else inferer
        dev = torch.device(device)
        self.autocast_device = dev.type
        self.amp_dtype = amp_dtype or (torch.float16 if dev.type == "cuda" else torch.bfloat16)
        use_scaler = amp and dev.type == "cuda" and self.amp_dtype == torch.float16
        names = ["generator", *discriminators]
        self.scalers = {n: torch.amp.GradScaler("cuda") for n in names} if use_scaler else {}
        self.add_event_handler(Events.EPOCH_COMPLETED, PairedGanTrainer._step_schedulers)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    def run(self) -> None:  # type: ignore[override]
        """Train; called again, continues from the current (possibly checkpoint-restored) state."""
        Workflow.run(self)  # MONAI's Trainer.run would create a CUDA-only scaler

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        """``{"generator": G, "d_<name>": D_name, ...}``, the networks whose state ``check_finite`` checks."""
        return {"generator": self.g_network, **{f"d_{n}": s.network for n, s in self.discriminators.items()}}

    def checkpoint_dict(self, best_model_saver: Any | None = None) -> dict[str, Any]:
        """The complete training state under the canonical keys (see :mod:`common.engines.checkpoint`).

        Args:
            best_model_saver: the validation ``CheckpointSaver`` (``save_key_metric=True``); its ranking is
                saved as ``best_model`` so the best-metric tracking survives a resume.
        """
        discs = {n: (s.network, s.optimizer, s.lr_scheduler) for n, s in self.discriminators.items()}
        return canonical_save_dict(
            self.g_network, self.g_optimizer, self, self.g_lr_scheduler, discs, best_model_saver, self.scalers
        )

    @staticmethod
    def _step_schedulers(engine: PairedGanTrainer) -> None:
        for scheduler in [engine.g_lr_scheduler, *(s.lr_scheduler for s in engine.discriminators.values())]:
            if scheduler is not None:
                scheduler.step()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.autocast_device, dtype=self.amp_dtype)

    def _check(self, name: str, value: torch.Tensor) -> None:
        if self.check_finite:
            check_finite_loss(name, value, self.state.epoch, self.state.iteration)

    def _step(self, name: str, loss: torch.Tensor, optimizer: Optimizer) -> None:
        scaler = self.scalers.get(name)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    def _discriminator_update(
        self, name: str, spec: DiscriminatorSpec, x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor
    ) -> dict:
        spec.network.train()
        real_in, fake_in = spec.inputs(x, y), spec.inputs(x, y_hat.detach())
        terms: dict[str, torch.Tensor] = {}
        for _ in range(spec.steps):
            spec.optimizer.zero_grad(set_to_none=self.optim_set_to_none)
            with self._autocast():
                loss = spec.loss(spec.network(real_in).float(), spec.network(fake_in).float())
            self._check(f"d_{name}", loss)
            total = loss
            terms[f"d_{name}"] = loss.detach()
            penalty = spec.loss.penalty(spec.network, real_in.float(), fake_in.float())
            if penalty is not None:
                self._check(f"d_{name}_gp", penalty)
                total = total + penalty
                terms[f"d_{name}_gp"] = penalty.detach()
            self._step(name, total, spec.optimizer)
        return terms

    def _iteration(self, engine: PairedGanTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        x, y = batch[0], batch[1]
        if y is None:
            raise ValueError("the paired-GAN trainer needs a target ('label') in every batch.")
        engine.g_network.train()
        with engine._autocast():
            y_hat = engine.inferer(x, engine.g_network)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        output: dict[str, Any] = {Keys.IMAGE: x, Keys.LABEL: y}
        for name, spec in engine.discriminators.items():
            output.update(engine._discriminator_update(name, spec, x, y, y_hat))

        frozen = [p for spec in engine.discriminators.values() for p in spec.network.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with engine._autocast():
                fake_outputs = {n: s.network(s.inputs(x, y_hat)).float() for n, s in engine.discriminators.items()}
                terms = dict(engine.g_loss(y_hat.float(), y.float(), fake_outputs, batchdata))
            if not terms:
                raise ValueError("the generator loss returned no terms.")
            for name, value in terms.items():
                engine._check(name, value)
            g_total = torch.stack([v.float() for v in terms.values()]).sum()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            engine._step("generator", g_total, engine.g_optimizer)
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        if engine.check_finite:
            check_finite_state(engine.networks, engine.state.epoch, engine.state.iteration)

        output.update({k: v.detach() for k, v in terms.items()})
        output[Keys.PRED] = y_hat.detach().float()
        output[Keys.LOSS] = g_total.detach()
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
