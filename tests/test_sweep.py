"""Sweeps (nnphases.experiments.sweep, ``nnphases sweep`` / ``nnphases status``): one submitit job per cell and seed, run on
this machine or submitted as a Slurm job array; resubmitting skips what is done and resumes what was killed, and
the status is read from the folders.

Slurm is not installed here: the Slurm tests put fake ``srun``, ``sbatch`` and ``scontrol`` on PATH, check the job
array submitit writes, then run one of its tasks with the environment Slurm would give it, preempt it (SIGUSR2,
as Slurm signals before the time limit) and run the requeued task to the end."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nnphases.experiments import sweep, train
from nnphases.cli import app
from nnphases.experiments.config import Config
from nnphases.store import RunDir, read_table

pytest.importorskip("submitit")

# A few seconds of training per job on one core.
TINY = dict(dataset="synthetic", holdout=600, epochs=0.5, width=8, train_eval=0, device="cpu")
TINY_FLAGS = ["--dataset", "synthetic", "--holdout", "600", "--epochs", "0.5", "--width", "8", "--train-eval", "0",
              "--device", "cpu"]
# Long enough (480 steps, 19 checkpoints) to be stopped after its third checkpoint and before its end.
LONG = dict(dataset="synthetic", holdout=600, epochs=6, depth=2, width=16, batch=30, per_decade=8, train_eval=0,
            device="cpu", seeds=(0,))


def _files(out: Path) -> dict[str, tuple[int, int]]:
    """Every file of a sweep but submitit's logs, with its mtime and size."""
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(out.rglob("*"))
            if p.is_file() and ".submitit" not in p.parts}


def _wait(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _background_submit(jobs, **kw) -> tuple[threading.Thread, dict]:
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(outcomes=sweep.submit(jobs, "local", **kw)))
    t.start()
    return t, box


def _counts_mtimes(run: RunDir) -> dict[int, int]:
    return {s: (run.checkpoint_path(s) / "counts.npz").stat().st_mtime_ns for s in run.completed_steps()}


def _assert_same_results(a: Path, b: Path) -> None:
    for table in ("nodes", "layers", "stats"):
        pd.testing.assert_frame_equal(read_table([a], table), read_table([b], table))
    ra, rb = RunDir(a), RunDir(b)
    assert ra.completed_steps() == rb.completed_steps()
    for s in ra.completed_steps():
        ca, _ = ra.read_counts(s)
        cb, _ = rb.read_counts(s)
        assert ca.keys() == cb.keys()
        for k in ca:
            np.testing.assert_array_equal(ca[k], cb[k])


# -- local executor --------------------------------------------------------------------------------------------------


