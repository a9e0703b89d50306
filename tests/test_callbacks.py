"""The Lightning and Hugging Face callbacks, run in real Trainers on a tiny MLP on the CPU.

Every case trains 2 epochs of 32 batches of 4 with gradient accumulation over 2
batches: 16 optimizer steps an epoch, 32 in all, 64 micro-batches. The
schedule built from the trainer's plan (4 per decade) is 0, 1, 2, 3, 6, 10,
18, 32, so a callback that counted micro-batches or measured twice would store
other steps. The framework tests skip when the framework is missing
(``pip install -e ".[test]"`` installs them).
"""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from nnphases.integrations.callbacks import CallbackOptions, Logits
from nnphases.integrations.callbacks._core import _Driver
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir

FRAMEWORKS = ["lightning", "huggingface"]
EPOCHS, BATCHES, BATCH, ACCUMULATE = 2, 32, 4, 2
STEPS_PER_EPOCH = BATCHES // ACCUMULATE
SCHEDULE = Schedule.log(EPOCHS, STEPS_PER_EPOCH, per_decade=4)
CRASH_AT, SAVED_AT = 20, 16  # a crash after step 20 resumes from the checkpoint at the end of epoch 1


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCHES * BATCH, 8, generator=g)
    y = torch.randperm(BATCHES * BATCH, generator=g) % 3
    return x, y


def _eval() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _data()
    return x[:60], y[:60]


class _Crash(RuntimeError):
    pass


# -- Lightning ------------------------------------------------------------------------------------


