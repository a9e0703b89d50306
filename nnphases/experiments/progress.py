"""Progress of a training run where no terminal shows a bar: one plain line per measurement.

A log file, ``nohup``, Slurm or CI sees ``seed 0: step 12,679/160,000 (epoch 15.8 of 200), val loss 0.412 acc
0.853, 0:21:07 elapsed, ETA 3:46:10``: the ETA extrapolates the steps trained by this process so far (a resumed
run counts from where it resumed), so it is high while the dense early measurements dominate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO

__all__ = ["ProgressLines", "clock"]


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    s = round(max(0.0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLines:
    """Prints one line per measurement of one seed to ``stream`` (default stderr), flushed at once."""

    def __init__(self, seed: int, total: int, initial: int, epochs: float, stream: TextIO | None = None) -> None:
        self.seed, self.total, self.initial, self.epochs = seed, total, initial, epochs
        self.stream = stream
        self.start = time.monotonic()

    def measured(self, step: int, epoch: float, stats: Mapping[str, Mapping[str, float]]) -> str:
        elapsed = time.monotonic() - self.start
        done = step - self.initial
        eta = elapsed / done * (self.total - step) if done > 0 else None
        val = stats.get("val")
        line = (
            f"seed {self.seed}: step {step:,}/{self.total:,} (epoch {epoch:.3g} of {self.epochs:g})"
            + (f", val loss {val['loss']:.3f} acc {val['accuracy']:.3f}" if val else "")
            + f", {clock(elapsed)} elapsed"
            + (f", ETA {clock(eta)}" if eta is not None else "")
        )
        print(line, file=self.stream or sys.stderr, flush=True)
        return line
