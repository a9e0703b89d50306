"""Exact counting across processes (gloo on the CPU): worlds of 1, 2 and 3 ranks over an odd-sized evaluation set
give the counts, metrics and statistics of one process, bit for bit; wrapped models are unwrapped; padded shards
are refused."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from nnphases.experiments import data
from nnphases.recording.distributed import UnpaddedSampler, shard_range, unwrap
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir, read_table

N = 1001  # odd: shards differ in size and no world divides it


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 5))


def _data():
    ds = data.synthetic(n=N, num_classes=5, shape=(1, 4, 4), seed=11)
    return ds.x, ds.y


def _measure(out: Path, source: str, wrap: bool) -> None:
    x, y = _data()
    model = _model()
    if wrap:
        model = nn.parallel.DistributedDataParallel(model)
    if source == "tensors":
        ev = (x, y)
    else:
        ds = TensorDataset(x, y)
        ev = DataLoader(ds, batch_size=64, sampler=UnpaddedSampler(len(ds)))
    rec = Recorder(model, ev, Schedule((0, 1), 1), out, options=RecorderOptions(batch_size=100))
    rec.maybe_measure(0)
    rec.maybe_measure(1)
    rec.close()


def _worker(rank: int, world: int, rendezvous: str, out: str, source: str, wrap: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        _measure(Path(out), source, wrap)
    finally:
        dist.destroy_process_group()


def _rendezvous() -> str:
    # A file in a fresh folder, not a TCP port: a port found free can be taken again before the ranks bind it.
    return f"file://{tempfile.mkdtemp()}/rendezvous"


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    _measure(out, "tensors", wrap=False)
    return out


@pytest.mark.parametrize("world,source,wrap", [(1, "tensors", False), (2, "tensors", True), (3, "tensors", False),
                                               (2, "loader", False), (3, "loader", True)])
def test_world_gives_the_counts_of_one_process(tmp_path, single, world, source, wrap):
    out = tmp_path / "run"
    mp.spawn(_worker, args=(world, _rendezvous(), str(out), source, wrap), nprocs=world, join=True)
    a, b = RunDir(single), RunDir(out)
    assert a.completed_steps() == b.completed_steps() == [0, 1] and b.done
    for s in (0, 1):
        ca, sa = a.read_counts(s)
        cb, sb = b.read_counts(s)
        assert sa.tolist() == sb.tolist() and sum(sb) == N and list(ca) == list(cb) == ["2", "4"]
        for k in ca:
            np.testing.assert_array_equal(ca[k], cb[k])
    for t in ("nodes", "layers", "stats"):
        pd.testing.assert_frame_equal(read_table(single, t), read_table(out, t))


@pytest.mark.parametrize("n,world", [(1001, 2), (1001, 3), (7, 3), (2, 3), (0, 2)])
def test_shards_cover_every_sample_once(n, world):
    got = [i for r in range(world) for i in UnpaddedSampler(n, r, world)]
    assert got == list(range(n))
    assert [len(UnpaddedSampler(n, r, world)) for r in range(world)] == [b - a for a, b in
                                                                         (shard_range(n, r, world) for r in range(world))]


def test_unwrap():
    m = _model()
    assert unwrap(nn.DataParallel(m)) is m
    compiled = torch.compile(m)
    assert unwrap(compiled) is m


def _padded_worker(rank: int, world: int, rendezvous: str, out: str, drop_last: bool = False) -> None:
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        x, y = _data()
        ds = TensorDataset(x, y)
        sampler = DistributedSampler(ds, shuffle=False, drop_last=drop_last)
        loader = DataLoader(ds, batch_size=64, sampler=sampler)
        try:
            Recorder(_model(), loader, Schedule((0,), 1), out)
        except ValueError as e:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / f"error-{rank}").write_text(str(e))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("drop_last, says", [
    (False, "DistributedSampler that pads 1001 samples to 1002 (repeating 1)"),
    (True, "DistributedSampler with drop_last=True, which leaves out 1 of the 1001 samples"),
], ids=["padded", "drop-last"])
def test_a_distributed_sampler_that_pads_or_drops_is_refused(tmp_path, drop_last, says):
    mp.spawn(_padded_worker, args=(2, _rendezvous(), str(tmp_path / "run"), drop_last), nprocs=2, join=True)
    for rank in range(2):
        msg = (tmp_path / "run" / f"error-{rank}").read_text()
        assert says in msg and "UnpaddedSampler" in msg


# -- fast-mode probes: every rank feeds its shard, the statistics are summed ------------------------------------

N_TRAIN = 503  # odd too: the holdout (index % 5 == 4) straddles the shards' edges


def _probe_measure(out: Path, source: str, keep: bool | str, dtype: torch.dtype, probes: dict) -> None:
    from nnphases.recording import plan
    from nnphases.recording.measures import Probes, SampleSets

    x, y = _data()
    tr = data.synthetic(n=N_TRAIN, num_classes=5, shape=(1, 4, 4), seed=12)
    if source == "tensors":
        train = (tr.x.to(dtype), tr.y)
    else:
        ds = TensorDataset(tr.x.to(dtype), tr.y)
        train = DataLoader(ds, batch_size=64, sampler=UnpaddedSampler(len(ds)))
    # Kept training features score the train accuracy in fit; without them a rescore pass does (same rows).
    # "rank0": only rank 0 has the memory to keep them, and every rank must then make the rescore pass.
    kept = keep is True or (keep == "rank0" and dist.get_rank() == 0)
    free, plan.free_memory = plan.free_memory, lambda device: 10**12 if kept else 10**5
    try:
        rec = Recorder(_model().to(dtype), (x.to(dtype), y), Schedule((0, 1), 1), out,
                       [SampleSets(), Probes(**probes)], train_data=train, options=RecorderOptions(batch_size=100))
    finally:
        plan.free_memory = free
    rec.maybe_measure(0)
    rec.maybe_measure(1)
    rec.close()


def _probe_worker(rank: int, world: int, rendezvous: str, out: str, source: str, keep: bool | str, dtype: torch.dtype,
                  probes: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        _probe_measure(Path(out), source, keep, dtype, probes)
    except ValueError as e:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"error-{rank}").write_text(str(e))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def single_probes(tmp_path_factory) -> dict[torch.dtype, Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: a world of one is compared bit for bit
    runs = {}
    try:
        for dtype in (torch.float64, torch.float32):
            runs[dtype] = tmp_path_factory.mktemp("single-probes") / "run"
            _probe_measure(runs[dtype], "tensors", keep=True, dtype=dtype, probes={})
    finally:
        torch.set_num_threads(threads)
    return runs


# A float64 model isolates the probes' own sums: only the order of float64 additions differs, so the floats agree
# to 1e-12 relative (about 1e-14 seen). A float32 model's activations may differ in their last bits when the
# batches are cut differently (the shards' edges cut them), which moves the floats by about 1e-8 (5e-9 seen).
@pytest.mark.parametrize("world,source,keep,dtype,rtol", [
    (1, "tensors", True, torch.float64, 0), (2, "tensors", True, torch.float64, 1e-12),
    (3, "tensors", False, torch.float64, 1e-12), (3, "tensors", True, torch.float64, 1e-12),
    (2, "loader", False, torch.float64, 1e-12), (3, "tensors", "rank0", torch.float64, 1e-12),
    (1, "tensors", True, torch.float32, 0),
    (3, "tensors", True, torch.float32, 1e-7),
])
def test_world_fits_the_probes_of_one_process(tmp_path, single_probes, world, source, keep, dtype, rtol):
    """Fast probes of any world: sample counts, accuracies, features and the ridge search those of one process
    exactly; ridge, MSE and 1 - R^2 to ``rtol`` (bit for bit in a world of one)."""
    out = tmp_path / "run"
    mp.spawn(_probe_worker, args=(world, _rendezvous(), str(out), source, keep, dtype, {}), nprocs=world, join=True)
    a, b = read_table(single_probes[dtype], "probes"), read_table(out, "probes")
    assert len(a) == 4 and (b.n_train == N_TRAIN).all() and (b.n_test == N).all()
    floats = ["ridge", "reconstruction_mse", "reconstruction_nmse"]
    pd.testing.assert_frame_equal(a.drop(columns=floats), b.drop(columns=floats))
    if rtol == 0:
        pd.testing.assert_frame_equal(a, b)
    np.testing.assert_allclose(b[floats].to_numpy(), a[floats].to_numpy(), rtol=rtol, atol=0)


@pytest.mark.parametrize("probes,match", [
    (dict(mode="paper"), "probe_mode 'paper': trained probes train on every training sample's activations in "
                         "one process, but 2 processes measure together"),
    (dict(mode="both"), "probe_mode 'both': trained probes"),
    (dict(mode="fast+code"), "probe_mode 'fast+code': trained probes"),
    (dict(decoder="random-features"), "probe_decoder 'random-features' standardises its features by the first "
                                      "training batch, which differs between the 2 processes"),
])
def test_probes_that_cannot_be_summed_are_refused(tmp_path, probes, match):
    out = tmp_path / "run"
    mp.spawn(_probe_worker, args=(2, _rendezvous(), str(out), "tensors", True, torch.float32, probes), nprocs=2,
             join=True)
    for rank in range(2):
        assert match in (out / f"error-{rank}").read_text()


# -- ranks that disagree: different steps, or the same (unsharded) samples ------------------------------------------


def _disagreeing_worker(rank: int, world: int, rendezvous: str, out: str, case: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        x, y = _data()
        if case == "steps":
            ev = DataLoader(TensorDataset(x, y), batch_size=64, sampler=UnpaddedSampler(len(x)))
            schedule, step = Schedule((0, 1), 1), rank  # rank 0 measures step 0 while rank 1 measures step 1
        else:  # every rank reads every sample
            ev = DataLoader(TensorDataset(x, y), batch_size=64)
            schedule, step = Schedule((0,), 1), 0
        rec = Recorder(_model(), ev, schedule, Path(out) / "run")
        try:
            rec.measure(step)
        except (RuntimeError, ValueError) as e:
            (Path(out) / f"error-{rank}").write_text(str(e))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case,says", [
    ("steps", "the processes measured different steps together in the eval pass (steps by rank: [0, 1])"),
    ("unsharded", "eval_data: all 2 processes read the same first samples in the eval pass"),
])
def test_ranks_that_disagree_are_refused_before_writing(tmp_path, case, says):
    mp.spawn(_disagreeing_worker, args=(2, _rendezvous(), str(tmp_path), case), nprocs=2, join=True)
    for rank in range(2):
        assert says in (tmp_path / f"error-{rank}").read_text()
    assert RunDir(tmp_path / "run").completed_steps() == []
