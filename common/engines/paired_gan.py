"""The paired-GAN trainer shared by every adversarial bundle.

MONAI's ``GanTrainer`` maps random latent codes to images; paired synthesis (MRI -> CE-MRI, T1 -> T2,
MRI -> CT) maps a source image ``x`` to its co-registered target ``y`` with one generator and one or more
discriminators, which is what :class:`PairedGanTrainer` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.engines.workflow import Workflow
from monai.inferers import Inferer, SimpleInferer
from monai.utils.enums import CommonKeys as Keys

from common.losses.adversarial import DiscriminatorLoss

__all__ = ["DiscriminatorSpec", "PairedGanTrainer", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss term is NaN or Inf; raised before the optimizer step, so weights stay finite."""


class DiscriminatorSpec:
    """One discriminator of a :class:`PairedGanTrainer`: its network, optimizer, loss and schedule.

    Args:
        network: maps (B, C_in, *spatial) to logits (B, ...). ``C_in`` is source + target channels when
            ``conditional`` (pix2pix's input ``x ⊕ y``), else target channels only.
        optimizer: optimizer over ``network``'s parameters.
        loss: the discriminator's :class:`~common.losses.adversarial.DiscriminatorLoss` (owns its weights
            and optional gradient penalty).
        steps: discriminator updates per generator update (WGAN critics often use 5). All steps of one
            iteration use the same batch and the same synthetic images.
        conditional: whether the discriminator sees the source image concatenated to the target.
    """

    def __init__(
        self, network: torch.nn.Module, optimizer: Optimizer, loss: DiscriminatorLoss, steps: int = 1, conditional: bool = True
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
        if not isinstance(loss, DiscriminatorLoss):
            raise ValueError(f"loss must be a DiscriminatorLoss, got {type(loss).__name__}.")
        self.network = network
        self.optimizer = optimizer
        self.loss = loss
        self.steps = int(steps)
        self.conditional = bool(conditional)

    def inputs(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The discriminator's input for a (source, target-or-synthetic) pair: ``x ⊕ y`` or ``y``."""
        return torch.cat([source, target], dim=1) if self.conditional else target


class PairedGanTrainer(Trainer):
    """Paired image-to-image GAN training: one generator G, any number of named discriminators D_k.

    One iteration on a batch ``(x, y)``:

    1. ``y_hat = G(x)``;
    2. for each discriminator k, ``steps_k`` times: minimise ``L_Dk(D_k(x ⊕ y), D_k(x ⊕ y_hat))``
       (+ its gradient penalty) with ``y_hat`` detached;
    3. with the discriminators frozen, minimise ``sum(g_loss(y_hat, y, {k: D_k(x ⊕ y_hat)}, batch).values())``.

    Every loss term is checked before its backward pass: a NaN/Inf raises :class:`NonFiniteLossError`
    naming the term, so no optimizer ever steps on non-finite gradients. ``engine.state.output`` holds
    ``image``, ``label``, ``pred``, ``loss`` (the generator's total, what MLflow logs) and every term
    (``g_*`` generator terms, ``d_<name>`` and ``d_<name>_gp`` discriminator terms) for TensorBoard.

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
        check_finite: raise on non-finite loss terms (on by default).
        inferer: how the generator is applied to the batch during training (default ``SimpleInferer``).
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
    ) -> None:
        discriminators = dict(discriminators or {})
        for name, spec in discriminators.items():
            if not isinstance(spec, DiscriminatorSpec):
                raise ValueError(f"discriminators[{name!r}] must be a DiscriminatorSpec, got {type(spec).__name__}.")
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
            handlers=train_handlers,
            amp=amp,
            decollate=decollate,
            to_kwargs=to_kwargs,
        )
        self.g_network = g_network
        self.network = g_network  # the name MONAI handlers and tools look for
        self.g_optimizer = g_optimizer
        self.g_loss = g_loss
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

    def run(self) -> None:  # type: ignore[override]
        """Train; called again, continues from the current (possibly checkpoint-restored) state."""
        Workflow.run(self)  # MONAI's Trainer.run would create a CUDA-only scaler

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.autocast_device, dtype=self.amp_dtype)

    def _check(self, name: str, value: torch.Tensor) -> None:
        if self.check_finite and not bool(torch.isfinite(value.detach()).all()):
            raise NonFiniteLossError(
                f"loss term '{name}' is {value.detach().float().mean().item()} at epoch {self.state.epoch}, "
                f"iteration {self.state.iteration}; stopped before the optimizer step, the weights are unchanged."
            )

    def _step(self, name: str, loss: torch.Tensor, optimizer: Optimizer) -> None:
        scaler = self.scalers.get(name)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    def _discriminator_update(self, name: str, spec: DiscriminatorSpec, x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor) -> dict:
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

        output.update({k: v.detach() for k, v in terms.items()})
        output[Keys.PRED] = y_hat.detach().float()
        output[Keys.LOSS] = g_total.detach()
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
