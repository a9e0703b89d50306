"""A new measure with a new table, defined here and nowhere else: the Recorder runs it and the store writes,
verifies, reads back, resumes and compacts its table like the built-in ones, with no other file touched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from nnphases import EvalStats, Recorder, RecorderOptions, SampleSets, Schedule
from nnphases.options import check, option
from nnphases.recording.measures import Measure, Output
from nnphases.store import RunDir, declared, forget_table, read_table, register_table

COLUMNS = [("split", pa.string()), ("mean_margin", pa.float64()), ("samples", pa.int64())]


@pytest.fixture(autouse=True)
def margins_table():
    """The table declared as a measure's module declares it, and forgotten afterwards: declarations are
    process-wide, and other tests list the declared tables."""
    spec = register_table("margins", COLUMNS)
    yield spec
    forget_table("margins")
    assert "margins" not in declared()


@dataclass(frozen=True)
class MarginsOptions:
    top: int = option(2, min=2, help="the margin between the largest logit and the top-th")

    def __post_init__(self) -> None:
        check(self)


class Margins(Measure):
    """The mean gap between the largest and the ``top``-th logit over the evaluation set."""

    name = "margins"
    Options = MarginsOptions

    def passes(self):
        return {"eval": ()}

    def begin(self, checkpoint):
        self._sum = torch.zeros(2, dtype=torch.float64)

    def update_batch(self, p, batch, logits):
        top = torch.topk(logits.detach().double(), self.options.top, dim=1).values
        self._sum += torch.stack([(top[:, 0] - top[:, -1]).sum(), torch.tensor(float(len(logits)))])

    def sums(self, p):
        return {"margin": self._sum}

    def compute(self):
        total, n = self._sum.tolist()
        return Output(tables={"margins": [{"split": "val", "mean_margin": total / n, "samples": int(n)}]})


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(50, 8, generator=g), torch.randint(0, 3, (50,), generator=g)


def _expected(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():  # in the Recorder's batches of 16: float32 logits depend on the batch
        logits = torch.cat([model(x[i:i + 16]) for i in range(0, len(x), 16)])
        top = torch.topk(logits.double(), 2, dim=1).values
    return float((top[:, 0] - top[:, 1]).mean())


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_a_new_measure_writes_verifies_reads_resumes_and_compacts_its_table(tmp_path: Path) -> None:
    x, y = _data()
    out = tmp_path / "run"
    measures = lambda: [SampleSets(), EvalStats(), Margins()]  # noqa: E731
    model = _model()
    want = {}
    rec = Recorder(model, (x, y), Schedule((0, 1, 2), 1), out, measures(), options=RecorderOptions(batch_size=16))
    for step in (0, 1):
        if step:
            _train(model, x, y)
        want[step] = _expected(model, x)
        rec.maybe_measure(step)
    rec.flush()
    del rec  # a crash before step 2: no DONE marker

    # Resumed by a new Recorder on the same folder with the same measures: steps 0 and 1 stay as written.
    resumed = Recorder(model, (x, y), Schedule((0, 1, 2), 1), out, measures(), options=RecorderOptions(batch_size=16))
    assert resumed.done_steps == {0, 1}
    _train(model, x, y)
    want[2] = _expected(model, x)
    resumed.maybe_measure(2)
    resumed.close()

    run = RunDir(out)
    assert run.done and run.completed_steps() == [0, 1, 2]
    for step in run.completed_steps():
        run.verify(step)  # the new table's file is in the manifest and matches it
        assert "margins.parquet" in (run.checkpoint_path(step) / "manifest.json").read_text()
    table = read_table(out, "margins")
    assert list(table.columns) == ["seed", "step", "epoch", "split", "mean_margin", "samples"]
    assert table["step"].tolist() == [0, 1, 2] and table["samples"].tolist() == [50, 50, 50]
    np.testing.assert_allclose(table["mean_margin"], [want[s] for s in (0, 1, 2)], rtol=1e-12)

    files = run.compact()
    assert any(f.name.startswith("margins-") for f in files)
    assert not list(out.glob("checkpoints/*/margins.parquet"))  # moved into tables/
    pd_after = read_table(out, "margins")
    assert pd_after.equals(table)
    assert run.read_table(1, "margins")["mean_margin"].tolist() == [table["mean_margin"][1]]


def test_a_table_must_be_declared_and_owned_by_one_measure(tmp_path: Path) -> None:
    x, y = _data()

    class Undeclared(Margins):
        name = "undeclared"

        def compute(self):
            return Output(tables={"edges": [{"a": 1}]})

    rec = Recorder(_model(), (x, y), Schedule((0,), 1), tmp_path / "a", [SampleSets(), Undeclared()])
    with pytest.raises(ValueError, match="'edges' is not a declared table"):
        rec.maybe_measure(0)
        rec.flush()

    class Twice(Margins):
        name = "twice"

    rec = Recorder(_model(), (x, y), Schedule((0,), 1), tmp_path / "b", [SampleSets(), Margins(), Twice()])
    with pytest.raises(ValueError, match="two measures wrote the table 'margins'"):
        rec.maybe_measure(0)
        rec.flush()
    with pytest.raises(ValueError, match="already declared with other columns"):
        register_table("margins", [("split", pa.string())])
