"""A Hugging Face ``TrainerCallback`` that records sample sets (and any measures) at log-spaced global steps.

::

    from nnphases.integrations.callbacks.huggingface import NnphasesCallback
    cb = NnphasesCallback("runs/mine", (x_val, y_val), output_fn=lambda out: out.logits)
    Trainer(model=model, args=args, train_dataset=train, callbacks=[cb]).train()

Hugging Face models return a ``ModelOutput``, not a tensor: ``output_fn``
turns it into ``[batch, classes]`` logits (the model is measured through
:class:`~nnphases.integrations.callbacks.Logits`, so its ReLU sites are named
``model.<name>``), and ``x`` of the evaluation data is passed as the model's
first positional argument (``input_ids`` or ``pixel_values``). Measurements
follow ``state.global_step``, which counts optimizer steps, so gradient
accumulation measures once per step. Without a schedule, one is built from
``state.max_steps``, an epoch being ``ceil(len(train_dataloader) /
gradient_accumulation_steps)`` steps as the Trainer counts them. The schedule
is kept in the ``TrainerState`` (``stateful_callbacks["nnphases:<out>"]``,
saved in each checkpoint's ``trainer_state.json``), so
``trainer.train(resume_from_checkpoint=...)`` measures the same steps and
skips those already stored in the run folder. Under ``torch.distributed``
every rank measures the same evaluation data through the Recorder, whose
distributed behaviour (sharding, reduction, rank 0 writing) passes through
unchanged; loggers log on the world's process zero only. The Trainer has no
hook for exceptions: a failed ``train()`` leaves the run open, to resume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as e:  # the core never needs transformers; only this module does
    raise ImportError(
        f"nnphases.integrations.callbacks.huggingface needs transformers ({e}): pip install 'nnphases[huggingface]'"
    ) from e

from ...recording.measures import Measure
from ...recording.recorder import Recorder, RecorderOptions
from ...recording.schedule import Schedule
from ._core import CallbackOptions, _Driver

__all__ = ["NnphasesCallback"]


class NnphasesCallback(TrainerCallback):
    """Runs a :class:`~nnphases.recording.recorder.Recorder` on the Trainer's model at its global optimizer steps.

    Arguments as for :class:`nnphases.integrations.callbacks.lightning.NnphasesCallback`:
    ``out`` the run folder, ``eval_data`` the callback's own ``(x, y)``
    tensors or DataLoader (never the Trainer's padded distributed loader),
    ``output_fn`` the model's output to logits (e.g. ``lambda out:
    out.logits``), ``loggers`` fed each checkpoint once written and closed
    at the end; ``schedule``, ``options``, and the Recorder's ``measures``,
    ``train_data``, ``seed``, ``config``, ``recorder_options``.
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
        # Not an ExportableState: the Trainer would rebuild such a callback from JSON arguments, which the
        # evaluation data and loggers are not; a key of its own in stateful_callbacks is kept as it is.
        self._key = f"nnphases:{out}"

    @property
    def recorder(self) -> Recorder | None:
        """The Recorder, built when training starts."""
        return self._driver.recorder

    @property
    def schedule(self) -> Schedule | None:
        """The schedule measured, known when training starts."""
        return self._driver.schedule

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = kwargs.get("model")
        if model is None:
            raise ValueError("the Trainer gave the callback no model; nnphases measures the Trainer's model")
        # stateful_callbacks came with transformers 4.41; before it, the schedule is rebuilt from max_steps.
        kept = getattr(state, "stateful_callbacks", None)
        if isinstance(kept, dict):
            self._driver.load_state_dict(kept.get(self._key))

        def planned() -> tuple[Any, Any]:
            loader = kwargs.get("train_dataloader")
            try:
                batches = len(loader)  # type: ignore[arg-type]  # any loader: TypeError (caught) without a length
            except TypeError:
                return state.max_steps, None
            return state.max_steps, max(1, math.ceil(batches / args.gradient_accumulation_steps))

        self._driver.start(model, planned, state.global_step, state.is_world_process_zero)
        if isinstance(kept, dict):
            kept[self._key] = self._driver.state_dict()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._driver.step(state.global_step)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._driver.finish(state.global_step)