def _lightning_train(root: Path, cb_kwargs: dict[str, Any], crash_at: int | None = None,
                     ckpt_path: str | None = None) -> tuple[Any, nn.Module, nn.Module, Callable[[nn.Module], Any]]:
    """Fits once; returns the callback, the model at initialisation, the model trained and the measured view."""
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from nnphases.integrations.callbacks.lightning import NnphasesCallback

    class Mlp(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.2)

    class Crash(pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == crash_at:
                raise _Crash(f"killed at step {crash_at}")

    torch.manual_seed(0)
    model = Mlp()
    initial = copy.deepcopy(model)
    cb = NnphasesCallback(root / "run", _eval(), **cb_kwargs)
    trainer = pl.Trainer(max_epochs=EPOCHS, accumulate_grad_batches=ACCUMULATE, logger=False,
                         enable_checkpointing=True, default_root_dir=root, callbacks=[cb, Crash()],
                         accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(TensorDataset(*_data()), batch_size=BATCH), ckpt_path=ckpt_path)
    return cb, initial, model, lambda m: m


def _lightning_checkpoint(root: Path) -> str:
    (path,) = (root / "checkpoints").glob(f"*step={SAVED_AT}.ckpt")
    return str(path)


# -- Hugging Face ---------------------------------------------------------------------------------


def _huggingface_train(root: Path, cb_kwargs: dict[str, Any], crash_at: int | None = None,
                       ckpt_path: str | None = None) -> tuple[Any, nn.Module, nn.Module, Callable[[nn.Module], Any]]:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers.modeling_outputs import SequenceClassifierOutput

    from nnphases.integrations.callbacks.huggingface import NnphasesCallback

    class Mlp(nn.Module):
        """A model as the Trainer calls it (keyword inputs and labels), returning a ModelOutput, not logits."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
            logits = self.net(x)
            loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    class Rows(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x, self.y = _data()

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": self.x[i], "labels": self.y[i]}

    class Crash(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == crash_at:
                raise _Crash(f"killed at step {crash_at}")

    torch.manual_seed(0)
    model = Mlp()
    initial = copy.deepcopy(model)
    cb = NnphasesCallback(root / "run", _eval(), output_fn=_logits, **cb_kwargs)
    args = transformers.TrainingArguments(
        output_dir=str(root / "hf"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=ACCUMULATE,
        num_train_epochs=EPOCHS, learning_rate=0.2, optim="sgd", report_to=[], use_cpu=True,
        save_strategy="steps", save_steps=SAVED_AT, logging_strategy="no", disable_tqdm=True, seed=0,
        dataloader_pin_memory=False)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[cb, Crash()])
    try:
        trainer.train(resume_from_checkpoint=ckpt_path)
    except _Crash:
        # The Trainer has no hook for exceptions (Lightning's on_exception flushes): the checkpoint being
        # written ends here, as it would when a killed process's files are left as they are.
        cb.recorder.flush()
        raise
    return cb, initial, model, lambda m: Logits(m, _logits)


def _logits(out: Any) -> torch.Tensor:
    return out.logits


def _huggingface_checkpoint(root: Path) -> str:
    return str(root / "hf" / f"checkpoint-{SAVED_AT}")


TRAIN = {"lightning": _lightning_train, "huggingface": _huggingface_train}
CHECKPOINT = {"lightning": _lightning_checkpoint, "huggingface": _huggingface_checkpoint}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Every step given to Recorder.maybe_measure and Recorder.measure, in order."""
    seen: dict[str, list[int]] = {"maybe_measure": [], "measure": []}
    for name in seen:
        original = getattr(Recorder, name)

        def spy(self: Recorder, step: int, *args: Any, _name: str = name, _original: Any = original,
                **kwargs: Any) -> Any:
            seen[_name].append(step)
            return _original(self, step, *args, **kwargs)

        monkeypatch.setattr(Recorder, name, spy)
    return seen


def _manual_counts(model: nn.Module, out: Path) -> dict[str, np.ndarray]:
    rec = Recorder(model, _eval(), Schedule((0,), STEPS_PER_EPOCH), out,
                   options=RecorderOptions(background_writes=False))
    rec.measure(0)
    rec.close()
    return RunDir(out).read_counts(0)[0]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_measures_the_schedule_by_optimizer_step(framework: str, tmp_path: Path,
                                                 calls: dict[str, list[int]]) -> None:
    cb, initial, trained, view = TRAIN[framework](tmp_path, {"options": CallbackOptions(per_decade=4)})
    run = RunDir(tmp_path / "run")
    assert cb.schedule == SCHEDULE
    assert run.completed_steps() == list(SCHEDULE.steps)
    assert run.done
    # Asked once per optimizer step (micro-batches and the end of training repeat a step and are not passed on).
    assert calls["maybe_measure"] == list(range(EPOCHS * STEPS_PER_EPOCH + 1))
    assert calls["measure"] == list(SCHEDULE.steps)
    layers = run.checkpoint_path(SCHEDULE.last) / "layers.parquet"
    assert layers.is_file()
    from nnphases.store.runs import read_table

    epochs = read_table(run.path, "stats").groupby("step")["epoch"].first()
    assert epochs.to_dict() == {s: s / STEPS_PER_EPOCH for s in SCHEDULE.steps}
    for step, model in ((0, initial), (SCHEDULE.last, trained)):
        expect = _manual_counts(view(copy.deepcopy(model)), tmp_path / f"manual-{step}")
        got = run.read_counts(step)[0]
        assert list(got) == list(expect)
        for layer in expect:
            np.testing.assert_array_equal(got[layer], expect[layer], err_msg=f"{framework} step {step} {layer}")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_skips_stored_steps(framework: str, tmp_path: Path, calls: dict[str, list[int]]) -> None:
    with pytest.raises(_Crash):
        TRAIN[framework](tmp_path, {"options": CallbackOptions(per_decade=4)}, crash_at=CRASH_AT)
    run = RunDir(tmp_path / "run")
    before = [s for s in SCHEDULE.steps if s <= CRASH_AT]
    assert run.completed_steps() == before and not run.done
    stored = {s: run.checkpoint_path(s).stat().st_ino for s in before}
    calls["measure"].clear()
    # Another per_decade: the schedule comes back from the framework's checkpoint, not from the options.
    cb, *_ = TRAIN[framework](tmp_path, {"options": CallbackOptions(per_decade=10)},
                              ckpt_path=CHECKPOINT[framework](tmp_path))
    assert cb.schedule == SCHEDULE
    assert calls["measure"] == [s for s in SCHEDULE.steps if s > CRASH_AT]
    assert run.completed_steps() == list(SCHEDULE.steps) and run.done
    assert {s: run.checkpoint_path(s).stat().st_ino for s in before} == stored


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_fresh_fit_into_a_crashed_runs_folder_is_refused(framework: str, tmp_path: Path) -> None:
    """Without the framework's checkpoint the model starts afresh: its measurements would follow the crashed
    run's under one folder."""
    with pytest.raises(_Crash):
        TRAIN[framework](tmp_path, {"options": CallbackOptions(per_decade=4)}, crash_at=CRASH_AT)
    run = RunDir(tmp_path / "run")
    before = run.completed_steps()
    with pytest.raises(ValueError, match=rf"holds checkpoints up to step {before[-1]}, but training is at step 0: "
                       "a run started afresh"):
        TRAIN[framework](tmp_path, {"options": CallbackOptions(per_decade=4)})
    assert run.completed_steps() == before and not run.done


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_training_that_ends_before_the_schedule_measures_the_final_model(framework: str, tmp_path: Path) -> None:
    last = EPOCHS * STEPS_PER_EPOCH
    schedule = Schedule((0, 5, last + 100), STEPS_PER_EPOCH)
    with pytest.warns(UserWarning, match=rf"training ended at step {last}, before the schedule's last step "
                      rf"{last + 100}; the final model is measured at step {last} and 1 scheduled steps"):
        TRAIN[framework](tmp_path, {"schedule": schedule})
    run = RunDir(tmp_path / "run")
    assert run.completed_steps() == [0, 5, last] and run.done


class _Seen:
    """A logger that checks each checkpoint is complete on disk when it is told about it."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.closed = False

    def log_checkpoint(self, run: Path, step: int) -> None:
        assert (RunDir(run).checkpoint_path(step) / "layers.parquet").is_file()
        self.steps.append(step)

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loggers_get_each_written_checkpoint(framework: str, tmp_path: Path) -> None:
    seen = _Seen()
    TRAIN[framework](tmp_path, {"loggers": [seen], "options": CallbackOptions(per_decade=4)})
    assert seen.steps == list(SCHEDULE.steps)
    assert seen.closed


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_explicit_schedule_wins(framework: str, tmp_path: Path) -> None:
    schedule = Schedule((0, 5, 32), STEPS_PER_EPOCH)
    cb, *_ = TRAIN[framework](tmp_path, {"schedule": schedule})
    assert cb.schedule == schedule
    assert RunDir(tmp_path / "run").completed_steps() == [0, 5, 32]


def _driver(**changes: Any) -> _Driver:
    kwargs: dict[str, Any] = dict(out="run", eval_data=_eval(), schedule=None, measures=None, train_data=None,
                                  output_fn=None, loggers=(), options=None, recorder_options=None, seed=0,
                                  config=None)
    kwargs.update(changes)
    out, eval_data = kwargs.pop("out"), kwargs.pop("eval_data")
    return _Driver(out, eval_data, **kwargs)


@pytest.mark.parametrize("make, error, match", [
    (lambda: _driver(out=3), TypeError, "out must be a path, got 3"),
    (lambda: _driver(eval_data=None), TypeError, "eval_data must be"),
    (lambda: _driver(schedule=[0, 1]), TypeError, "schedule must be a nnphases.recording.schedule.Schedule or None, got list"),
    (lambda: _driver(output_fn="logits"), TypeError, "output_fn must be callable"),
    (lambda: _driver(loggers=_Seen()), TypeError, "loggers must be a list"),
    (lambda: _driver(loggers=[object()]), TypeError, r"loggers\[0\] must have log_checkpoint"),
    (lambda: _driver(options={"per_decade": 4}), TypeError, "options must be CallbackOptions, got dict"),
    (lambda: _driver(recorder_options=3), TypeError, "recorder_options must be RecorderOptions, got int"),
    (lambda: CallbackOptions(per_decade=0), ValueError, "per_decade must be >= 1, got 0"),
    (lambda: CallbackOptions(first_epoch=0.0), ValueError, "first_epoch must be > 0, got 0.0"),
    (lambda: CallbackOptions(steps_per_epoch=1.5), TypeError, "steps_per_epoch must be an integer, got 1.5"),
    (lambda: Logits(nn.Linear(2, 2), "logits"), TypeError, "output_fn must be callable"),
    (lambda: Logits(lambda x: x, _logits), TypeError, "model must be a torch.nn.Module, got function"),
], ids=["out", "eval_data", "schedule", "output_fn", "loggers-not-list", "logger", "options", "recorder_options",
        "per_decade", "first_epoch", "steps_per_epoch", "logits-fn", "logits-model"])
def test_bad_arguments(make: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("total, spe, options, expect", [
    (32, 16, CallbackOptions(per_decade=4), SCHEDULE),
    (32, None, CallbackOptions(per_decade=4), Schedule.log(1, 32, per_decade=4)),       # no length: one epoch
    (32, 16, CallbackOptions(per_decade=4, steps_per_epoch=8), Schedule.log(4, 8, per_decade=4)),
    (1000, 100, CallbackOptions(first_epoch=0.1, per_decade=2), Schedule.log(10, 100, 2, first_epoch=0.1)),
], ids=["planned", "no-epoch-length", "steps_per_epoch-option", "first_epoch"])
def test_planned_schedule(total: int, spe: int | None, options: CallbackOptions, expect: Schedule) -> None:
    from nnphases.integrations.callbacks._core import planned_schedule

    got = planned_schedule(total, spe, options)
    assert got == expect and got.last == total


@pytest.mark.parametrize("total", [float("inf"), 0, -1], ids=["infinite", "zero", "unknown"])
def test_planned_schedule_needs_finite_steps(total: Any) -> None:
    from nnphases.integrations.callbacks._core import planned_schedule

    with pytest.raises(ValueError, match="plans no finite number of optimizer steps"):
        planned_schedule(total, 10, CallbackOptions())


@pytest.mark.parametrize("state, match", [
    ({"steps": [0, 2, 1], "steps_per_epoch": 4}, "strictly increasing"),
    ({"steps": [0, 1]}, "steps_per_epoch"),
], ids=["unsorted", "missing"])
def test_malformed_checkpoint_state(state: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"nnphases callback state is malformed.*{match}"):
        _driver().load_state_dict(state)


def test_core_never_imports_frameworks() -> None:
    code = textwrap.dedent("""
        import sys
        import nnphases, nnphases.recording.recorder, nnphases.store.runs, nnphases.store, nnphases.recording.measures, nnphases.integrations.callbacks
        import nnphases.integrations.loggers, nnphases.cli
        found = sorted(m for m in ("lightning", "pytorch_lightning", "transformers", "accelerate", "tensorboard",
                                   "wandb", "torch.utils.tensorboard") if m in sys.modules)
        assert not found, found
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("module, hidden, extra", [
    ("nnphases.integrations.callbacks.lightning", "lightning", "lightning"),
    ("nnphases.integrations.callbacks.huggingface", "transformers", "huggingface"),
], ids=["lightning", "huggingface"])
def test_missing_framework_says_what_to_install(module: str, hidden: str, extra: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == hidden or m.startswith(hidden + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, hidden, None)  # import of it raises ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'nnphases\[{extra}\]'"):
        importlib.import_module(module)
