"""Faults get a clear message and leave the complete checkpoints intact: a model with no ReLU, an
evaluation set missing a class, a run that diverges."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnphases.experiments import data
from nnphases.recording.recorder import Recorder
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir


def _eval_set(n: int = 200, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    ds = data.synthetic(n=n, num_classes=classes, shape=(1, 4, 4), seed=1)
    return ds.x, ds.y


def _mlp(classes: int = 4) -> nn.Module:
    # Seeded: with some weights an inf input reaches no logit (every ReLU it feeds is negative), and the test
    # would depend on the random state left by earlier tests.
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, classes))


def test_model_without_relu(tmp_path):
    x, y = _eval_set()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    with pytest.raises(ValueError, match="no ReLU"):
        Recorder(model, (x, y), Schedule((0, 1), 10), tmp_path / "run")
    assert RunDir(tmp_path / "run").completed_steps() == []


def test_evaluation_set_missing_a_class(tmp_path):
    x, y = _eval_set()
    keep = y != 2
    with pytest.raises(ValueError, match=r"no samples of classes \[2\]"):
        Recorder(_mlp(), (x[keep], y[keep]), Schedule((0, 1), 10), tmp_path / "run")


@pytest.mark.parametrize("where", ["weights", "inputs"])
def test_diverged_run_keeps_complete_checkpoints(tmp_path, where):
    x, y = _eval_set()
    model = _mlp()
    batches = [(x, y)]  # a list of batches: the test swaps in damaged inputs after the first measurement
    rec = Recorder(model, batches, Schedule((0, 1, 2), 10), tmp_path / "run")
    rec.measure(0)
    if where == "weights":
        with torch.no_grad():
            model[1].weight.fill_(float("nan"))
        bad_x = x
    else:
        bad_x = x.clone()
        bad_x[0, 0, 0, 0] = float("inf")
        batches[0] = (bad_x, y)
    with pytest.raises((FloatingPointError, ValueError), match="NaN|infinite|not finite|diverged"):
        rec.measure(1)
    run = RunDir(tmp_path / "run")
    assert run.completed_steps() == [0]
    counts, sizes = run.read_counts(0)
    assert sizes.sum() == 200 and counts