def test_local_sweep_runs_every_cell_and_seed_and_a_resubmission_skips_them(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", *TINY_FLAGS, "--seeds", "0,1", "--grid", "depth=1,2", "--executor", "local", "--parallel", "2",
            "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output[-3000:]
    assert "2 cells, 4 jobs: 4 done" in r.output
    assert {(s.cell, s.seed, s.state) for s in sweep.status(out)} == \
        {(c, k, "done") for c in ("depth=1", "depth=2") for k in (0, 1)}
    for depth in (1, 2):  # each cell is an ordinary run folder, as nnphases run writes it
        cell = out / f"depth={depth}"
        assert Config.from_dict(json.loads((cell / "run.json").read_text())) == \
            train.resolve("demo", {**TINY, "depth": depth, "seeds": (0, 1)})
        assert {p.name for p in cell.iterdir() if not p.name.startswith(".")} == {"run.json", "seed-0", "seed-1"}
    assert sorted(read_table(out, "stats")["seed"].unique()) == [0, 1]
    logs = sorted((out / ".submitit").rglob("*"))

    before = _files(out)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output[-3000:]
    assert "4 done" in again.output
    job = sweep.jobs_for(sweep.cells("demo", {**TINY, "seeds": (0, 1)}, ["depth=1,2"]), out)[3]
    assert job() == "already done"  # the job itself skips a finished seed, whoever runs it
    assert train.resume(out / "depth=2", progress=False)  # and nnphases run --resume finds nothing to do
    assert _files(out) == before  # nothing trained, written or touched again
    assert sorted((out / ".submitit").rglob("*")) == logs  # and no job was even started


def test_a_killed_job_resumes_when_resubmitted_to_the_results_of_an_uninterrupted_one(tmp_path):
    cfg = train.resolve("demo", LONG)
    a, b = jobs = sweep.jobs_for({"a": cfg, "b": cfg}, tmp_path)  # two identical cells: b is killed, a is not
    t, box = _background_submit(jobs, parallel=2)
    _wait(lambda: len(RunDir(b.run_dir).completed_steps()) >= 3 or not t.is_alive(), "b's third checkpoint")
    os.kill(json.loads(b.job_file.read_text())["pid"], signal.SIGKILL)
    t.join(timeout=600)
    assert [o.result for o in box["outcomes"]] == ["trained", "failed"]
    assert not RunDir(b.run_dir).done
    assert [s.state for s in sweep.status(tmp_path)] == ["done", "interrupted"]
    kept = _counts_mtimes(RunDir(b.run_dir))

    again = sweep.submit(jobs, "local", parallel=2)
    assert [o.result for o in again] == ["skipped", "trained"]
    assert [s.state for s in sweep.status(tmp_path)] == ["done", "done"]
    assert not b.job_file.exists() and not b.error_file.exists()
    resumed = _counts_mtimes(RunDir(b.run_dir))
    assert {s: resumed[s] for s in kept} == kept  # resumed from its checkpoints, not started over
    assert len(resumed) > len(kept)
    _assert_same_results(a.run_dir, b.run_dir)


def test_status_sees_running_pending_done_and_failed_jobs(tmp_path):
    missing = tmp_path / "no-mnist"
    configs = {"ok": train.resolve("demo", {**TINY, "seeds": (0,)}),
               "bad": train.resolve("demo", {**TINY, "seeds": (0,), "dataset": "mnist", "data_root": str(missing)})}
    out = tmp_path / "out"
    t, box = _background_submit(sweep.jobs_for(configs, out), parallel=1)

    def states() -> dict[str, str]:
        return {s.cell: s.state for s in sweep.status(out)}

    _wait(lambda: (out / "bad" / "run.json").exists() and states()["ok"] != "pending", "the first job")
    assert states() == {"ok": "running", "bad": "pending"}
    t.join(timeout=600)
    rows = {s.cell: s for s in sweep.status(out)}
    assert rows["ok"].state == "done"
    assert rows["bad"].state == "failed"
    assert rows["bad"].detail.startswith("FileNotFoundError: mnist:") and str(missing) in rows["bad"].detail
    assert [o.result for o in box["outcomes"]] == ["trained", "failed"]
    assert box["outcomes"][1].detail == rows["bad"].detail
    r = CliRunner().invoke(app, ["status", str(out)])
    assert r.exit_code == 0
    assert "2 cells, 2 jobs: 1 done, 1 failed" in r.output and str(missing) in r.output


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _holder(path: Path, *, pid: int, host: str | None = None, age: float = 0.0) -> None:
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "job": "77", "token": "t"}))
    os.utime(path, (time.time() - age, time.time() - age))


def _checkpoint(run: Path, step: int = 12) -> None:
    (run / "checkpoints" / f"step-{step:012d}").mkdir(parents=True)


def _done(run: Path) -> None:
    run.mkdir(parents=True)
    (run / "DONE").write_text(json.dumps({"last_step": 240, "checkpoints": 19}))


# What each arrangement of a seed's files says: (files, state, words of the detail).
STATES = {
    "nothing": (lambda c: None, "pending", ""),
    "done": (lambda c: _done(c / "seed-0"), "done", "19 checkpoints, last at step 240"),
    "done-after-an-error": (lambda c: (_done(c / "seed-0"), (c / "seed-0.error").write_text("ValueError: x\n")),
                            "done", "19 checkpoints"),
    "running-here": (lambda c: _holder(c / "seed-0.job", pid=os.getpid()), "running",
                     f"no checkpoint yet; pid {os.getpid()} on {socket.gethostname()}, job 77"),
    "running-elsewhere": (lambda c: (_checkpoint(c / "seed-0"), _holder(c / "seed-0.job", pid=1, host="node7",
                                                                        age=20)),
                          "running", "step 12 of ?; pid 1 on node7"),
    "retry-running": (lambda c: (_holder(c / "seed-0.job", pid=os.getpid()),
                                 (c / "seed-0.error").write_text("ValueError: x\n")), "running", "pid"),
    "failed": (lambda c: (c / "seed-0.error").write_text("FileNotFoundError: no data in /x (log: l.err)\n"),
               "failed", "FileNotFoundError: no data in /x (log: l.err)"),
    "killed-here": (lambda c: (_checkpoint(c / "seed-0"), _holder(c / "seed-0.job", pid=_dead_pid())),
                    "interrupted", "1 checkpoints, last at step 12 of ?; its job (pid"),
    "silent-elsewhere": (lambda c: (_checkpoint(c / "seed-0"), _holder(c / "seed-0.job", pid=1, host="node7",
                                                                       age=sweep.STALE_S + 60)),
                         "interrupted", "is gone; resubmit to resume"),
    "killed-before-a-checkpoint": (lambda c: _holder(c / "seed-0.job", pid=_dead_pid()), "interrupted",
                                   "ended before a checkpoint"),
    "preempted": (lambda c: _checkpoint(c / "seed-0"), "interrupted", "resubmit to resume"),
}


