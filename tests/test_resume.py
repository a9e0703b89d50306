"""Kill-and-resume: real `nnphases run` processes are SIGKILLed at random moments, resumed, and must end
with exactly the results of an uninterrupted run: the same checkpoints (none missing, none twice) and
the same counts and metrics at every one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnphases.store import RunDir, read_table

ARGS = ["--dataset", "synthetic", "--holdout", "600", "--depth", "2", "--width", "16", "--epochs", "6",
        "--seeds", "0,1", "--per-decade", "8", "--batch", "30", "--no-figures", "--device", "cpu"]


def _cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "nnphases.cli", "run", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _complete(out: Path) -> int:
    return sum(len(RunDir(d).completed_steps()) for d in out.glob("seed-*"))


def _wait_for_progress(proc: subprocess.Popen, out: Path, timeout: float = 120.0) -> None:
    """Returns once the run has completed one more checkpoint (or ended), so the next kill lands mid-run
    whatever the machine's speed."""
    start, deadline = _complete(out), time.monotonic() + timeout
    while proc.poll() is None and _complete(out) <= start and time.monotonic() < deadline:
        time.sleep(0.05)


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {t: read_table(sorted(out.glob("seed-*")), t) for t in ("nodes", "layers", "stats")}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    subprocess.run(_cmd(*ARGS, "--out", str(out)), check=True, env=_env(), timeout=300)
    return out


def test_killed_runs_resume_to_identical_results(reference_run, tmp_path):
    out = tmp_path / "killed"
    rng = random.Random(2026)
    kills = 0
    err = open(tmp_path / "stderr.log", "wb")  # a file, not a pipe nobody reads, which could block the child
    proc = subprocess.Popen(_cmd(*ARGS, "--out", str(out)), env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    for i in range(8):
        if i % 2:  # at a random moment, start-up included
            time.sleep(rng.uniform(0.2, 3.0))
        else:  # just after a checkpoint: guarantees kills in the middle of training
            _wait_for_progress(proc, out)
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for seed_dir in out.glob("seed-*"):
            run = RunDir(seed_dir)
            steps = run.completed_steps()
            assert steps == sorted(set(steps))
            for s in steps:  # every complete checkpoint is whole and readable
                counts, sizes = run.read_counts(s)
                assert counts and sizes.sum() == 600
        # Killed before run.json was written there is nothing to resume: the original command starts it
        # again (and continues any folder that holds the same configuration).
        again = _cmd("--resume", str(out), "--no-figures") if (out / "run.json").exists() else \
            _cmd(*ARGS, "--out", str(out))
        proc = subprocess.Popen(again, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    rc = proc.wait(timeout=300)
    err.close()
    assert rc == 0, (tmp_path / "stderr.log").read_text()[-2000:]
    assert kills >= 3, "the run finished before it could be killed enough times; lengthen it"
    want, got = _tables(reference_run), _tables(out)
    for name in want:
        pd.testing.assert_frame_equal(got[name].reset_index(drop=True), want[name].reset_index(drop=True))
    for seed_dir in reference_run.glob("seed-*"):
        a, b = RunDir(seed_dir), RunDir(out / seed_dir.name)
        assert a.completed_steps() == b.completed_steps()
        assert b.done
        for s in a.completed_steps():
            ca, _ = a.read_counts(s)
            cb, _ = b.read_counts(s)
            assert ca.keys() == cb.keys()
            for k in ca:
                np.testing.assert_array_equal(ca[k], cb[k])


def _drop(path: Path, group: str, key: str) -> None:
    """Removes one option from a stored configuration, as a file written before that option existed holds it."""
    cfg = json.loads(path.read_text())
    del cfg[group][key]
    path.write_text(json.dumps(cfg, indent=2))


@pytest.mark.parametrize("stored_lr, resumes", [(None, True), (0.5, False)])
def test_a_run_started_before_an_option_existed_resumes(reference_run, tmp_path, stored_lr, resumes):
    """A seed folder written by an older nnphases lacks options added since; resuming it fills their defaults, as
    run.json's reading does, and continues to the results of an uninterrupted run. A stored configuration that
    differs in an option it does hold is still refused."""
    out = tmp_path / "old"
    err = open(tmp_path / "stderr.log", "wb")
    proc = subprocess.Popen(_cmd(*ARGS, "--out", str(out)), env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    _wait_for_progress(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "run.json").exists() and not RunDir(out / "seed-0").done
    _drop(out / "run.json", "optim", "momentum")
    for seed_dir in out.glob("seed-*"):
        if (seed_dir / "config.json").exists():
            _drop(seed_dir / "config.json", "optim", "momentum")
            if stored_lr is not None:
                cfg = json.loads((seed_dir / "config.json").read_text())
                cfg["optim"]["lr"] = stored_lr
                (seed_dir / "config.json").write_text(json.dumps(cfg))
    done = subprocess.run(_cmd("--resume", str(out), "--no-figures"), env=_env(), capture_output=True, text=True,
                          timeout=300)
    err.close()
    if not resumes:
        assert done.returncode != 0 and "already holds a different configuration" in done.stderr
        return
    assert done.returncode == 0, done.stderr[-2000:]
    want, got = _tables(reference_run), _tables(out)
    for name in want:
        pd.testing.assert_frame_equal(got[name].reset_index(drop=True), want[name].reset_index(drop=True))
    assert '"momentum"' in (out / "seed-0" / "config.json").read_text()
    # A finished run too: reading several runs together compares their configurations.
    _drop(out / "seed-1" / "config.json", "optim", "momentum")
    again = subprocess.run(_cmd("--resume", str(out), "--no-figures"), env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((out / "seed-1" / "config.json").read_text())["optim"]["momentum"] == 0.0
