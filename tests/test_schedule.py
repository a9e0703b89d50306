"""Tests of nnphases.recording.schedule: log-spaced and power-of-two measurement steps, and Schedule."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import signal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnphases.recording.schedule import Schedule, log_steps, powers_of_two

# (last, per_decade, first)
LOG_CASES = [
    pytest.param(0, 10, 1, id="last-0"),
    pytest.param(1, 10, 1, id="last-1"),
    pytest.param(2, 10, 1, id="last-2"),
    pytest.param(10, 10, 1, id="one-decade"),
    pytest.param(1000, 10, 1, id="three-decades"),
    pytest.param(160_000, 10, 1, id="mnist-200-epochs"),
    pytest.param(123_457, 5, 1, id="odd-last-5-per-decade"),
    pytest.param(10**9, 20, 1, id="nine-decades-20"),
    pytest.param(5000, 3, 7, id="first-7"),
    pytest.param(5000, 1, 50, id="one-per-decade-first-50"),
    pytest.param(5, 10, 100, id="last-below-first"),
    pytest.param(np.int64(800), np.int32(4), np.int64(2), id="numpy-integers"),
]


def _check_log_steps(steps: list[int], last: int, per_decade: int, first: int) -> None:
    assert all(type(s) is int for s in steps)
    assert steps == sorted(set(steps)), "sorted and unique"
    assert steps[0] == 0 and steps[-1] == last
    if first <= last:
        assert first in steps
    assert all(s == 0 or s >= first or s == last for s in steps), "nothing between 0 and first except last"
    # Whole decades where rounding cannot merge grid points hold per_decade steps (+-1 at the edges).
    k = 0
    while first * 10 ** (k + 1) <= last:
        lo, hi = first * 10**k, first * 10 ** (k + 1)
        if lo >= 2 * per_decade:
            n = sum(lo <= s < hi for s in steps)
            assert abs(n - per_decade) <= 1, (lo, hi, n)
        k += 1
    # Never more than the grid allows: per_decade per decade, plus 0 and last.
    if last > first:
        assert len(steps) <= per_decade * math.log10(last / first) + 3


@pytest.mark.parametrize("last, per_decade, first", LOG_CASES)
def test_log_steps_properties(last: int, per_decade: int, first: int) -> None:
    _check_log_steps(log_steps(last, per_decade, first), int(last), int(per_decade), int(first))


@given(st.integers(0, 10**8), st.integers(1, 30), st.integers(1, 1000))
@settings(max_examples=200, deadline=None)
def test_log_steps_hypothesis(last: int, per_decade: int, first: int) -> None:
    _check_log_steps(log_steps(last, per_decade, first), last, per_decade, first)


@pytest.mark.parametrize("last, per_decade, first, expected", [
    pytest.param(100, 1, 1, [0, 1, 10, 100], id="decades"),
    pytest.param(1000, 10, 1, [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100,
                               126, 158, 200, 251, 316, 398, 501, 631, 794, 1000], id="per-decade-10"),
    pytest.param(250, 1, 1, [0, 1, 10, 100, 250], id="last-off-grid"),
    pytest.param(3, 10, 1, [0, 1, 2, 3], id="short"),
])
def test_log_steps_values(last: int, per_decade: int, first: int, expected: list[int]) -> None:
    assert log_steps(last, per_decade, first) == expected


def test_log_steps_shared_by_runs_of_different_lengths() -> None:
    # The grid is anchored at `first`, so a longer run measures every step a shorter one does.
    short, long = log_steps(5_000), log_steps(80_000)
    assert set(short[:-1]) <= set(long)


@pytest.mark.parametrize("kwargs, error, fragment", [
    pytest.param(dict(last=-1), ValueError, "last must be >= 0, got -1", id="negative-last"),
    pytest.param(dict(last=10, per_decade=0), ValueError, "per_decade must be >= 1, got 0", id="per-decade-0"),
    pytest.param(dict(last=10, first=0), ValueError, "first must be >= 1, got 0", id="first-0"),
    pytest.param(dict(last=1.5), TypeError, "last must be an integer, got 1.5", id="float-last"),
    pytest.param(dict(last=True), TypeError, "last must be an integer", id="bool-last"),
    pytest.param(dict(last="10"), TypeError, "last must be an integer", id="str-last"),
])
def test_log_steps_validation(kwargs: dict, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        log_steps(**kwargs)


@pytest.mark.parametrize("last, expected", [
    pytest.param(0, [0], id="0"),
    pytest.param(1, [0, 1], id="1"),
    pytest.param(2, [0, 1, 2], id="2"),
    pytest.param(10, [0, 1, 2, 4, 8, 10], id="10"),
    pytest.param(16, [0, 1, 2, 4, 8, 16], id="16-power"),
    pytest.param(1000, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000], id="1000"),
])
def test_powers_of_two(last: int, expected: list[int]) -> None:
    assert powers_of_two(last) == expected


@pytest.mark.parametrize("last, error", [
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(2.0, TypeError, id="float"),
])
def test_powers_of_two_validation(last: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="last"):
        powers_of_two(last)  # type: ignore[arg-type]


# (constructor, kwargs, expected first measured step after 0, expected last step)
SCHEDULE_CASES = [
    pytest.param("log", dict(epochs=200, steps_per_epoch=800, first_epoch=1e-3), 1, 160_000, id="source-000"),
    pytest.param("log", dict(epochs=2, steps_per_epoch=100), 1, 200, id="log-default-first"),
    pytest.param("log", dict(epochs=10, steps_per_epoch=5000, first_epoch=1e-3), 5, 50_000, id="first-5-steps"),
    pytest.param("log", dict(epochs=1.5, steps_per_epoch=3, per_decade=4), 1, 5, id="fractional-epochs"),
    pytest.param("powers_of_two", dict(epochs=256, steps_per_epoch=391), 1, 100_096, id="source-002"),
]


@pytest.mark.parametrize("ctor, kwargs, first, last", SCHEDULE_CASES)
def test_schedule_constructors(ctor: str, kwargs: dict, first: int, last: int) -> None:
    s = getattr(Schedule, ctor)(**kwargs)
    spe = kwargs["steps_per_epoch"]
    assert s.steps_per_epoch == spe
    assert isinstance(s.steps, tuple) and list(s.steps) == sorted(set(s.steps))
    assert s.steps[0] == 0 and s.steps[1] == first and s.last == last == s.steps[-1]
    assert len(s) == len(s.steps) and list(s) == list(s.steps)
    for step in (0, first, last):
        assert step in s
        assert s.epoch(step) == step / spe
    assert s.epochs() == [x / spe for x in s.steps]
    assert s.next_after(0) == first
    assert s.next_after(last) is None
    assert s.next_after(first - 1) == first
    assert [s.next_after(a) for a in s.steps[:-1]] == list(s.steps[1:])


def test_schedule_log_measures_whole_decades_of_epochs() -> None:
    # Anchored at 1e-3 epoch, the grid hits 0.01, 0.1, 1, 10, 100 epochs exactly.
    s = Schedule.log(200, 800, first_epoch=1e-3)
    for e in (0.01, 0.1, 1, 10, 100, 200):
        assert round(e * 800) in s
        assert s.epoch(round(e * 800)) == pytest.approx(e)
    assert 801 not in s and "800" not in s and 2.5 not in s
    assert s == Schedule.log(200, 800, first_epoch=1e-3)


def test_schedule_log_default_matches_log_steps() -> None:
    assert list(Schedule.log(200, 800, per_decade=7).steps) == log_steps(160_000, 7)
    assert list(Schedule.powers_of_two(3, 100).steps) == powers_of_two(300)


def test_schedule_normalises_and_is_frozen() -> None:
    s = Schedule([0, np.int64(3), 9], np.int32(3))  # type: ignore[arg-type]
    assert s.steps == (0, 3, 9) and all(type(x) is int for x in s.steps) and type(s.steps_per_epoch) is int
    assert s.epoch(9) == 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = (0,)  # type: ignore[misc]
    assert Schedule.log(0, 10).steps == (0,)


@pytest.mark.parametrize("call, error, fragment", [
    pytest.param(lambda: Schedule((0, 2, 2), 1), ValueError, r"steps\[1\] = 2, steps\[2\] = 2", id="repeated"),
    pytest.param(lambda: Schedule((0, 5, 3), 1), ValueError, "strictly increasing", id="unsorted"),
    pytest.param(lambda: Schedule((-1, 5), 1), ValueError, r"steps\[0\] must be >= 0, got -1", id="negative"),
    pytest.param(lambda: Schedule((0, 1), 0), ValueError, "steps_per_epoch must be >= 1, got 0", id="spe-0"),
    pytest.param(lambda: Schedule(5, 1), TypeError, "steps must be an iterable", id="steps-int"),
    pytest.param(lambda: Schedule.log(-1, 10), ValueError, "epochs must be finite and >= 0, got -1", id="epochs-neg"),
    pytest.param(lambda: Schedule.log(math.inf, 10), ValueError, "epochs", id="epochs-inf"),
    pytest.param(lambda: Schedule.log("200", 10), TypeError, "epochs must be a number", id="epochs-str"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=0), ValueError, "first_epoch must be finite and > 0",
                 id="first-epoch-0"),
    pytest.param(lambda: Schedule.log(10, 10, per_decade=0), ValueError, "per_decade", id="per-decade-0"),
    pytest.param(lambda: Schedule.powers_of_two(10, 0), ValueError, "steps_per_epoch", id="p2-spe-0"),
    pytest.param(lambda: Schedule((0, 1), 1).epoch(-3), ValueError, "step must be >= 0, got -3", id="epoch-neg"),
])
def test_schedule_validation(call, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        call()


# -- bounds: no argument hangs or overflows -----------------------------------------------------


@contextlib.contextmanager
def _within_one_second():
    """Fail (instead of hanging) when the body runs for more than a second: SIGALRM interrupts a Python loop."""
    def expire(signum, frame):
        raise TimeoutError("took more than a second")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


BIG = 9223372036854775807

BAD_INPUTS = [
    pytest.param(lambda: Schedule.log(1, 1000, per_decade=10**9), ValueError,
                 "per_decade must be <= 1000, got 1000000000", id="log-per-decade-huge"),
    pytest.param(lambda: log_steps(1000, per_decade=1001), ValueError, "per_decade must be <= 1000, got 1001",
                 id="log-steps-per-decade-1001"),
    pytest.param(lambda: Schedule.log(1e308, 10), ValueError, f"epochs must give at most {BIG} steps, got 1e\\+308",
                 id="epochs-overflow-product"),
    pytest.param(lambda: Schedule.log(1e18, 100), ValueError, f"epochs must give at most {BIG} steps",
                 id="epochs-beyond-int64"),
    pytest.param(lambda: Schedule.log(math.inf, 10), ValueError, "epochs must be finite and >= 0, got inf",
                 id="epochs-inf"),
    pytest.param(lambda: Schedule.log(math.nan, 10), ValueError, "epochs must be finite and >= 0, got nan",
                 id="epochs-nan"),
    pytest.param(lambda: Schedule.powers_of_two(math.inf, 10), ValueError, "epochs must be finite",
                 id="pow2-epochs-inf"),
    pytest.param(lambda: Schedule.powers_of_two(1e308, 10), ValueError, "epochs must give at most",
                 id="pow2-epochs-overflow"),
    pytest.param(lambda: Schedule.log(None, 10), TypeError, "epochs must be a number, got None", id="epochs-none"),
    pytest.param(lambda: Schedule.log(True, 10), TypeError, "epochs must be a number, got True", id="epochs-bool"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch="1e-3"), TypeError,
                 "first_epoch must be a number, got '1e-3'", id="first-epoch-str"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=b"1"), TypeError, "first_epoch must be a number",
                 id="first-epoch-bytes"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=True), TypeError, "first_epoch must be a number, got True",
                 id="first-epoch-bool"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=[1e-3]), TypeError, "first_epoch must be a number",
                 id="first-epoch-list"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=math.inf), ValueError,
                 "first_epoch must be finite and > 0, got inf", id="first-epoch-inf"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=math.nan), ValueError,
                 "first_epoch must be finite and > 0, got nan", id="first-epoch-nan"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=-1e-3), ValueError, "first_epoch must be finite and > 0",
                 id="first-epoch-negative"),
    pytest.param(lambda: Schedule.log(1, 2**63), ValueError, f"steps_per_epoch must be <= {BIG}, got {2**63}",
                 id="steps-per-epoch-beyond-int64"),
    pytest.param(lambda: log_steps(2**63), ValueError, f"last must be <= {BIG}, got {2**63}", id="last-beyond-int64"),
    pytest.param(lambda: log_steps(10**400), ValueError, f"last must be <= {BIG}", id="last-huge"),
    pytest.param(lambda: log_steps(10, first=10**30), ValueError, f"first must be <= {BIG}", id="first-huge"),
    pytest.param(lambda: powers_of_two(10**30), ValueError, f"last must be <= {BIG}", id="pow2-last-huge"),
    pytest.param(lambda: Schedule(range(10**12), 1), ValueError, "steps must hold at most 100000 steps",
                 id="steps-range-huge"),
    pytest.param(lambda: Schedule(itertools.count(), 1), ValueError, "steps must hold at most 100000 steps",
                 id="steps-endless"),
    pytest.param(lambda: Schedule((0, 2**63), 1), ValueError, rf"steps\[1\] must be <= {BIG}", id="step-huge"),
    pytest.param(lambda: Schedule.last_step(1e300, 10**9), ValueError, "epochs must give at most",
                 id="last-step-overflow"),
    pytest.param(lambda: Schedule.last_step("2", 10), TypeError, "epochs must be a number, got '2'",
                 id="last-step-epochs-str"),
    pytest.param(lambda: Schedule.last_step(2, 0), ValueError, "steps_per_epoch must be >= 1, got 0",
                 id="last-step-spe-0"),
    pytest.param(lambda: Schedule((0, 1), 1).next_after("0"), TypeError, "step must be an integer, got '0'",
                 id="next-after-str"),
]


@pytest.mark.parametrize("call, error, fragment", BAD_INPUTS)
def test_bad_inputs_fail_fast_with_one_line(call, error: type[Exception], fragment: str) -> None:
    with _within_one_second(), pytest.raises(error, match=fragment) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("call, length, last", [
    pytest.param(lambda: Schedule.log(1, 1000, per_decade=1000), None, 1000, id="finest-grid"),
    pytest.param(lambda: Schedule.log(9e17, 10, per_decade=1000, first_epoch=5e-324), None, 9 * 10**18,
                 id="tiny-start-long-run"),
    pytest.param(lambda: Schedule.log(10, 10, first_epoch=1e308), 2, 100, id="start-past-the-end"),
    pytest.param(lambda: Schedule.log(9.2e18, 1), None, 9_200_000_000_000_000_000, id="near-int64"),
    pytest.param(lambda: Schedule.powers_of_two(9.2e18, 1), 65, 9_200_000_000_000_000_000, id="pow2-near-int64"),
    pytest.param(lambda: Schedule(range(100_000), 1), 100_000, 99_999, id="most-steps"),
])
def test_extreme_valid_inputs_are_fast(call, length: int | None, last: int) -> None:
    with _within_one_second():
        s = call()
    assert s.last == last and s.steps[0] == 0 and len(s) <= 100_000
    if length is not None:
        assert len(s) == length


def _naive_log_grid(start: float, last: int, per_decade: int) -> list[int]:
    """The schedule's definition walked point by point from k = 0 (what the schedule computed before)."""
    steps, k = {0, last}, 0
    while (s := max(1, math.floor(start * 10.0 ** (k / per_decade) + 0.5))) < last:
        steps.add(s)
        k += 1
    return sorted(steps)


