"""What both framework callbacks share: options, the logits adapter, and the driver that owns the Recorder.

The driver knows nothing of a framework: it is given the model, the global
optimizer step and, when no schedule is known, the trainer's planned number of
steps, and it builds the :class:`~nnphases.recording.recorder.Recorder`, measures, logs
and closes. A framework module only maps its hooks onto :meth:`_Driver.start`,
:meth:`_Driver.step`, :meth:`_Driver.finish` and its checkpoint state.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...options import check, option
from ...recording.measures import Measure
from ...recording.recorder import Recorder, RecorderOptions
from ...recording.schedule import MAX_PER_DECADE, Schedule


@dataclass(frozen=True)
class CallbackOptions:
    per_decade: int = option(
        10,
        min=1,
        max=MAX_PER_DECADE,
        help="measurements per decade of steps when the schedule is built from the trainer's planned steps",
    )
    first_epoch: float | None = option(
        None, above=0, help="epoch of the first log-spaced measurement after step 0 (default: the first optimizer step)"
    )
    steps_per_epoch: int | None = option(
        None,
        min=1,
        help="optimizer steps per epoch, for the epoch axis; default: "
        "the trainer's (the whole run when its data has no length)",
    )

    def __post_init__(self) -> None:
        check(self)


class Logits(nn.Module):
    """``model`` with ``output_fn`` applied to its output, so that ``Logits(model, fn)(x)`` is ``[batch, classes]``
    logits, as the Recorder requires: ``Logits(hf_model, lambda out: out.logits)``. The model's ReLU sites keep
    their names under the prefix ``model.``; ``x`` is passed as the model's only positional argument."""

    def __init__(self, model: nn.Module, output_fn: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(output_fn):
            raise TypeError(f"output_fn must be callable as output_fn(model(x)) -> logits, got {output_fn!r}")
        self.model = model
        self.output_fn = output_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_fn(self.model(x))


def planned_schedule(total: Any, steps_per_epoch: Any, options: CallbackOptions) -> Schedule:
    """The log-spaced schedule over a trainer's ``total`` planned optimizer steps, ``steps_per_epoch`` to an epoch
    (``options.steps_per_epoch`` first, then this, then the whole run)."""
    if isinstance(total, bool) or not isinstance(total, numbers.Integral) or total < 1:
        raise ValueError(
            f"the trainer plans no finite number of optimizer steps (got {total!r}); give the trainer "
            "max_steps or max_epochs, or give the callback a schedule"
        )
    spe = options.steps_per_epoch or steps_per_epoch
    if isinstance(spe, bool) or not isinstance(spe, numbers.Integral) or spe < 1:
        spe = int(total)
    return Schedule.log(int(total) / int(spe), int(spe), options.per_decade, options.first_epoch)


class _Driver:
    """Builds the Recorder when training starts and measures by global optimizer step (once per step, so
    gradient accumulation's micro-batches never measure); logs each new checkpoint once it is written."""

    def __init__(
        self,
        out: Any,
        eval_data: Any,
        *,
        schedule: Schedule | None,
        measures: Sequence[Measure] | None,
        train_data: Any,
        output_fn: Callable[[Any], torch.Tensor] | None,
        loggers: Sequence[Any],
        options: CallbackOptions | None,
        recorder_options: RecorderOptions | None,
        seed: int,
        config: dict | None,
    ) -> None:
        if not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out must be a path, got {out!r}")
        if eval_data is None:
            raise TypeError(
                "eval_data must be (x, y) tensors or a re-iterable of (x, y) batches (a DataLoader), got None"
            )
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be a nnphases.recording.schedule.Schedule or None, got {type(schedule).__name__}"
            )
        if output_fn is not None and not callable(output_fn):
            raise TypeError(f"output_fn must be callable as output_fn(model(x)) -> logits, got {output_fn!r}")
        if isinstance(loggers, (str, bytes)) or not isinstance(loggers, Sequence):
            raise TypeError(f"loggers must be a list of loggers (nnphases.integrations.loggers), got {loggers!r}")
        for i, lg in enumerate(loggers):
            if not callable(getattr(lg, "log_checkpoint", None)):
                raise TypeError(f"loggers[{i}] must have log_checkpoint(run, step), got {type(lg).__name__}")
        self.options = options if options is not None else CallbackOptions()
        if not isinstance(self.options, CallbackOptions):
            raise TypeError(f"options must be CallbackOptions, got {type(self.options).__name__}")
        if recorder_options is not None and not isinstance(recorder_options, RecorderOptions):
            raise TypeError(f"recorder_options must be RecorderOptions, got {type(recorder_options).__name__}")
        self.out, self.eval_data, self.train_data = out, eval_data, train_data
        self.measures, self.output_fn, self.loggers = measures, output_fn, list(loggers)
        self.recorder_options, self.seed, self.config = recorder_options, seed, config
        self._given = schedule
        self._stored: Schedule | None = None  # the schedule a resumed run's checkpoint holds
        self.schedule: Schedule | None = None
        self.recorder: Recorder | None = None
        self._main = True
        self._last: int | None = None

    def start(self, model: nn.Module, planned: Callable[[], tuple[Any, Any]], global_step: int, main: bool) -> None:
        """Builds the Recorder (schedule: the one given, else the one in the resumed checkpoint, else the trainer's
        planned steps) and measures the current step: initialisation, or the step resumed from."""
        if self.recorder is not None:
            self.recorder.flush()  # a previous run's last write ends before a new Recorder tidies the folder
        self.schedule = self._given or self._stored or planned_schedule(*planned(), self.options)
        measured = Logits(model, self.output_fn) if self.output_fn is not None else model
        self.recorder = Recorder(
            measured,
            self.eval_data,
            self.schedule,
            self.out,
            self.measures,
            train_data=self.train_data,
            seed=self.seed,
            config=self.config,
            options=self.recorder_options,
        )
        # The measures' own resume state (e.g. warm-started probes) is kept with the run's newest checkpoint, which
        # is what the next measurement would have started from had training not stopped.
        latest = self.recorder.run.latest_state(map_location=self.recorder.device)
        if latest is not None and latest[1].get("recorder"):
            self.recorder.load_state_dict(latest[1]["recorder"])
        self._main, self._last = main, None
        self.step(global_step)

    def step(self, global_step: int) -> None:
        """Measures ``global_step`` if scheduled; called at every micro-batch, it acts once per optimizer step."""
        if self.recorder is None or global_step == self._last:
            return
        self._last = global_step
        if self.recorder.maybe_measure(global_step, state=dict) and self.loggers and self._main:
            self.recorder.flush()  # loggers read the checkpoint's files
            for lg in self.loggers:
                lg.log_checkpoint(self.recorder.run.path, global_step)

    def finish(self, global_step: int) -> None:
        """Measures the last step if scheduled, marks the run complete and closes the loggers."""
        if self.recorder is None:
            return
        self.step(global_step)
        s = self.schedule
        if s is not None and global_step < s.last and global_step not in s:
            # Training stopped before the schedule's end (max_steps, early stopping): the final model is measured
            # anyway, and the steps never reached are said.
            warnings.warn(
                f"nnphases: training ended at step {global_step}, before the schedule's last step {s.last}; the "
                f"final model is measured at step {global_step} and {sum(1 for x in s.steps if x > global_step)} "
                "scheduled steps after it are not",
                stacklevel=2,
            )
            self.recorder.measure(global_step, state={})
        self.recorder.close()
        if self._main:
            for lg in self.loggers:
                close = getattr(lg, "close", None)
                if callable(close):
                    close()

    def abort(self, exception: BaseException | None = None) -> None:
        """Training failed: the checkpoint being written is completed, and the run is left open to resume."""
        if self.recorder is None:
            return
        try:
            self.recorder.flush()
        except Exception as e:
            if exception is None:
                raise
            exception.add_note(f"nnphases: the last checkpoint could not be written either: {e}")

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the schedule, so that it measures the same steps (JSON-ready)."""
        s = self.schedule or self._stored
        return {} if s is None else {"steps": list(s.steps), "steps_per_epoch": s.steps_per_epoch}

    def load_state_dict(self, state: Any) -> None:
        if not state:
            return
        try:
            self._stored = Schedule(tuple(state["steps"]), state["steps_per_epoch"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"the checkpoint's nnphases callback state is malformed ({e}): {state!r:.120}") from None
