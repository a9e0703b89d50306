"""Exact counting across processes (gloo on the CPU): worlds of 1, 2 and 3 ranks over an odd-sized evaluation set
give the counts, metrics and statistics of one process, bit for bit; wrapped models are unwrapped; padded shards
are refused."""

from __future__ import annotations

import os
import socket
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

from nnphases import data
from nnphases.distributed import UnpaddedSampler, shard_range, unwrap
from nnphases.recorder import Recorder, RecorderOptions
from nnphases.schedule import Schedule
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


def _worker(rank: int, world: int, port: int, out: str, source: str, wrap: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _measure(Path(out), source, wrap)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "run"
    _measure(out, "tensors", wrap=False)
    return out


@pytest.mark.parametrize("world,source,wrap", [(1, "tensors", False), (2, "tensors", True), (3, "tensors", False),
                                               (2, "loader", False), (3, "loader", True)])
def test_world_gives_the_counts_of_one_process(tmp_path, single, world, source, wrap):
    out = tmp_path / "run"
    mp.spawn(_worker, args=(world, _free_port(), str(out), source, wrap), nprocs=world, join=True)
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


def _padded_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y = _data()
        ds = TensorDataset(x, y)
        loader = DataLoader(ds, batch_size=64, sampler=DistributedSampler(ds, shuffle=False))
        try:
            Recorder(_model(), loader, Schedule((0,), 1), out)
        except ValueError as e:
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / f"error-{rank}").write_text(str(e))
    finally:
        dist.destroy_process_group()


def test_a_padded_distributed_sampler_is_refused(tmp_path):
    mp.spawn(_padded_worker, args=(2, _free_port(), str(tmp_path / "run")), nprocs=2, join=True)
    for rank in range(2):
        msg = (tmp_path / "run" / f"error-{rank}").read_text()
        assert "DistributedSampler that pads 1001 samples to 1002 (repeating 1)" in msg and "UnpaddedSampler" in msg
