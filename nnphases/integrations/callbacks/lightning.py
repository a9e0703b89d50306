"""A Lightning callback that records sample sets (and any measures) at log-spaced global optimizer steps.

::

    from nnphases.integrations.callbacks.lightning import NnphasesCallback
    trainer = lightning.Trainer(max_epochs=20, accumulate_grad_batches=2,
                                callbacks=[NnphasesCallback("runs/mine", (x_val, y_val))])

The LightningModule is the model measured: ``module(x)`` must return
``[batch, classes]`` logits, or give ``output_fn`` to turn its output into
them. Without a schedule, one is built when training starts from the
trainer's planned optimizer steps (``trainer.estimated_stepping_batches``,
an epoch being ``ceil(num_training_batches / accumulate_grad_batches)``
steps). The callback's ``state_dict`` (kept in Lightning's checkpoints)
holds that schedule, so ``trainer.fit(..., ckpt_path=...)`` measures the same
steps and skips those already stored in the run folder. Under
``torch.distributed`` every rank builds a Recorder on the same evaluation
data and measures; how ranks split and reduce that work, and that rank 0
alone writes, is the Recorder's behaviour, passed through unchanged. Loggers
log on rank 0 only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as e:  # the core never needs Lightning; only this module does
    raise ImportError(
        f"nnphases.integrations.callbacks.lightning needs Lightning ({e}): pip install 'nnphases[lightning]'"
    ) from e

from ...recording.measures import Measure
from ...recording.recorder import Recorder, RecorderOptions
from ...recording.schedule import Schedule
from ._core import CallbackOptions, _Driver

__all__ = ["NnphasesCallback"]


class NnphasesCallback(pl.Callback):
    """Runs a :class:`~nnphases.recording.recorder.Recorder` on the LightningModule at the trainer's global
    optimizer steps.

    ``out``: the run folder. ``eval_data``: ``(x, y)`` tensors or a
    re-iterable of ``(x, y)`` batches (a DataLoader) of the callback's own,
    never the trainer's (padded when distributed) loaders. ``schedule``:
    default the log-spaced schedule over the planned steps (``options``:
    :class:`~nnphases.integrations.callbacks.CallbackOptions`). ``measures``,
    ``train_data``, ``seed``, ``config`` and ``recorder_options`` go to the
    Recorder. ``output_fn(module(x))`` gives the logits when the module does
    not return them. ``loggers``: :mod:`nnphases.integrations.loggers` objects fed each
    checkpoint once written, and closed when training ends. Measures step 0
    (or the step resumed from) when training starts, every scheduled step
    after an optimizer step, and marks the run complete when training ends;
    after an exception the run is left open, to resume.
    """

    def __init__(
        self,
        out: Any,
        eval_data: Any,
        *,
        schedule: Schedule | None = None,
        measures: Sequence[Measure] | None = None,
        train_data: Any = None,
        output_fn: Callable[[Any], torch.Tensor] | None = None,
        loggers: Sequence[Any] = (),
        options: CallbackOptions | None = None,
        recorder_options: RecorderOptions | None = None,
        seed: int = 0,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        self._driver = _Driver(
            out,
            eval_data,
            schedule=schedule,
            measures=measures,
            train_data=train_data,
            output_fn=output_fn,
            loggers=loggers,
            options=options,
            recorder_options=recorder_options,
            seed=seed,
            config=config,
        )

    @property
    def recorder(self) -> Recorder | None:
        """The Recorder, built when training starts."""
        return self._driver.recorder

    @property
    def schedule(self) -> Schedule | None:
        """The schedule measured, known when training starts."""
        return self._driver.schedule

    @property
    def state_key(self) -> str:
        return self._generate_state_key(out=str(self._driver.out))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def planned() -> tuple[Any, Any]:
            total = trainer.estimated_stepping_batches
            batches = trainer.num_training_batches
            spe = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else None
            return (int(total) if math.isfinite(total) else total), spe

        self._driver.start(pl_module, planned, trainer.global_step, trainer.global_rank == 0)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._driver.step(trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._driver.finish(trainer.global_step)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._driver.abort(exception)

    def state_dict(self) -> dict[str, Any]:
        return self._driver.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._driver.load_state_dict(state_dict)
