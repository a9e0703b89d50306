"""The demo beside one busy process: ``nnphases run`` alone, then beside a process that keeps one
core busy, both in this run; prints the two wall times, the slowdown (target: at most 2.5x on two cores) and
the load average each run started at, since on a shared machine other work changes both. With
``--benchmark-disable`` (CI) a tiny synthetic run without figures stands in for the demo, so the benchmark
runs in seconds and cannot rot; run for real (``python -m pytest benchmarks/bench_contention.py -s``) it is
the demo itself, ``nnphases run`` with no arguments, figures and findings included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from nnphases.kernels.cores import usable_cores

QUICK = ["--dataset", "synthetic", "--holdout", "600", "--train-eval", "0", "--epochs", "1", "--seeds", "0",
         "--per-decade", "2", "--no-figures"]
TARGET = 2.5  # the slowdown beside one busy process this project aims at, on two cores


def _load() -> float:
    return os.getloadavg()[0]


def run_demo(args: list[str], out: Path, timeout: float) -> float:
    """Seconds of one ``nnphases run`` in a fresh process (as a user starts it); every seed must finish."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnphases", "run", *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    seeds = sorted(out.glob("seed-*"))
    assert seeds and all((s / "DONE").exists() for s in seeds), f"unfinished seeds in {out}"
    return seconds


def busy_process() -> subprocess.Popen:
    """A process that keeps one core busy until killed (pure Python: no threads of its own)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def test_demo_beside_a_busy_process(benchmark, tmp_path):
    args = QUICK if benchmark.disabled else []
    timeout = 300 if benchmark.disabled else 1800
    load_alone = _load()
    alone = benchmark.pedantic(run_demo, args=(args, tmp_path / "alone", timeout), rounds=1, iterations=1)
    busy = busy_process()
    try:
        time.sleep(0.5)  # the busy process is spinning before the run starts
        load_beside = _load()
        beside = run_demo(args, tmp_path / "beside", timeout)
    finally:
        busy.kill()
        busy.wait()
    slowdown = beside / alone
    benchmark.extra_info.update(alone_s=alone, beside_s=beside, slowdown=slowdown, load_alone=load_alone,
                                load_beside=load_beside, cores=usable_cores())
    what = "tiny synthetic run (--benchmark-disable)" if benchmark.disabled else "the demo (nnphases run)"
    print(f"\n{what}, {usable_cores()} usable cores, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} "
          f"in this process (the run sets PASSIVE unless given):\n"
          f"  alone                  {alone:7.1f} s  (1-min load at start {load_alone:.2f})\n"
          f"  beside one busy process {beside:6.1f} s  (1-min load at start {load_beside:.2f})\n"
          f"  slowdown {slowdown:.2f}x (target <= {TARGET}x on 2 cores: {'met' if slowdown <= TARGET else 'NOT met'})")
