"""How long a run will take, from a short timed calibration on this machine.

A few training steps are timed (after two that warm up), and one measurement on a slice of the evaluation data
(after one that warms up: kernels compile, buffers are allocated); a run's time is its steps times the step's cost
plus its checkpoints times the measurement's cost scaled to the samples a measurement reads (its passes are
linear in them). :func:`nnphases.experiments.train.estimate` times a configuration's own pieces this way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..recording.recorder import Recorder
from .progress import clock

__all__ = ["TimeEstimate", "time_calls", "time_measurement"]


@dataclass(frozen=True)
class TimeEstimate:
    """One seed's estimated time and how it was obtained."""

    steps: int  # training steps of one seed
    checkpoints: int  # measurements of one seed
    step_s: float  # seconds per training step, timed
    steps_timed: int
    measure_s: float  # seconds per measurement of the whole evaluation data, scaled from the timed slice
    measured_samples: int  # samples the timed measurement read
    samples: int  # samples a measurement of the run reads
    device: str

    @property
    def seconds(self) -> float:
        return self.steps * self.step_s + self.checkpoints * self.measure_s

    def summary(self, seeds: int = 1) -> str:
        """``about 1:02:03 per seed`` (and for all seeds), with the figures it comes from."""
        all_seeds = f" ({seeds} seeds one after the other: {clock(seeds * self.seconds)})" if seeds > 1 else ""
        return (
            f"about {clock(self.seconds)} per seed{all_seeds} on {self.device}, estimated from a timed calibration: "
            f"{self.steps:,} steps x {self.step_s * 1e3:.3g} ms (timed over {self.steps_timed} steps) + "
            f"{self.checkpoints} measurements x {self.measure_s:.3g} s (one timed on {self.measured_samples:,} of "
            f"{self.samples:,} samples, scaled)"
        )


def time_calls(
    call: Callable[[int], object], sync: Callable[[], object], *, budget_s: float = 1.0, most: int = 50
) -> tuple[float, int]:
    """Seconds per ``call(i)`` and the calls timed: two calls warm up (the first ones allocate and pick kernels),
    then at least 3 and at most ``most`` are timed, until ``budget_s`` has passed."""
    for i in range(2):
        call(i)
    sync()
    n, begin = 0, time.perf_counter()
    while n < 3 or (n < most and time.perf_counter() - begin < budget_s):
        call(2 + n)
        n += 1
    sync()
    return (time.perf_counter() - begin) / n, n


def time_measurement(rec: Recorder, sync: Callable[[], object]) -> float:
    """Seconds of one measurement by ``rec`` (its schedule holds steps 0 and 1), its checkpoint written; the
    first measurement warms up (kernels compile, buffers are allocated) and is not counted. ``rec`` is closed."""
    try:
        rec.measure(0)
        rec.flush()
        sync()
        begin = time.perf_counter()
        rec.measure(1)
        rec.flush()
        sync()
        return time.perf_counter() - begin
    finally:
        rec.close()
