"""TensorBoard logging of every optimizer's learning rate, so schedules (linear decay, warm-up) can be checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.optim.optimizer import Optimizer

from monai.handlers.tensorboard_handlers import TensorBoardHandler

__all__ = ["LearningRateLogger", "trainer_optimizers"]


def trainer_optimizers(engine: Any) -> dict[str, Optimizer]:
    """The named optimizers of a trainer.

    ``PairedGanTrainer`` gives ``generator`` (``g_optimizer``) and ``d_<name>`` for each discriminator;
    ``monai.engines.SupervisedTrainer`` (or any engine with an ``optimizer``) gives ``optimizer``.

    Raises:
        ValueError: when the engine holds no optimizer this function knows of.
    """
    from monai.engines import SupervisedTrainer

    from common.engines.paired_gan import PairedGanTrainer

    if isinstance(engine, PairedGanTrainer):
        named = {"generator": engine.g_optimizer}
        named.update({f"d_{name}": spec.optimizer for name, spec in engine.discriminators.items()})
        return named
    if isinstance(engine, SupervisedTrainer) or isinstance(getattr(engine, "optimizer", None), Optimizer):
        return {"optimizer": engine.optimizer}
    raise ValueError(
        f"cannot find the optimizers of a {type(engine).__name__}; pass optimizers={{name: optimizer}} to "
        "LearningRateLogger."
    )


class LearningRateLogger(TensorBoardHandler):
    """Write ``lr/<name>`` for every optimizer to TensorBoard once per epoch (or iteration).

    The value written at step ``e`` is the learning rate the optimizer *uses* in epoch ``e``: it is read when
    the epoch starts, so the order relative to ``LrScheduleHandler`` (which steps at epoch end) does not
    matter. An optimizer with several parameter groups writes ``lr/<name>/group_<i>``.

    Share the writer of the bundle's ``TensorBoardStatsHandler`` (``summary_writer``) to keep one event file
    per run, or give ``log_dir`` to let this handler create (and close on completion) its own writer.

    Args:
        optimizers: ``{name: optimizer}``; ``None`` discovers them at ``attach`` with :func:`trainer_optimizers`.
        summary_writer: an existing ``SummaryWriter``.
        log_dir: folder of the writer created when ``summary_writer`` is ``None``.
        epoch_level: log at every ``EPOCH_STARTED`` (step = epoch); ``False`` logs at every
            ``ITERATION_STARTED`` (step = iteration), for per-iteration schedules.
        tag_prefix: prefix of the tags.
    """

    def __init__(
        self,
        optimizers: Mapping[str, Optimizer] | None = None,
        summary_writer: Any | None = None,
        log_dir: str = "./runs",
        epoch_level: bool = True,
        tag_prefix: str = "lr/",
    ) -> None:
        if optimizers is not None:
            for name, opt in optimizers.items():
                if not isinstance(opt, Optimizer):
                    raise ValueError(f"optimizers[{name!r}] must be a torch Optimizer, got {type(opt).__name__}.")
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.optimizers = dict(optimizers) if optimizers is not None else None
        self.epoch_level = bool(epoch_level)
        self.tag_prefix = tag_prefix

    def attach(self, engine: Any) -> None:
        """Register the logging event (and closing an own writer on ``COMPLETED``)."""
        from ignite.engine import Events

        if self.optimizers is None:
            self.optimizers = trainer_optimizers(engine)
        event = Events.EPOCH_STARTED if self.epoch_level else Events.ITERATION_STARTED
        if not engine.has_event_handler(self, event):
            engine.add_event_handler(event, self)
        if self.internal_writer and not engine.has_event_handler(self._close, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._close)

    def learning_rates(self) -> dict[str, float]:
        """``{tag: lr}`` of the current parameter groups."""
        values: dict[str, float] = {}
        for name, opt in (self.optimizers or {}).items():
            groups = opt.param_groups
            for i, group in enumerate(groups):
                tag = f"{self.tag_prefix}{name}" if len(groups) == 1 else f"{self.tag_prefix}{name}/group_{i}"
                values[tag] = float(group["lr"])
        return values

    def __call__(self, engine: Any) -> None:
        step = engine.state.epoch if self.epoch_level else engine.state.iteration
        for tag, value in self.learning_rates().items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def _close(self, engine: Any) -> None:
        self.close()
