"""Cost of measuring across processes: one measurement of the 9x320 MLP on 1 gloo rank and on 2 (each rank one
thread, the same total samples), the share of it spent in the one all_reduce per pass, and a check that both worlds
stored the same counts."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnphases.recording import distributed

from nnphases.experiments import models
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir


def _worker(rank: int, world: int, rendezvous: str, n: int, out: str, result: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    reduce_s = [0.0]
    original = distributed.all_reduce_sums

    def timed(tensors, device):  # type: ignore[no-untyped-def]
        dist.barrier()  # time the reduction itself, not one rank waiting for the other's shard
        a = time.perf_counter()
        original(tensors, device)
        reduce_s[0] += time.perf_counter() - a

    import nnphases.recording.recorder as recorder

    recorder.all_reduce_sums = timed  # type: ignore[assignment]
    try:
        torch.manual_seed(0)
        model = models.mlp(784, 9, 320, 10).eval()
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand((n, 1, 28, 28), generator=g), torch.arange(n) % 10
        rec = Recorder(model, (x, y), Schedule((0, 1, 2), 1), out, options=RecorderOptions(batch_size=1000))
        rec.measure(0)  # warm-up: tracing, first kernel calls
        rec.flush()
        reduce_s[0] = 0.0
        dist.barrier()
        a = time.perf_counter()
        rec.measure(1)
        rec.flush()
        dist.barrier()
        t = time.perf_counter() - a
        rec.close()
        if rank == 0:
            Path(result).write_text(json.dumps({"measure_s": t, "reduce_s": reduce_s[0]}))
    finally:
        dist.destroy_process_group()


def _rendezvous() -> str:
    # A file in a fresh folder, not a TCP port: a port found free can be taken again before the ranks bind it.
    return f"file://{tempfile.mkdtemp()}/rendezvous"


def test_measurement_on_two_ranks(benchmark):
    n = 2000 if benchmark.disabled else 12000
    res, outs = {}, {}
    for world in (1, 2):
        outs[world] = Path(tempfile.mkdtemp()) / "run"
        result = Path(tempfile.mkdtemp()) / "result.json"
        mp.spawn(_worker, args=(world, _rendezvous(), n, str(outs[world]), str(result)), nprocs=world, join=True)
        res[world] = json.loads(result.read_text())
    for s in (0, 1):  # the benchmark checks its result: both worlds stored the same counts
        (c1, s1), (c2, s2) = RunDir(outs[1]).read_counts(s), RunDir(outs[2]).read_counts(s)
        assert s1.tolist() == s2.tolist() and all(np.array_equal(c1[k], c2[k]) for k in c1)
    one, two = res[1], res[2]
    print(f"\n9x320 MLP, {n:,} samples, one thread per rank: 1 rank {one['measure_s'] * 1e3:.0f} ms, 2 gloo ranks "
          f"{two['measure_s'] * 1e3:.0f} ms (ratio {two['measure_s'] / one['measure_s']:.2f}); the all_reduce itself "
          f"{two['reduce_s'] * 1e3:.1f} ms ({two['reduce_s'] / two['measure_s']:.1%} of the measurement)")
    benchmark.extra_info.update(one=one, two=two)
