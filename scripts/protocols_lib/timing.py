"""How long a job takes: a fit of a calibration run's checkpoint times, its prediction for any length, and the
plan that picks each job's epochs so that every run, queued over the processes, ends within the budget.

The number of measurements of a run comes from nnphases' own :class:`~nnphases.recording.schedule.Schedule`, so
the prediction counts exactly the checkpoints the run will write.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

from nnphases.recording.schedule import Schedule

from .common import read_json
from .jobs import Job

STEP_DIR = re.compile(r"step-\d+")


def schedule_steps(job: Job, last: int, spe: float, *, calibration: bool = False) -> int:
    """How many measurements a run of ``last`` steps of ``spe`` steps per epoch makes (a calibration run measures
    once per decade on the log grid)."""
    per_epoch = max(1, round(spe))
    epochs = last / per_epoch
    if job.schedule == "pow2" and not calibration:
        return len(Schedule.powers_of_two(epochs, per_epoch).steps)
    return len(Schedule.log(epochs, per_epoch, per_decade=1 if calibration else job.per_decade,
                            first_epoch=job.first_epoch).steps)


@dataclass
class Fit:
    """Seconds: start-up to the step-0 checkpoint, per measurement, per training step, after the last checkpoint."""

    startup: float
    measure: float
    step: float
    tail: float
    steps_per_epoch: float

    def predict(self, job: Job, epochs: float) -> float:
        last = max(1, round(epochs * self.steps_per_epoch))
        n = schedule_steps(job, last, self.steps_per_epoch)
        return self.startup + (n - 1) * self.measure + last * self.step + self.tail


def fit_run(run: Path, started: float, ended: float | None, epochs: float) -> Fit:
    """Times of a calibration run from its checkpoints' write times: interval = measure + steps x step, fitted by
    least squares (clamped to be non-negative; conservative fallbacks when the points do not allow a fit)."""
    points = []
    for d in (run / "checkpoints").glob("step-*"):
        if STEP_DIR.fullmatch(d.name) and (d / "layers.parquet").is_file():
            points.append((int(d.name[5:]), (d / "layers.parquet").stat().st_mtime))
    points.sort()
    if len(points) < 2:
        raise ValueError(f"{len(points)} complete checkpoint{'s' if len(points) != 1 else ''}, too few to time")
    cfg = read_json(run / "config.json")
    last = points[-1][0]
    spe = float(cfg.get("steps_per_epoch") or max(1, last) / epochs)
    startup = max(0.0, points[0][1] - started)
    tail = max(0.0, ended - points[-1][1]) if ended is not None else 0.0
    ds = [b[0] - a[0] for a, b in itertools.pairwise(points)]
    dt = [max(0.0, b[1] - a[1]) for a, b in itertools.pairwise(points)]
    n = len(ds)
    mean_s, mean_t = sum(ds) / n, sum(dt) / n
    var = sum((s - mean_s) ** 2 for s in ds)
    b = sum((s - mean_s) * (t - mean_t) for s, t in zip(ds, dt, strict=True)) / var if var > 0 else -1.0
    a = mean_t - b * mean_s
    if b <= 0:  # no usable slope: charge every interval's time both per step and per measurement
        a, b = mean_t, sum(dt) / max(1, sum(ds))
    elif a < 0:
        a, b = 0.0, sum(dt) / max(1, sum(ds))
    return Fit(startup, a, b, tail, spe)


def max_fit(fits: list[Fit]) -> Fit:
    return Fit(*(max(getattr(f, k.name) for f in fits) for k in dataclasses.fields(Fit)))


def fit_epochs(job: Job, fit: Fit, seconds: float) -> float:
    """The most epochs (at most the protocol's) whose predicted time is within ``seconds``; 0 when none fits."""
    if fit.predict(job, job.target) <= seconds:
        return job.target
    lo, hi = 0.0, job.target
    if fit.predict(job, 1 / fit.steps_per_epoch) > seconds:
        return 0.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fit.predict(job, mid) <= seconds else (lo, mid)
    return _round_down(lo)


def _round_down(e: float) -> float:
    if e >= 2:
        return float(math.floor(e))
    digits = 2 - math.floor(math.log10(e)) if e > 0 else 2
    return math.floor(e * 10 ** digits) / 10 ** digits


def makespan(durations: list[float], slots: int) -> float:
    """Longest-first list scheduling of the durations over ``slots`` processes."""
    lanes = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        i = lanes.index(min(lanes))
        lanes[i] += d
    return max(lanes)


def plan(jobs: list[Job], fits: dict[str, Fit], seconds: float, slots: int,
         finalize: float) -> tuple[dict[str, float], float]:
    """Epochs per job: the largest common time allowance per run whose longest-first schedule over ``slots``
    (each job's figures and findings, ``finalize`` seconds, after one of its runs) fits in ``seconds``; each job
    runs the most epochs that fit its allowance, up to its protocol's. Returns the epochs and the allowance."""
    def epochs_at(allowance: float) -> dict[str, float]:
        return {j.name: fit_epochs(j, fits[j.name], allowance) for j in jobs}

    def span(choice: dict[str, float]) -> float:
        return makespan([fits[j.name].predict(j, choice[j.name]) + (finalize if i == 0 else 0.0)
                         for j in jobs if choice[j.name] > 0 for i in range(len(j.seeds))], slots)

    lo, hi = 0.0, seconds
    if span(epochs_at(hi)) <= seconds:
        return epochs_at(hi), hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if span(epochs_at(mid)) <= seconds else (lo, mid)
    return epochs_at(lo), lo