@pytest.mark.parametrize("case", list(STATES))
def test_status_of_a_seed_from_its_files(tmp_path, case):
    make, state, words = STATES[case]
    cell = tmp_path / "cell"
    sweep.write_run_json(train.resolve("demo", {**TINY, "seeds": (0,)}), cell)
    make(cell)
    (row,) = sweep.status(tmp_path)
    assert (row.cell, row.seed, row.state) == ("cell", 0, state)
    assert words in row.detail


def test_status_of_a_plain_run_folder_and_of_no_run(tmp_path):
    sweep.write_run_json(train.resolve("demo", {**TINY, "seeds": (3, 4)}), tmp_path / "run")
    _done(tmp_path / "run" / "seed-4")
    assert [(s.cell, s.seed, s.state) for s in sweep.status(tmp_path / "run")] == [("", 3, "pending"),
                                                                                  ("", 4, "done")]
    assert "1 cells, 2 jobs: 1 done, 1 pending" in sweep.format_status(sweep.status(tmp_path / "run"))
    r = CliRunner().invoke(app, ["status", str(tmp_path / "run" / "seed-4")])
    assert r.exit_code == 2 and "holds no run.json" in r.output
    (tmp_path / "run" / "run.json").write_text("{")
    r = CliRunner().invoke(app, ["status", str(tmp_path / "run")])
    assert r.exit_code == 2 and "run.json is damaged (not JSON" in r.output


def test_a_second_job_for_a_running_seed_stands_aside(tmp_path):
    (job,) = sweep.jobs_for({"c": train.resolve("demo", {**TINY, "seeds": (0,)})}, tmp_path)
    job.out.mkdir()
    _holder(job.job_file, pid=os.getpid())
    assert job().startswith(f"running elsewhere (pid {os.getpid()} on")
    assert not job.run_dir.exists()
    outcomes = sweep.submit([job], "local")  # nor is it started again
    assert outcomes[0].result == "skipped" and outcomes[0].detail.startswith("running:")
    # the same Slurm job requeued after a hard kill takes its seed back at once, on whatever node
    _holder(job.job_file, pid=1, host="node7")
    holder = json.loads(job.job_file.read_text())
    assert sweep._alive(holder, 0.0) and not sweep._alive(holder, 0.0, requeued_as="77")


# -- cells, jobs and the command line --------------------------------------------------------------------------------


CELLS = [
    ("source000-grid", {"epochs": 1.0}, [], 18, "2x20-mse", {"depth": 2, "width": 20, "loss": "mse", "epochs": 1.0}),
    ("source000-grid", {}, ["lr=0.001,0.01"], 36, "9x320-ce_lr=0.01", {"depth": 9, "width": 320, "lr": 0.01}),
    ("demo", {}, [], 1, "", {"depth": 5, "width": 80}),
    ("demo", {}, ["depth=1,2", "loss=mse,ce"], 4, "depth=2_loss=mse", {"depth": 2, "loss": "mse"}),
    ("demo", {}, ["per-decade=4,8", "probes=true,false"], 4, "per-decade=8_probes=true",
     {"per_decade": 8, "probes": True}),
]


@pytest.mark.parametrize("preset, flat, grid, n, name, values", CELLS, ids=[f"{c[0]}-{len(c[2])}" for c in CELLS])
def test_cells_of_a_sweep(preset, flat, grid, n, name, values):
    cells = sweep.cells(preset, flat, grid)
    assert len(cells) == n and name in cells
    cfg_flat = cells[name].flat()
    assert {k: cfg_flat[k] for k in values} == values


def test_jobs_of_the_grid(tmp_path):
    jobs = sweep.jobs_for_grid({"seeds": (0, 1)}, tmp_path)
    assert len(jobs) == 36
    assert (jobs[0].cell, jobs[0].seed, jobs[0].out, jobs[1].seed) == ("2x20-mse", 0, tmp_path / "2x20-mse", 1)
    assert Config.from_dict(jobs[-1].config) == train.grid_configs({"seeds": (0, 1)})["9x320-ce"]