@given(st.floats(1e-9, 1e4), st.integers(1, 10**6), st.integers(1, 40))
@settings(max_examples=300, deadline=None)
def test_log_grid_skips_no_step(first_epoch: float, spe_last: int, per_decade: int) -> None:
    # Starting the walk at the last grid point below step 1 gives the very steps of the full walk.
    s = Schedule.log(1.0, spe_last, per_decade=per_decade, first_epoch=first_epoch)
    assert list(s.steps) == _naive_log_grid(first_epoch * spe_last, spe_last, per_decade)


@pytest.mark.parametrize("epochs, steps_per_epoch, expected", [
    pytest.param(2.5, 1, 3, id="half-up-not-to-even"),     # round(2.5) == 2
    pytest.param(0.5, 1, 1, id="half-step"),               # round(0.5) == 0
    pytest.param(1.5, 3, 5, id="4.5-steps"),               # round(4.5) == 4
    pytest.param(3.5, 1, 4, id="odd-half"),
    pytest.param(0, 7, 0, id="zero"),
    pytest.param(200, 800, 160_000, id="source-000"),
    pytest.param(np.float32(0.25), np.int64(8), 2, id="numpy-numbers"),
])
def test_last_step_is_where_every_schedule_ends(epochs: float, steps_per_epoch: int, expected: int) -> None:
    last = Schedule.last_step(epochs, steps_per_epoch)
    assert type(last) is int and last == expected
    assert Schedule.log(epochs, steps_per_epoch).last == last
    assert Schedule.powers_of_two(epochs, steps_per_epoch).last == last
