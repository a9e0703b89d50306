"""End-to-end cost of one measurement (capture, class_counts on every ReLU site, metrics, an atomic
checkpoint) relative to a plain evaluation forward pass over the same data, both measured in this run;
and the memory high-water mark of a measurement at two evaluation-set sizes."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nnphases import kernels
from nnphases.experiments import models
from nnphases.recording.measures import sample_sets
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule

CASES = {
    # name: (model factory, input shape, evaluation samples, benchmark-disabled samples)
    "mlp-9x320": (lambda: models.mlp(784, 9, 320, 10), (1, 28, 28), 12000, 600),
    "vgg11": (lambda: models.vgg11(10, in_channels=1), (1, 32, 32), 1000, 64),
}


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(CASES))
def test_measurement_overhead(benchmark, case, device, tmp_path):
    make, shape, n, n_quick = CASES[case]
    n = n_quick if benchmark.disabled else n * (10 if device == "cuda" else 1)
    torch.manual_seed(0)
    model = make().eval().to(device)
    x = torch.rand((n, *shape), device=device)
    y = (torch.arange(n) % 10).to(device)
    batch = (1000 if case.startswith("mlp") else 250) * (10 if device == "cuda" else 1)  # GPU-sized batches
    steps = iter(range(1, 1000))
    rec = Recorder(model, (x, y), Schedule(tuple(range(1000)), 1), tmp_path / "run",
                   options=RecorderOptions(batch_size=batch))

    @torch.no_grad()
    def plain() -> None:  # the same pass a measurement makes, without capture: logits, loss, accuracy
        loss, correct = 0.0, 0
        for s in range(0, n, batch):
            logits = model(x[s:s + batch])
            loss += float(torch.nn.functional.cross_entropy(logits, y[s:s + batch])) * logits.shape[0]
            correct += int((logits.argmax(1) == y[s:s + batch]).sum())

    def measure() -> None:
        rec.measure(next(steps))

    def measure_per_call() -> None:
        """The same measurement with every site's counts through the public class_counts, one full boundary
        check per site and batch, as SampleSets counted before kernels.ClassCounts."""
        def update(self, p, site, z, batch) -> None:
            kernels.class_counts(sample_sets.node_view(z, self.options.per_channel), batch.y,
                                 self.binding.num_classes, out=self._acc[site], backend=self.options.backend,
                                 check_finite=False, check_labels=False)
        real = sample_sets.SampleSets.update
        sample_sets.SampleSets.update = update
        try:
            rec.measure(next(steps))
        finally:
            sample_sets.SampleSets.update = real

    # Interleaved rounds, so that a slow spell of a shared machine hits every path alike: the least time of each
    # path, and the median over rounds of each round's own ratio.
    rounds = 1 if benchmark.disabled else 10
    paths = {"plain": plain, "measure": measure, "measure, a class_counts call per site": measure_per_call}
    for fn in paths.values():
        fn()  # warm-up: tracing, first kernel calls
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, fn in paths.items():
            a = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - a)
    benchmark.pedantic(measure, rounds=1, iterations=1)
    t_plain = min(times["plain"])
    ratios = {k: (min(v) / t_plain, statistics.median(m / p for m, p in zip(v, times["plain"], strict=True)))
              for k, v in times.items() if k != "plain"}
    t_meas = min(times["measure"])
    benchmark.extra_info.update(plain_s=t_plain, measure_s=t_meas, ratio=t_meas / t_plain)
    print(f"\n{case} on {device}: {n} samples, {rounds} interleaved rounds, plain eval pass {t_plain * 1e3:.1f} ms")
    for k, (best, median) in ratios.items():
        print(f"  {k:40s} {min(times[k]) * 1e3:8.1f} ms  ratio {best:.3f} (least times), {median:.3f} (median "
              "of the rounds' ratios)")
    assert rec.run.completed_steps(), "the measurement wrote no checkpoint"
    if device == "cpu":
        label_check_share(rec, y, batch, t_meas, rounds)


def label_check_share(rec: Recorder, y: torch.Tensor, batch: int, t_meas: float, rounds: int) -> None:
    """What checking the labels by content adds to a measurement on the CPU: per batch one copy of its labels, per
    site and batch one comparison with that copy (the counters of a batch share one check), timed here on labels
    of the run's size and set against the measurement's own time."""
    sites = len(rec.run.read_counts(max(rec.run.completed_steps()))[0])
    batches = -(-len(y) // batch)
    labels = [y[s:s + batch].numpy() for s in range(0, len(y), batch)]
    copies = [a.copy() for a in labels]
    best = float("inf")
    for _ in range(max(3, rounds)):
        a = time.perf_counter()
        for x, held in zip(labels, copies, strict=True):
            x.copy()
            for _ in range(sites):
                assert np.array_equal(held, x)
        best = min(best, time.perf_counter() - a)
    print(f"  label content check: {batches} copies + {batches * sites} comparisons ({sites} sites) "
          f"{best * 1e3:.3f} ms, {100 * best / t_meas:.3f}% of the measurement")


_PEAK = r"""
import json, resource, sys, tempfile, torch
from nnphases.experiments import models
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
n = int(sys.argv[1])
torch.manual_seed(0)
model = models.mlp(784, 9, 320, 10).eval()
x = torch.rand((n, 1, 28, 28)); y = torch.arange(n) % 10
rec = Recorder(model, (x, y), Schedule((0, 1), 1), tempfile.mkdtemp(), options=RecorderOptions(batch_size=500))
with torch.no_grad():
    for s in range(0, n, 500): model(x[s:s + 500])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rec.measure(0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "growth_kib": after - before}))
"""


def test_measurement_memory_is_bounded_by_a_batch():
    """Peak-RSS growth of a measurement beyond a plain pass: the same for 4x the evaluation samples."""
    growth = {}
    for n in (3000, 12000):
        out = subprocess.run([sys.executable, "-c", _PEAK, str(n)], capture_output=True, text=True, check=True)
        growth[n] = json.loads(out.stdout.strip().splitlines()[-1])["growth_kib"]
    print(f"\npeak RSS growth of one measurement: {growth[3000]} KiB (3000 samples), "
          f"{growth[12000]} KiB (12000 samples)")
    # 9000 more samples would add 9000 x 2880 x 4 B = 100 MiB if float activations were kept.
    assert growth[12000] - growth[3000] < 20 * 1024
