"""What a whole measurement costs against a plain evaluation pass over the same data, for every model and size the
README's table reports, interleaved: each round runs every case's plain pass and measurement back to back, so a
slow spell of a shared machine hits both alike. Per case it prints the ratio of least times and the median of the
rounds' own ratios, twice: for the measurement's passes (``Recorder.measure``, which returns while its checkpoint
is written on a background thread, overlapping training in a real run) and for everything it does until its
checkpoint is on disk (``measure`` and ``flush``: metrics, tables, masks written). The plain pass computes what any
evaluation does (logits, loss, accuracy) and starts with no write pending.

    python -m pytest benchmarks/bench_measurement_cost.py -s                      # every case, 10 rounds
    NNPHASES_BENCH_CASES=mlp,vgg python -m pytest benchmarks/bench_measurement_cost.py -s   # the cases named so
    NNPHASES_BENCH_ROUNDS=20 python -m pytest benchmarks/bench_measurement_cost.py -s

With ``--benchmark-disable`` (the test command) every case runs once at a toy size, checking that each measurement
writes its checkpoint.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from nnphases.experiments import models
from nnphases.kernels.cores import usable_cores
from nnphases.recording.measures import EvalStats, Masks, SampleSets
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[int], torch.nn.Module]  # classes -> model
    shape: tuple[int, ...]
    samples: int
    batch: int
    classes: int = 10
    masks: bool = False
    streamed: bool = False  # a DataLoader generating batches, never held in memory


CASES = [
    Case("mlp-9x320, 10 classes", lambda c: models.mlp(784, 9, 320, c), (1, 28, 28), 12_000, 1000),
    Case("mlp-9x320, 100 classes", lambda c: models.mlp(784, 9, 320, c), (1, 28, 28), 12_000, 1000, 100),
    Case("mlp-9x320, 1,000 classes", lambda c: models.mlp(784, 9, 320, c), (1, 28, 28), 12_000, 1000, 1000),
    Case("vgg11 32x32", lambda c: models.vgg11(c, in_channels=3), (3, 32, 32), 1000, 250),
    Case("resnet10 32x32", lambda c: models.resnet10(c, in_channels=3), (3, 32, 32), 1000, 250),
    Case(
        "mlp-9x320, 1,000,000 streamed, masks",
        lambda c: models.mlp(784, 9, 320, c),
        (1, 28, 28),
        1_000_000,
        2000,
        masks=True,
        streamed=True,
    ),
]


class Generated(Dataset):
    """Batch i is a function of i alone: every pass reads the same samples and none is kept."""

    def __init__(self, samples: int, batch: int, shape: tuple[int, ...], classes: int) -> None:
        self.samples, self.batch, self.shape, self.classes = samples, batch, shape, classes

    def __len__(self) -> int:
        return -(-self.samples // self.batch)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = min(self.batch, self.samples - i * self.batch)
        g = torch.Generator().manual_seed(i)
        return torch.rand((b, *self.shape), generator=g), (torch.arange(b) + i * self.batch) % self.classes


class Bench:
    """One case's model, data, Recorder and the two paths timed."""

    def __init__(self, case: Case, samples: int, out: Path, measurements: int) -> None:
        torch.manual_seed(0)
        self.case, self.samples = case, samples
        self.model = case.make(case.classes).eval()
        if case.streamed:
            self.data: object = DataLoader(Generated(samples, case.batch, case.shape, case.classes), batch_size=None)
        else:
            x = torch.rand((samples, *case.shape))
            self.data = (x, torch.arange(samples) % case.classes)
        measures = [SampleSets(), EvalStats()] + ([Masks()] if case.masks else [])
        self.rec = Recorder(
            self.model,
            self.data,
            Schedule(tuple(range(measurements)), 1),
            out,
            measures,
            options=RecorderOptions(batch_size=case.batch),
        )
        self.steps: Iterator[int] = iter(range(measurements))

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.data, tuple):
            x, y = self.data
            for s in range(0, self.samples, self.case.batch):
                yield x[s : s + self.case.batch], y[s : s + self.case.batch]
        else:
            yield from self.data  # type: ignore[misc]

    @torch.no_grad()
    def plain(self) -> None:
        loss, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
        for x, y in self.batches():
            logits = self.model(x)
            loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
        float(loss), int(correct)

    def measure(self) -> float:
        """One measurement: the seconds until its checkpoint was on disk (``passes_s``: until ``measure``
        returned)."""
        a = time.perf_counter()
        self.rec.measure(next(self.steps))
        self.passes_s = time.perf_counter() - a
        self.rec.flush()
        return time.perf_counter() - a


def _rounds(disabled: bool) -> int:
    return 1 if disabled else int(os.environ.get("NNPHASES_BENCH_ROUNDS", "10"))


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) at the start"


def test_measurement_cost_interleaved(benchmark, tmp_path):
    disabled = benchmark.disabled
    wanted = [w.strip() for w in os.environ.get("NNPHASES_BENCH_CASES", "").split(",") if w.strip()]
    selected = [c for c in CASES if not wanted or any(w in c.name for w in wanted)]
    benches = {}
    for i, case in enumerate(selected):
        samples = min(case.samples, 2 * case.batch) if disabled else case.samples
        benches[case.name] = Bench(case, samples, tmp_path / f"case-{i}", 1 + _rounds(disabled))
    print(
        f"\nmeasurement against a plain pass, {_rounds(disabled)} interleaved rounds; "
        f"{platform.processor() or platform.machine()}, "
        f"{usable_cores()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {_load()}"
    )
    for b in benches.values():  # warm-up: tracing, first kernel calls, the loaders' first batches
        b.plain()
        b.measure()
    times: dict[str, dict[str, list[float]]] = {k: {"plain": [], "passes": [], "written": []} for k in benches}
    for _ in range(_rounds(disabled)):
        for name, b in benches.items():
            a = time.perf_counter()
            b.plain()
            times[name]["plain"].append(time.perf_counter() - a)
            times[name]["written"].append(b.measure())
            times[name]["passes"].append(b.passes_s)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"{'':40s} {'':>10s} {'':>8s} {'passes':>24s} {'until written':>24s}")
    print(
        f"{'case':40s} {'samples':>10s} {'plain s':>8s} {'s':>8s} {'least':>7s} {'median':>7s} {'s':>8s} "
        f"{'least':>7s} {'median':>7s}"
    )
    for name, t in times.items():
        b = benches[name]
        row = f"{name:40s} {b.samples:>10,d} {min(t['plain']):8.3f}"
        for path in ("passes", "written"):
            least = min(t[path]) / min(t["plain"])
            median = statistics.median(m / p for m, p in zip(t[path], t["plain"], strict=True))
            benchmark.extra_info[f"{name}, {path}"] = {"least": least, "median": median}
            row += f" {min(t[path]):8.3f} {least:7.3f} {median:7.3f}"
        print(row)
    for name, b in benches.items():
        b.rec.close()
        run = RunDir(b.rec.run.path)
        steps = run.completed_steps()
        # The benchmark checks its own results: every measurement wrote its checkpoint, with every sample counted.
        assert len(steps) == 1 + _rounds(disabled), name
        _, sizes = run.read_counts(max(steps))
        assert int(sizes.sum()) == b.samples, name
        if b.case.masks:
            site = next(iter(run.read_counts(max(steps))[0]))
            assert run.read_masks(max(steps), site, nodes=slice(0, 1)).shape == (1, -(-b.samples // 64) * 8)
