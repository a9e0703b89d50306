"""Progress lines of a run without a terminal: one per measurement, with the step, epoch, validation loss and
accuracy, elapsed time and ETA."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from nnphases.experiments.progress import ProgressLines, clock


@pytest.mark.parametrize("seconds,text", [(0, "0:00:00"), (59.6, "0:01:00"), (3725, "1:02:05"), (-3, "0:00:00"),
                                          (100 * 3600, "100:00:00")])
def test_clock(seconds, text):
    assert clock(seconds) == text


def test_line_fields():
    out = io.StringIO()
    p = ProgressLines(seed=2, total=1000, initial=0, epochs=5, stream=out)
    line = p.measured(100, 0.5, {"val": {"loss": 0.41234, "accuracy": 0.8567}, "train": {"loss": 1, "accuracy": 0}})
    assert re.fullmatch(r"seed 2: step 100/1,000 \(epoch 0\.5 of 5\), val loss 0\.412 acc 0\.857, "
                        r"\d+:\d\d:\d\d elapsed, ETA \d+:\d\d:\d\d", line), line
    assert out.getvalue() == line + "\n"
    assert "val loss" not in p.measured(100, 0.5, {})


def test_a_run_without_a_terminal_prints_a_line_per_measurement(tmp_path):
    args = [sys.executable, "-m", "nnphases.cli", "run", "--dataset", "synthetic", "--holdout", "600", "--depth", "2",
            "--width", "8", "--epochs", "0.5", "--seeds", "0", "--per-decade", "2", "--no-figures",
            "--out", str(tmp_path / "r")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("seed 0: step ")]
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "r" / "seed-0" / "checkpoints").iterdir())
    assert [int(re.match(r"seed 0: step ([\d,]+)/", ln).group(1).replace(",", "")) for ln in lines] == steps[1:]
    assert all(" val loss " in ln and " elapsed, ETA " in ln for ln in lines)
