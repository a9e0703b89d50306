"""Threads on a shared machine: the CPU thread count follows the cores the process may use
(affinity, cgroup quota, OMP_NUM_THREADS), the command line keeps OpenMP's idle threads from spinning, and a
run beside a competing process finishes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnphases.kernels import cores
from nnphases.kernels.cores import cgroup_quota, usable_cores


@pytest.fixture
def no_omp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("value, expected", [("3", 3), ("4,2", 4), (" 1 ", 1)])
def test_omp_num_threads_is_the_users_choice(monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert usable_cores() == expected


@pytest.mark.parametrize("value", ["0", "-2", "many", ""])
def test_a_meaningless_omp_num_threads_is_ignored(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(cores, "cgroup_quota", lambda: None)
    assert usable_cores() == 3


@pytest.mark.parametrize("affinity, quota, expected", [({0, 1, 2, 3}, None, 4), ({5}, None, 1), ({0, 1, 2, 3}, 2, 2),
                                                      ({0, 1}, 8, 2)],
                         ids=["affinity", "one-core-set", "quota-caps", "affinity-caps"])
def test_cores_follow_affinity_and_quota(monkeypatch, no_omp_env, affinity, quota, expected):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: affinity)
    monkeypatch.setattr(cores, "cgroup_quota", lambda: quota)
    assert usable_cores() == expected


def _cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> int | None:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "self").write_text(membership)
    return cgroup_quota.__wrapped__(root, tmp_path / "self")


@pytest.mark.parametrize("membership, files, expected", [
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 2),  # 1.5 cores: rounded up
    ("0::/job/step\n", {"job/cpu.max": "100000 100000\n", "job/step/cpu.max": "400000 100000\n"}, 1),  # the parent's
    ("0::/job\n", {"unified/job/cpu.max": "300000 100000\n"}, 3),  # hybrid: v2 mounted under unified/
    ("4:cpu,cpuacct:/slurm\n0::/\n", {"cpu,cpuacct/slurm/cpu.cfs_quota_us": "50000\n",
                                      "cpu,cpuacct/slurm/cpu.cfs_period_us": "100000\n"}, 1),  # v1
    ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1, no quota
    ("0::/\n", {"cpu.max": "garbage\n"}, None),
], ids=["v2-none", "v2-fraction", "v2-parent", "hybrid", "v1", "v1-none", "unreadable"])
def test_cgroup_quota(tmp_path, membership, files, expected):
    assert _cgroup(tmp_path, membership, files) == expected


def test_no_cgroup_file_means_no_quota(tmp_path):
    assert cgroup_quota.__wrapped__(tmp_path / "none", tmp_path / "missing") is None


def test_cpu_kernels_default_to_the_usable_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        from nnphases.kernels.impl import cpp
    except ImportError as e:
        pytest.skip(str(e))
    assert cpp._t(None) == 1 and cpp._t(3) == 3


def test_numba_kernels_default_to_the_usable_cores(monkeypatch):
    numba = pytest.importorskip("numba")
    from nnphases.kernels.impl._numba_common import _num_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with _num_threads(None) as n:
        assert n == 1 == numba.get_num_threads()


@pytest.mark.parametrize("given, expected", [(None, ("PASSIVE", "0")), ("ACTIVE", ("ACTIVE", "30000000000"))])
def test_the_command_line_keeps_openmp_threads_from_spinning(given, expected):
    """The policy and spin count torch's libgomp itself reports when it starts (it reads the variable once, when
    loaded): the command line sets PASSIVE before torch is imported, so idle threads spin 0 times (libgomp's
    default is 300000 spins, shown as PASSIVE too), and a value the user gave is kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", "import nnphases.cli, torch; torch.get_num_threads()"], env=env,
                         capture_output=True, text=True, check=True)
    shown = dict(line.strip().replace("'", "").split(" = ", 1) for line in out.stderr.splitlines() if " = " in line)
    if "GOMP_SPINCOUNT" not in shown:
        pytest.skip("this torch does not use GNU OpenMP (nothing reported with OMP_DISPLAY_ENV)")
    assert (shown["OMP_WAIT_POLICY"], shown["GOMP_SPINCOUNT"]) == expected


def test_a_run_beside_a_busy_process_finishes(tmp_path):
    """A tiny run (5 checkpoints) beside a process that keeps one core busy: it took seconds when this was
    written, so the limit catches a stall (a join that never returns), not a slow machine."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        done = subprocess.run([sys.executable, "-m", "nnphases", "run", "--dataset", "synthetic", "--holdout", "600",
                               "--train-eval", "0", "--epochs", "1", "--seeds", "0", "--per-decade", "2",
                               "--no-figures", "--out", str(tmp_path / "run")],
                              capture_output=True, text=True, timeout=300)
    finally:
        busy.kill()
        busy.wait()
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "seed-0" / "DONE").exists()
