"""A measurement over a streamed evaluation set with masks kept: time against a plain evaluation pass over the same
DataLoader (same run), and the peak-RSS growth of the measurement at two set sizes (10x apart). The set is
generated batch by batch from the batch index, so it is never held in memory. Each size runs in its own process so
that the peaks are the measurement's own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_RUN = r"""
import json, resource, sys, tempfile, time
import torch
from torch.utils.data import DataLoader, Dataset
from nnphases.experiments import models
from nnphases.recording.measures import EvalStats, Masks, SampleSets
from nnphases.recording.recorder import Recorder
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir

n, batch, workers = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


class Generated(Dataset):
    # Batch i is a function of i alone: every pass reads the same samples, none is kept.
    def __len__(self):
        return -(-n // batch)

    def __getitem__(self, i):
        b = min(batch, n - i * batch)
        g = torch.Generator().manual_seed(i)
        return torch.rand((b, 1, 28, 28), generator=g), (torch.arange(b) + i * batch) % 10


torch.manual_seed(0)
model = models.mlp(784, 9, 320, 10).eval()
loader = DataLoader(Generated(), batch_size=None, num_workers=workers)
out = tempfile.mkdtemp()
rec = Recorder(model, loader, Schedule((0, 1), 1), out, [SampleSets(), EvalStats(), Masks()])


@torch.no_grad()
def plain():
    loss, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
    for x, y in loader:
        logits = model(x)
        loss += torch.nn.functional.cross_entropy(logits, y).double() * y.shape[0]
        correct += (logits.argmax(1) == y).sum()
    return float(loss) / n


plain()  # warm-up: the loader's first batches, the model's first calls
a = time.perf_counter(); plain(); t_plain = time.perf_counter() - a
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rec.measure(0)  # the first measurement also traces the model: its peak counts, its time does not
rec.flush()
a = time.perf_counter(); rec.measure(1); rec.flush(); t_meas = time.perf_counter() - a
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rec.close()
run = RunDir(out)
counts, sizes = run.read_counts(0)
masks = run.read_masks(0, "relu1", nodes=slice(0, 2))
print(json.dumps({"n": n, "plain_s": t_plain, "measure_s": t_meas, "growth_kib": after - before,
                  "samples": int(sizes.sum()), "mask_shape": list(masks.shape),
                  "relu1_active": int(counts["relu1"].sum())}))
"""


def _one(n: int, batch: int, workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _RUN, str(n), str(batch), str(workers)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_measurement_with_masks(benchmark, workers):
    sizes = (2_000, 20_000) if benchmark.disabled else (100_000, 1_000_000)
    batch = 1000 if benchmark.disabled else 2000
    res = {n: _one(n, batch, workers) for n in sizes}
    for n, r in res.items():
        # The benchmark checks its own results: every sample counted once, masks of the whole set stored.
        assert r["samples"] == n and r["mask_shape"] == [2, -(-n // 64) * 8]
        print(f"\n9x320 MLP, {n:,} streamed samples (DataLoader, {workers} workers, batch {batch}), masks kept: "
              f"plain pass {r['plain_s']:.2f} s, measurement {r['measure_s']:.2f} s, ratio "
              f"{r['measure_s'] / r['plain_s']:.2f}; peak RSS growth {r['growth_kib'] / 1024:.1f} MiB")
    small, large = (res[n]["growth_kib"] for n in sizes)
    print(f"peak RSS growth: {small / 1024:.1f} MiB ({sizes[0]:,}) vs {large / 1024:.1f} MiB ({sizes[1]:,})")
    benchmark.extra_info.update({str(n): r for n, r in res.items()})
    # Memory, not time: 10x the samples would add 10x the masks if they were kept in memory (1 GiB at 1M).
    assert large <= 256 * 1024 + 2 * 2000 * 784 * 4 // 1024
