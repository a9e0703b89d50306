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
"""

from __future__ import annotations

import bisect
import math
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["log_steps", "powers_of_two", "Schedule"]


def _int_arg(value: object, name: str, minimum: int) -> int:
    # operator.index accepts Python and NumPy integers but not floats or
    # strings; bool is an int subclass that is almost always a caller's bug.
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _round_half_up(x: float) -> int:
    # Python's round() rounds halves to even; a schedule should not depend on that.
    return math.floor(x + 0.5)


def _log_grid(start: float, last: int, per_decade: int) -> list[int]:
    """0, the grid ``start * 10**(k / per_decade)`` rounded (each >= 1) while below ``last``, then ``last``."""
    steps = {0, last}
    k = 0
    while True:
        # The exponent is recomputed from the integer k, so no error accumulates
        # over many decades the way repeated multiplication would.
        s = max(1, _round_half_up(start * 10.0 ** (k / per_decade)))
        if s >= last:
            break
        steps.add(s)
        k += 1
    return sorted(steps)


def log_steps(last: int, per_decade: int = 10, first: int = 1) -> list[int]:
    """Sorted unique global steps: 0, about ``per_decade`` log-spaced steps per decade from ``first``, and ``last``.

    The grid is ``first * 10**(k / per_decade)`` for k = 0, 1, ..., rounded to
    the nearest integer, kept while below ``last``; ``last`` is always
    included, and a ``last`` below ``first`` gives ``[0, last]``. ``last >= 0``,
    ``per_decade >= 1`` and ``first >= 1`` are integers (TypeError or
    ValueError otherwise).
    """
    last = _int_arg(last, "last", 0)
    per_decade = _int_arg(per_decade, "per_decade", 1)
    first = _int_arg(first, "first", 1)
    if last == 0:
        return [0]
    return _log_grid(float(first), last, per_decade)


def powers_of_two(last: int) -> list[int]:
    """0, 1, 2, 4, 8, ... up to ``last``, and ``last`` itself (source 002's protocol); ``last >= 0``."""
    last = _int_arg(last, "last", 0)
    steps = {0, last}
    p = 1
    while p <= last:
        steps.add(p)
        p *= 2
    return sorted(steps)


def _last_step(epochs: float, steps_per_epoch: int) -> int:
    # float() would also parse strings such as "200"; a config value of the wrong type should fail here.
    if isinstance(epochs, (bool, str, bytes)):
        raise TypeError(f"epochs must be a number, got {epochs!r}")
    try:
        e = float(epochs)
    except TypeError:
        raise TypeError(f"epochs must be a number, got {epochs!r}") from None
    if not math.isfinite(e) or e < 0:
        raise ValueError(f"epochs must be finite and >= 0, got {epochs!r}")
    return _round_half_up(e * steps_per_epoch)


@dataclass(frozen=True)
class Schedule:
    """Measurement steps of one run and the length of an epoch in steps; ``steps`` strictly increasing, >= 0."""

    steps: tuple[int, ...]
    steps_per_epoch: int

    def __post_init__(self) -> None:
        spe = _int_arg(self.steps_per_epoch, "steps_per_epoch", 1)
        if isinstance(self.steps, (str, bytes)) or not isinstance(self.steps, Iterable):
            raise TypeError(f"steps must be an iterable of integers, got {self.steps!r}")
        steps = tuple(_int_arg(s, f"steps[{i}]", 0) for i, s in enumerate(self.steps))
        for i in range(1, len(steps)):
            if steps[i] <= steps[i - 1]:
                raise ValueError(
                    f"steps must be strictly increasing, got steps[{i - 1}] = {steps[i - 1]}, steps[{i}] = {steps[i]}"
                )
        # Frozen: normalised values (a list given as steps, NumPy integers) are set once here.
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "steps_per_epoch", spe)

    @classmethod
    def log(cls, epochs: float, steps_per_epoch: int, per_decade: int = 10,
            first_epoch: float | None = None) -> Schedule:
        """Log-spaced schedule over ``epochs`` epochs: step 0, about ``per_decade`` steps per decade, the last step.

        The grid starts at ``first_epoch`` epochs (default: the first update,
        step 1) and runs in steps ``first_epoch * steps_per_epoch * 10**(k /
        per_decade)`` rounded to the nearest step, never below 1; so
        ``first_epoch=1e-3`` measures the first updates and every decade of
        epochs. The last step is ``epochs * steps_per_epoch`` rounded.
        """
        spe = _int_arg(steps_per_epoch, "steps_per_epoch", 1)
        per_decade = _int_arg(per_decade, "per_decade", 1)
        last = _last_step(epochs, spe)
        if first_epoch is None:
            start = 1.0
        else:
            fe = float(first_epoch)
            if not math.isfinite(fe) or fe <= 0:
                raise ValueError(f"first_epoch must be finite and > 0, got {first_epoch!r}")
            start = fe * spe
        steps = [0] if last == 0 else _log_grid(start, last, per_decade)
        return cls(tuple(steps), spe)

    @classmethod
    def powers_of_two(cls, epochs: float, steps_per_epoch: int) -> Schedule:
        """Steps 0, 1, 2, 4, ... and the last step ``epochs * steps_per_epoch`` (rounded)."""
        spe = _int_arg(steps_per_epoch, "steps_per_epoch", 1)
        return cls(tuple(powers_of_two(_last_step(epochs, spe))), spe)

    @property
    def last(self) -> int:
        """The last measured step (0 for an empty schedule)."""
        return self.steps[-1] if self.steps else 0

    def epoch(self, step: int) -> float:
        """Training time of ``step`` in epochs: ``step / steps_per_epoch``."""
        return _int_arg(step, "step", 0) / self.steps_per_epoch

    def epochs(self) -> list[float]:
        """Training time of every measured step, in epochs."""
        return [s / self.steps_per_epoch for s in self.steps]

    def next_after(self, step: int) -> int | None:
        """The first measured step strictly after ``step``, or None when there is none."""
        i = bisect.bisect_right(self.steps, operator.index(step))
        return self.steps[i] if i < len(self.steps) else None

    def __contains__(self, step: object) -> bool:
        try:
            s = operator.index(step)  # type: ignore[arg-type]
        except TypeError:
            return False
        i = bisect.bisect_left(self.steps, s)
        return i < len(self.steps) and self.steps[i] == s

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)