def test_the_sweep_takes_every_run_option_and_the_core_never_imports_submitit():
    from typer.main import get_command

    from nnphases.experiments.config import flat_options

    params = {p.name for p in get_command(app).commands["sweep"].params}  # type: ignore[attr-defined]
    assert set(flat_options()) | {"seeds", "device"} <= params
    code = "import sys, nnphases.cli, nnphases.experiments.sweep, nnphases.experiments.train; print('submitit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


ERRORS = [
    (["--executor", "pbs"], "--executor must be local or slurm, got 'pbs'"),
    (["--parallel", "0"], "--parallel must be >= 1, got 0"),
    (["--grid", "depth"], "--grid must be NAME=VALUE,VALUE,..., got 'depth'"),
    (["--grid", "seeds=0,1"], "--grid seeds: the seeds are the jobs of every cell"),
    (["--grid", "nope=1,2"], "--grid nope: no such option"),
    (["--grid", "depth=1,x"], "--grid depth: values must be integers, got 'x'"),
    (["--grid", "depth=1,1"], "--grid depth: values must be distinct"),
    (["--grid", "depth=1", "--grid", "depth=2"], "--grid depth is given twice"),
    (["--depth", "2", "--grid", "depth=1,2"], "--grid depth: --depth is also given"),
    (["--preset", "source000-grid", "--grid", "loss=ce"], "the source000-grid preset sets loss in every cell"),
    (["--grid", "probe-layers=a,b"], "--grid probe-layers: a list option cannot be swept"),
    (["--grid", "loss=ce,l1"], "--loss must be one of 'ce', 'mse'; got 'l1'"),
    (["--slurm-partition", "gpu"], "--slurm-partition need --executor slurm"),
    (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time must be >= 1, got 0"),
    (["--executor", "slurm", "--slurm-option", "exclusive"], "--slurm-option must be KEY=VALUE, got 'exclusive'"),
]


@pytest.mark.parametrize("args, message", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_sweep_refuses_bad_options_in_one_line(tmp_path, args, message):
    r = CliRunner().invoke(app, ["sweep", "--out", str(tmp_path / "out"), *args])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("nnphases sweep: error: ") and message in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_sweep_into_a_folder_of_another_configuration_is_refused(tmp_path):
    sweep.write_run_json(train.resolve("demo", {**TINY, "seeds": (0,)}), tmp_path / "depth=1")
    r = CliRunner().invoke(app, ["sweep", *TINY_FLAGS, "--grid", "depth=1,2", "--seeds", "0", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "holds a run with another configuration" in r.output
    assert not (tmp_path / "depth=2").exists()  # checked before anything is written or started


# -- Slurm, with fake Slurm tools ------------------------------------------------------------------------------------


FAKE = {
    "sbatch": 'cp "$1" "$FAKE_SLURM/sbatch-$(ls "$FAKE_SLURM" | grep -c "^sbatch-").sh"\n'
              'echo "Submitted batch job 4242"',
    "scontrol": 'echo "$@" >> "$FAKE_SLURM/scontrol.log"',
    # srun's own options dropped, the command run as the allocation's one task
    "srun": 'while [[ "$1" == --* ]]; do if [[ "$1" == --unbuffered ]]; then shift; else shift 2; fi; done\nexec "$@"',
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    bin_ = tmp_path / "fake-slurm"
    bin_.mkdir()
    for name, body in FAKE.items():
        (bin_ / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(bin_))
    return bin_


SBATCH = [
    (3, 2, 2, {"partition": "gpu", "time": 90, "gpus_per_node": 1},
     ["#SBATCH --array=0-5%2", "#SBATCH --partition=gpu", "#SBATCH --time=90", "#SBATCH --gpus-per-node=1",
      "#SBATCH --signal=USR2@90", "#SBATCH --job-name=nnphases", "#SBATCH --open-mode=append"]),
    (1, 2, None, {}, ["#SBATCH --array=0-1%2", "#SBATCH --time=240"]),
    (2, 1, 50, {"cpus_per_task": 4, "mem_gb": 16, "account": "lab", "qos": "high", "constraint": "a100",
                "setup": ("module load cuda", "source venv/bin/activate"), "extra": ("exclude=node3",),
                "job_name": "grid"},
     ["#SBATCH --array=0-1%2", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --account=lab",
      "#SBATCH --qos=high", "#SBATCH --constraint=a100", "#SBATCH --exclude=node3", "#SBATCH --job-name=grid",
      "module load cuda\nsource venv/bin/activate\n"]),
]


@pytest.mark.parametrize("n_cells, n_seeds, parallel, options, lines", SBATCH, ids=["6-jobs-2-at-a-time",
                                                                                    "defaults", "every-option"])
def test_a_slurm_sweep_is_one_job_array(fake_slurm, tmp_path, n_cells, n_seeds, parallel, options, lines):
    from submitit.core.utils import DelayedSubmission

    cfg = train.resolve("demo", {**TINY, "seeds": tuple(range(n_seeds))})
    jobs = sweep.jobs_for({f"c{i}": cfg for i in range(n_cells)}, tmp_path / "out")
    outcomes = sweep.submit(jobs, "slurm", parallel=parallel, slurm=sweep.SlurmOptions(**options))
    assert [o.result for o in outcomes] == ["submitted"] * len(jobs)
    assert [o.detail for o in outcomes] == [f"4242_{i}" for i in range(len(jobs))]
    script = (fake_slurm / "sbatch-0.sh").read_text()
    assert not (fake_slurm / "sbatch-1.sh").exists()  # one sbatch for the whole sweep
    for line in lines:
        assert line in script
    folder = tmp_path / "out" / ".submitit"
    assert f"#SBATCH --output={folder}/%A_%a/%A_%a_0_log.out" in script
    assert script.rstrip().endswith(f"-u -m submitit.core._submit {folder}/%j")
    assert "srun --unbuffered --output" in script
    for i, job in enumerate(jobs):  # array task i runs job i, as itself
        pickled = DelayedSubmission.load(folder / f"4242_{i}" / f"4242_{i}_submitted.pkl").function
        assert pickled == dataclasses.replace(job, threads=options.get("cpus_per_task"))
    assert {s.state for s in sweep.status(tmp_path / "out")} == {"pending"}  # queued cells are known


def test_a_preempted_slurm_task_is_requeued_as_itself_and_resumes(fake_slurm, tmp_path):
    (job,) = sweep.jobs_for({"c": train.resolve("demo", LONG)}, tmp_path / "out")
    (outcome,) = sweep.submit([job], "slurm", slurm=sweep.SlurmOptions(time=90))
    assert outcome.detail == "4242"  # a single job is no array
    script = fake_slurm / "sbatch-0.sh"
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
           "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "task.log", "wb")
    task = subprocess.Popen(["bash", str(script)], env=env, stdout=log, stderr=log)
    run = RunDir(job.run_dir)
    _wait(lambda: len(run.completed_steps()) >= 3 or task.poll() is not None, "the task's third checkpoint")
    os.kill(json.loads(job.job_file.read_text())["pid"], signal.SIGUSR2)  # what Slurm sends before the time limit
    assert task.wait(timeout=300) != 0
    assert (fake_slurm / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert not run.done and not job.job_file.exists() and not job.error_file.exists()
    assert [s.state for s in sweep.status(tmp_path / "out")] == ["interrupted"]
    kept = _counts_mtimes(run)

    requeued = subprocess.run(["bash", str(script)], env=env, stdout=log, stderr=log, timeout=600)
    log.close()
    assert requeued.returncode == 0, (tmp_path / "task.log").read_text()[-3000:]
    assert run.done and [s.state for s in sweep.status(tmp_path / "out")] == ["done"]
    resumed = _counts_mtimes(run)
    assert {s: resumed[s] for s in kept} == kept
    assert len(resumed) > len(kept)


def test_slurm_needs_its_tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    (job,) = sweep.jobs_for({"c": train.resolve("demo", {**TINY, "seeds": (0,)})}, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="sbatch"):
        sweep.submit([job], "slurm")
    assert not (tmp_path / "out").exists()


def test_status_sees_a_run_written_without_a_job_file(tmp_path):
    """A run written by nnphases run or a Recorder holds its folder's lock: status says running, not interrupted."""
    from nnphases.store import RunDir

    sweep.write_run_json(train.resolve("demo", {**TINY, "seeds": (0,)}), tmp_path)
    run = RunDir(tmp_path / "seed-0")
    with run.lock():
        (row,) = sweep.status(tmp_path)
        assert row.state == "running" and f"written by pid {os.getpid()} on " in row.detail
    (row,) = sweep.status(tmp_path)
    assert row.state == "pending"


def test_status_of_a_recorders_folder(tmp_path):
    import torch
    from torch import nn

    from nnphases import Recorder, Schedule

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(40, 4), torch.arange(40) % 2
    rec = Recorder(model, (x, y), Schedule((0, 1), 10), tmp_path / "mine", seed=3)
    rec.maybe_measure(0)
    rec.flush()
    (row,) = sweep.status(tmp_path / "mine")
    assert (row.cell, row.seed, row.state) == ("", 3, "running")
    rec.maybe_measure(1)
    rec.close()
    (row,) = sweep.status(tmp_path / "mine")
    assert (row.seed, row.state) == (3, "done")
