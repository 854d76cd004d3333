"""Non-finite guards: stop a training run at the first NaN/Inf loss or network state, before it spreads.

A NaN loss back-propagated once turns every weight it reaches into NaN, and an epoch-level checkpoint
then preserves the broken network. Two checks prevent that:

- the **loss** is checked before its backward pass (MONAI's ``IterationEvents.LOSS_COMPLETED``), so no
  optimizer steps on non-finite gradients: :class:`NonFiniteLossError`;
- the **state** (every parameter and floating-point buffer, e.g. BatchNorm running statistics, which a
  finite loss can still overflow) is checked after the optimizer steps and before any
  ``ITERATION_COMPLETED`` / ``EPOCH_COMPLETED`` handler runs, so no checkpoint handler saves it:
  :class:`NonFiniteStateError`.

:class:`common.engines.PairedGanTrainer` runs both checks itself (``check_finite=True``); :class:`NonFiniteGuard`
adds them to any other Ignite trainer, in particular ``monai.engines.SupervisedTrainer``.

The state check costs one fused ``torch._foreach_norm(..., inf)`` (max-abs per tensor; NaN and Inf propagate,
finite values cannot overflow) and one host synchronisation per network; the culprits are looked up only on
failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from common.utils.errors import UserError

__all__ = [
    "NonFiniteLossError",
    "NonFiniteStateError",
    "NonFiniteGuard",
    "check_finite_loss",
    "check_finite_state",
    "non_finite_tensors",
]

_MAX_NAMED = 8


class NonFiniteLossError(FloatingPointError, UserError):
    """Raised when a loss term is NaN or Inf; raised before the optimizer step, so weights stay finite."""


class NonFiniteStateError(FloatingPointError, UserError):
    """Raised when a parameter or buffer of a network is NaN or Inf after an optimizer step."""


def _state_tensors(network: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and floating-point buffer of ``network`` (integer counters cannot be non-finite)."""
    named = [(n, p.detach()) for n, p in network.named_parameters()]
    named += [(n, b) for n, b in network.named_buffers() if b.is_floating_point() or b.is_complex()]
    return named


def non_finite_tensors(network: torch.nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``network`` holding a NaN or Inf (empty when all are finite).

    One fused max-abs reduction over all tensors and one host synchronisation; the per-tensor search only
    runs when something is non-finite.
    """
    named = _state_tensors(network)
    if not named:
        return []
    max_abs = torch._foreach_norm([t for _, t in named], float("inf"))
    if bool(torch.isfinite(torch.stack(max_abs)).all()):
        return []
    return [name for (name, _), m in zip(named, max_abs) if not bool(torch.isfinite(m))]


def check_finite_loss(name: str, value: torch.Tensor, epoch: int, iteration: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the term ``name`` when ``value`` holds a NaN or Inf."""
    value = value.detach()
    if not bool(torch.isfinite(value).all()):
        raise NonFiniteLossError(
            f"loss term '{name}' is {value.float().mean().item()} at epoch {epoch}, iteration {iteration}; "
            "stopped before its backward pass and optimizer step, the weights are unchanged."
        )


def check_finite_state(networks: Mapping[str, torch.nn.Module], epoch: int, iteration: int) -> None:
    """Raise :class:`NonFiniteStateError` naming the network and tensors when any state is NaN or Inf.

    Args:
        networks: ``{name: network}``, e.g. ``{"generator": G, "d_patch": D}``.
        epoch: current epoch, for the message.
        iteration: current iteration, for the message.
    """
    for net_name, network in networks.items():
        bad = non_finite_tensors(network)
        if bad:
            shown = ", ".join(f"'{n}'" for n in bad[:_MAX_NAMED])
            if len(bad) > _MAX_NAMED:
                shown += f" and {len(bad) - _MAX_NAMED} more"
            raise NonFiniteStateError(
                f"network '{net_name}' has non-finite values in {shown} after the optimizer step of epoch {epoch}, "
                f"iteration {iteration}; training stopped before any iteration or epoch handler ran, so nothing "
                "was saved from this state (a CheckpointSaver with save_final=True writes on every exception: "
                "do not resume from that file). Lower the learning rate or enable gradient clipping."
            )


def _loss_of(output: Any) -> torch.Tensor | None:
    """The ``loss`` entry of an engine output (a dict, a decollated list of dicts, or the loss itself)."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        output = output[0]
    if isinstance(output, Mapping):
        output = output.get("loss")
    if isinstance(output, (int, float)):
        return torch.tensor(float(output))
    return output if isinstance(output, torch.Tensor) else None


class NonFiniteGuard:
    """Stop any Ignite trainer at the first non-finite loss or network state (see the module docstring).

    On a MONAI engine (``monai.engines.Workflow``, e.g. ``SupervisedTrainer``) the loss ``engine.state.output
    ["loss"]`` is checked at ``IterationEvents.LOSS_COMPLETED``, which fires before ``backward`` and the
    optimizer step, so the weights stay as they were; the state is checked at ``IterationEvents.MODEL_COMPLETED``,
    which fires after the optimizer step and before every ``ITERATION_COMPLETED`` handler (an iteration-level
    checkpoint saver included). A plain Ignite engine has neither event: both checks then run at
    ``ITERATION_COMPLETED``, before the handlers attached after this guard (the loss check comes after the step).

    :class:`~common.engines.PairedGanTrainer` runs these checks itself with ``check_finite=True``.

    Args:
        networks: ``{name: network}`` whose parameters and buffers are checked; default ``{"network":
            engine.network}``.

    Raises:
        NonFiniteLossError: the loss is NaN or Inf.
        NonFiniteStateError: a parameter or buffer is NaN or Inf; the message names the network and tensors.
    """

    def __init__(self, networks: Mapping[str, torch.nn.Module] | None = None) -> None:
        if networks is not None:
            if not isinstance(networks, Mapping) or not networks:
                raise ValueError(f"networks must be a non-empty mapping of name to network, got {networks!r}.")
            for name, net in networks.items():
                if not isinstance(net, torch.nn.Module):
                    raise ValueError(f"networks[{name!r}] must be a torch.nn.Module, got {type(net).__name__}.")
        self.networks = None if networks is None else dict(networks)

    def attach(self, engine: Any) -> None:
        """Register the checks on ``engine``."""
        from ignite.engine import Events

        from monai.engines.utils import IterationEvents
        from monai.engines.workflow import Workflow

        if self.networks is None:
            network = getattr(engine, "network", None)
            if not isinstance(network, torch.nn.Module):
                raise ValueError("networks must be given for an engine without a `network` attribute.")
            self.networks = {"network": network}
        if isinstance(engine, Workflow):
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.check_loss)
            engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self.check_state)
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_loss)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_state)

    def check_loss(self, engine: Any) -> None:
        """Raise :class:`NonFiniteLossError` when the engine's current loss is NaN or Inf."""
        loss = _loss_of(engine.state.output)
        if loss is not None:
            check_finite_loss("loss", loss, engine.state.epoch, engine.state.iteration)

    def check_state(self, engine: Any) -> None:
        """Raise :class:`NonFiniteStateError` when a checked network holds a NaN or Inf."""
        check_finite_state(self.networks or {}, engine.state.epoch, engine.state.iteration)
