"""When to measure: log-spaced and power-of-two checkpoint schedules in global training steps.

Step 0 is the model at initialisation; step ``k`` is the model after ``k``
optimiser updates. :func:`log_steps` places about ``per_decade`` steps in
every decade of training time on a grid anchored at its start
(``start * 10**(k / per_decade)``, rounded to the nearest step), so runs of
different lengths share their measurement steps and, when the start is a
power of ten in epochs (source 000's 1e-3 epoch), every whole decade of
epochs (0.01, 0.1, 1, 10, ...) is measured exactly. Early grid points that
round to the same step collapse into one, so the first decade may hold
fewer than ``per_decade`` steps. :func:`powers_of_two` is source 002's
protocol (0, 1, 2, 4, 8, ...). Both always include the last step.

Every count is bounded, so no argument can make a schedule hang or
overflow: steps fit the int64 columns of the stored tables
(:data:`MAX_STEP`), ``per_decade`` is at most :data:`MAX_PER_DECADE`
(a log grid then holds at most about 19,000 steps) and a :class:`Schedule`
holds at most :data:`MAX_STEPS` steps.
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..options import check_int

__all__ = ["log_steps", "powers_of_two", "Schedule", "MAX_STEP", "MAX_PER_DECADE", "MAX_STEPS"]

MAX_STEP = 2**63 - 1  # steps are stored as int64
MAX_PER_DECADE = 1000  # finer grids only repeat steps; a huge one would loop for hours
MAX_STEPS = 100_000  # measurements of one run; each writes a checkpoint


def _number(value: object, name: str) -> float:
    # float() would also parse strings such as "200"; a config value of the wrong type should fail here.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even; a schedule should not depend on that.
    return math.floor(x + 0.5)


def _grid_point(start: float, k: int, per_decade: int) -> float:
    e = k / per_decade
    # The direct form gives the values schedules always had; the log form only
    # serves a start so small (< 1e-280 steps) that 10**e alone would overflow.
    return start * 10.0**e if e < 300 else 10.0 ** (math.log10(start) + e)


def _log_grid(start: float, last: int, per_decade: int) -> list[int]:
    """0, the grid ``start * 10**(k / per_decade)`` rounded (each >= 1) while below ``last``, then ``last``."""
    steps = {0, last}
    if start >= last:
        return sorted(steps)
    # Grid points below 1 all round up to step 1: start at the last of them
    # instead of walking there, which takes per_decade steps per decade of a tiny start.
    k = math.floor(-per_decade * math.log10(start)) if start < 1 else 0
    while True:
        # The exponent is recomputed from the integer k, so no error accumulates
        # over many decades the way repeated multiplication would.
        s = max(1, _round_half_up(_grid_point(start, k, per_decade)))
        if s >= last:
            break
        steps.add(s)
        k += 1
    return sorted(steps)


def log_steps(last: int, per_decade: int = 10, first: int = 1) -> list[int]:
    """Sorted unique global steps: 0, about ``per_decade`` log-spaced steps per decade from ``first``, and ``last``.

    The grid is ``first * 10**(k / per_decade)`` for k = 0, 1, ..., rounded to
    the nearest integer, kept while below ``last``; ``last`` is always
    included, and a ``last`` below ``first`` gives ``[0, last]``. ``last``
    (0 to :data:`MAX_STEP`), ``per_decade`` (1 to :data:`MAX_PER_DECADE`)
    and ``first`` (1 to :data:`MAX_STEP`) are integers (TypeError or
    ValueError otherwise).
    """
    last = check_int(last, "last", 0, MAX_STEP)
    per_decade = check_int(per_decade, "per_decade", 1, MAX_PER_DECADE)
    first = check_int(first, "first", 1, MAX_STEP)
    if last == 0:
        return [0]
    return _log_grid(float(first), last, per_decade)


def powers_of_two(last: int) -> list[int]:
    """0, 1, 2, 4, 8, ... up to ``last``, and ``last`` itself (source 002's protocol); ``0 <= last <= MAX_STEP``."""
    last = check_int(last, "last", 0, MAX_STEP)
    steps = {0, last}
    p = 1
    while p <= last:
        steps.add(p)
        p *= 2
    return sorted(steps)


def _last_step(epochs: float, steps_per_epoch: int) -> int:
    e = _number(epochs, "epochs")
    if not math.isfinite(e) or e < 0:
        raise ValueError(f"epochs must be finite and >= 0, got {epochs!r}")
    total = e * steps_per_epoch
    # Compared as floats: the largest float below 2**63 is an integer within
    # MAX_STEP, and an infinite product (1e308 epochs) fails here, not in floor().
    if not total < 2.0**63:
        raise ValueError(f"epochs must give at most {MAX_STEP} steps, got {epochs!r} epochs of {steps_per_epoch} steps")
    return _round_half_up(total)


@dataclass(frozen=True)
class Schedule:
    """Measurement steps of one run and the length of an epoch in steps; ``steps`` strictly increasing, >= 0."""

    steps: tuple[int, ...]
    steps_per_epoch: int

    def __post_init__(self) -> None:
        spe = check_int(self.steps_per_epoch, "steps_per_epoch", 1, MAX_STEP)
        if isinstance(self.steps, (str, bytes)) or not isinstance(self.steps, Iterable):
            raise TypeError(f"steps must be an iterable of integers, got {self.steps!r}")
        # islice: a huge or endless iterable is refused after MAX_STEPS + 1 items, not read to its end.
        steps = tuple(
            check_int(s, f"steps[{i}]", 0, MAX_STEP) for i, s in enumerate(itertools.islice(self.steps, MAX_STEPS + 1))
        )
        if len(steps) > MAX_STEPS:
            raise ValueError(f"steps must hold at most {MAX_STEPS} steps, got more")
        for i in range(1, len(steps)):
            if steps[i] <= steps[i - 1]:
                raise ValueError(
                    f"steps must be strictly increasing, got steps[{i - 1}] = {steps[i - 1]}, steps[{i}] = {steps[i]}"
                )
        # Frozen: normalised values (a list given as steps, NumPy integers) are set once here.
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "steps_per_epoch", spe)

    @classmethod
    def log(
        cls, epochs: float, steps_per_epoch: int, per_decade: int = 10, first_epoch: float | None = None
    ) -> Schedule:
        """Log-spaced schedule over ``epochs`` epochs: step 0, about ``per_decade`` steps per decade, the last step.

        The grid starts at ``first_epoch`` epochs (default: the first update,
        step 1) and runs in steps ``first_epoch * steps_per_epoch * 10**(k /
        per_decade)`` rounded to the nearest step, never below 1; so
        ``first_epoch=1e-3`` measures the first updates and every decade of
        epochs. The last step is :meth:`last_step`. ``per_decade`` is 1 to
        :data:`MAX_PER_DECADE`; ``first_epoch`` a finite number > 0.
        """
        spe = check_int(steps_per_epoch, "steps_per_epoch", 1, MAX_STEP)
        per_decade = check_int(per_decade, "per_decade", 1, MAX_PER_DECADE)
        start = 1.0
        if first_epoch is not None:
            fe = _number(first_epoch, "first_epoch")
            if not math.isfinite(fe) or fe <= 0:
                raise ValueError(f"first_epoch must be finite and > 0, got {first_epoch!r}")
            start = fe * spe
        last = cls.last_step(epochs, spe)
        steps = [0] if last == 0 else _log_grid(start, last, per_decade)
        return cls(tuple(steps), spe)

    @classmethod
    def powers_of_two(cls, epochs: float, steps_per_epoch: int) -> Schedule:
        """Steps 0, 1, 2, 4, ... and the last step (:meth:`last_step`)."""
        spe = check_int(steps_per_epoch, "steps_per_epoch", 1, MAX_STEP)
        return cls(tuple(powers_of_two(cls.last_step(epochs, spe))), spe)

    @staticmethod
    def last_step(epochs: float, steps_per_epoch: int) -> int:
        """The step after ``epochs`` epochs: ``epochs * steps_per_epoch`` rounded half up, as every schedule ends.

        Training loops take their last step from here so that they stop where
        the schedule measures last (Python's ``round`` rounds halves to even
        and would differ by one step). ``epochs`` is a finite number >= 0,
        ``steps_per_epoch`` an integer >= 1, and the result at most
        :data:`MAX_STEP` (TypeError or ValueError otherwise).
        """
        return _last_step(epochs, check_int(steps_per_epoch, "steps_per_epoch", 1, MAX_STEP))

    @property
    def last(self) -> int:
        """The last measured step (0 for an empty schedule)."""
        return self.steps[-1] if self.steps else 0

    def epoch(self, step: int) -> float:
        """Training time of ``step`` in epochs: ``step / steps_per_epoch``."""
        return check_int(step, "step", 0, MAX_STEP) / self.steps_per_epoch

    def epochs(self) -> list[float]:
        """Training time of every measured step, in epochs."""
        return [s / self.steps_per_epoch for s in self.steps]

    def next_after(self, step: int) -> int | None:
        """The first measured step strictly after ``step``, or None when there is none."""
        i = bisect.bisect_right(self.steps, check_int(step, "step"))
        return self.steps[i] if i < len(self.steps) else None

    def __contains__(self, step: object) -> bool:
        try:
            s = operator.index(step)  # type: ignore[arg-type]  # any object: TypeError (caught) for a non-integer
        except TypeError:
            return False
        i = bisect.bisect_left(self.steps, s)
        return i < len(self.steps) and self.steps[i] == s

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)
