"""Masks need the same sample order in every pass (bit s is sample s): a DataLoader whose sampler may reorder the
samples is refused with Masks, whatever sampler class does it, and the ones with a fixed order are kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from nnphases import Masks, Recorder, SampleSets, Schedule

N = 64


class Reversed(Sampler[int]):
    """A user's sampler: its order is fixed, but nothing tells nnphases so."""

    def __iter__(self):
        return iter(range(N - 1, -1, -1))

    def __len__(self) -> int:
        return N


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(N, 8, generator=g), torch.randint(0, 3, (N,), generator=g))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


REFUSED = [
    pytest.param(lambda ds: DataLoader(ds, batch_size=16, shuffle=True), r"shuffles \(its sampler is a RandomSampler\)",
                 id="shuffle"),
    pytest.param(lambda ds: DataLoader(ds, batch_size=16, sampler=SubsetRandomSampler(range(N))),
                 r"shuffles \(its sampler is a SubsetRandomSampler\)", id="subset-random"),
    pytest.param(lambda ds: DataLoader(ds, batch_size=16, sampler=WeightedRandomSampler([1.0] * N, N)),
                 r"shuffles \(its sampler is a WeightedRandomSampler\)", id="weighted-random"),
    pytest.param(lambda ds: DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds), 16, False)),
                 r"shuffles \(its sampler is a RandomSampler\)", id="batch-sampler-over-random"),
    pytest.param(lambda ds: DataLoader(ds, batch_size=16, sampler=Reversed()),
                 "samples with a Reversed, whose order nnphases cannot know", id="unknown-sampler"),
]

KEPT = [
    pytest.param(lambda ds: DataLoader(ds, batch_size=16), id="default"),
    pytest.param(lambda ds: DataLoader(ds, batch_size=16, sampler=SequentialSampler(ds)), id="sequential"),
    pytest.param(lambda ds: DataLoader(ds, batch_size=16, sampler=list(range(N))), id="list-of-indices"),
    pytest.param(lambda ds: DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 16, False)),
                 id="batch-sampler-over-sequential"),
]


@pytest.mark.parametrize("make, fragment", REFUSED)
def test_a_loader_that_may_reorder_is_refused_with_masks(tmp_path: Path, make, fragment: str) -> None:
    loader = make(_data())
    with pytest.raises(ValueError, match=f"eval_data {fragment}; storing masks .* needs the same sample order"):
        Recorder(_model(), loader, Schedule((0,), 1), tmp_path / "run", [SampleSets(), Masks()])
    assert not (tmp_path / "run" / "checkpoints").exists()
    # Counts are sums: without masks the order does not matter.
    Recorder(_model(), loader, Schedule((0,), 1), tmp_path / "counts").close()


@pytest.mark.parametrize("make", KEPT)
def test_a_loader_with_a_fixed_order_keeps_masks(tmp_path: Path, make) -> None:
    rec = Recorder(_model(), make(_data()), Schedule((0,), 1), tmp_path / "run", [SampleSets(), Masks()])
    rec.maybe_measure(0)
    rec.close()
    assert rec.run.read_masks(0, "1").shape[0] == 16


@pytest.mark.parametrize("measures", [
    pytest.param(lambda: [SampleSets(backend="cuda")], id="counts"),
    pytest.param(lambda: [SampleSets(), Masks(backend="cupy")], id="masks"),
])
def test_a_backend_that_cannot_run_on_the_model_s_device_is_refused_when_bound(tmp_path: Path, measures) -> None:
    loader = DataLoader(_data(), batch_size=16)
    with pytest.raises(ValueError, match=r"backend '(cuda|cupy)' cannot run (class_counts|pack_masks) on cpu: "):
        Recorder(_model(), loader, Schedule((0,), 1), tmp_path / "run", measures())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_binding_a_dataloader_starts_no_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Telling an iterator from a re-iterable must not iterate a DataLoader (with workers that starts processes)."""
    loader = DataLoader(_data(), batch_size=16)
    started = []
    original = DataLoader.__iter__
    monkeypatch.setattr(DataLoader, "__iter__", lambda self: started.append(1) or original(self))
    rec = Recorder(_model(), loader, Schedule((0,), 1), tmp_path / "run")
    at_bind = len(started)
    rec.maybe_measure(0)
    rec.close()
    # One pass reads the data once, after the one read at binding that learns the first batch's shape.
    assert at_bind == 1 and len(started) == 2
    with pytest.raises(TypeError, match="eval_data is an iterator"):
        Recorder(_model(), iter(loader), Schedule((0,), 1), tmp_path / "gen")
