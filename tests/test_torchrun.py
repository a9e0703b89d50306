"""`nnphases run` under torchrun (2 processes, gloo): the same checkpoints as one process, every scheduled step
stored, and a world killed mid-run resumes to completion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd

from nnphases.store import RunDir, read_table

ARGS = ["--dataset", "synthetic", "--holdout", "600", "--depth", "2", "--width", "16", "--epochs", "4",
        "--seeds", "0", "--per-decade", "8", "--batch", "30", "--train-eval", "300", "--no-figures",
        "--device", "cpu"]


def _env() -> dict[str, str]:
    # A rank that aborts prints every thread's Python stack, so that a failure says where it stopped.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


def _failed(r: subprocess.CompletedProcess) -> str:
    """The output of a failed world: the ranks' own lines (an abort's message comes before torchrun's report)."""
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith(("seed ", "plan:", "time:"))]
    return "\n".join(lines)[-6000:]


def _torchrun(*extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "nnphases", "run", *extra]


def test_torchrun_matches_one_process_and_resumes_after_a_kill(tmp_path):
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    subprocess.run([sys.executable, "-m", "nnphases", "run", *ARGS, "--out", str(one)], check=True, env=_env(),
                   timeout=600, capture_output=True)
    r = subprocess.run(_torchrun(*ARGS, "--out", str(two)), env=_env(), timeout=600, capture_output=True, text=True)
    assert r.returncode == 0, _failed(r)
    a, b = RunDir(one / "seed-0"), RunDir(two / "seed-0")
    assert b.done and a.completed_steps() == b.completed_steps()  # every scheduled step, once
    (ca, sa), (cb, sb) = a.read_counts(0), b.read_counts(0)
    assert sa.tolist() == sb.tolist() and list(ca) == list(cb)
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k])
    for t in ("nodes", "layers", "stats"):
        pd.testing.assert_frame_equal(read_table(one, t).query("step == 0"), read_table(two, t).query("step == 0"))

    # Killed once it has stored a few checkpoints, then resumed by torchrun with --resume: it completes.
    err = open(tmp_path / "stderr.log", "wb")
    proc = subprocess.Popen(_torchrun(*ARGS, "--out", str(killed)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=err, start_new_session=True)
    run = RunDir(killed / "seed-0")
    deadline = time.monotonic() + 300
    while proc.poll() is None and len(run.completed_steps()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not run.done, "the world finished before it was killed; lengthen the run"
    r = subprocess.run(_torchrun("--resume", str(killed), "--no-figures"), env=_env(), timeout=600,
                       capture_output=True, text=True)
    assert r.returncode == 0, _failed(r)
    assert run.done and run.completed_steps() == a.completed_steps()
