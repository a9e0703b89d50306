"""Sweeps: one job per cell and seed, run through submitit on Slurm (a job array) or on this machine, and their status.

A sweep's jobs, their submission and their status stay in one file of about 650 lines: the jobs' claim files,
heartbeats and error files are written by the submission and read by the status, one format on both sides.

A sweep is a list of :class:`Job` objects, each one seed of one cell (a configuration with its own run folder,
the layout of ``nnphases run``: ``OUT/<cell>/run.json`` and ``OUT/<cell>/seed-<k>``). A job is idempotent: a
finished seed is skipped, a partial one resumes from its last complete checkpoint, so submitting a sweep again is
always safe and is how a failed or killed job is retried. :func:`submit` hands the jobs to submitit: on Slurm as
one job array capped at ``parallel`` tasks at a time, requeued as themselves when preempted or timed out (a job's
``checkpoint`` resubmits the same job, which resumes from its folder); locally as submitit local jobs, at most
``parallel`` at a time. :func:`status` reads the folders only: each seed is done, running, failed, interrupted
or pending. submitit is imported only by the functions that submit.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import queue
import socket
import threading
import time
import typing
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..kernels.cores import usable_cores
from ..options import check, check_int, one_line, option, parse_text
from ..store import RunDir, atomic_write_bytes, lock_holder
from .config import Config, flat_options, read_config

__all__ = [
    "Job",
    "SlurmOptions",
    "Outcome",
    "SeedStatus",
    "cells",
    "jobs_for",
    "jobs_for_grid",
    "prepare",
    "submit",
    "status",
    "format_status",
]

# A running job touches its job file this often; a job on another host whose file is older than STALE_S is taken
# for dead (on this host the pid is asked directly).
HEARTBEAT_S = 30.0
STALE_S = 180.0
# Local jobs run until they end: submitit's local default (2 minutes) would stop them.
_LOCAL_TIMEOUT_MIN = 60 * 24 * 365


@dataclass(frozen=True)
class SlurmOptions:
    """What the Slurm job array asks for; each field is one ``--slurm-*`` flag of ``nnphases sweep``."""

    partition: str | None = option(None, flag="slurm-partition", help="Slurm partition")
    time: int = option(
        240,
        min=1,
        max=10**6,
        flag="slurm-time",
        help="minutes per job before it is requeued (it resumes from its last checkpoint)",
    )
    gpus_per_node: int | None = option(None, min=0, max=1024, flag="slurm-gpus-per-node", help="GPUs per job")
    cpus_per_task: int | None = option(
        None, min=1, max=4096, flag="slurm-cpus-per-task", help="CPU cores per job (also its torch threads)"
    )
    mem_gb: float | None = option(None, above=0, max=10**6, flag="slurm-mem-gb", help="memory per job in GB")
    account: str | None = option(None, flag="slurm-account", help="Slurm account")
    qos: str | None = option(None, flag="slurm-qos", help="Slurm quality of service")
    constraint: str | None = option(None, flag="slurm-constraint", help="Slurm node constraint")
    setup: tuple[str, ...] = option(
        (), flag="slurm-setup", help="a shell line run before each job, e.g. 'source venv/bin/activate' (repeatable)"
    )
    extra: tuple[str, ...] = option(
        (), flag="slurm-option", help="any other sbatch option as KEY=VALUE, e.g. exclude=node3 (repeatable)"
    )
    job_name: str = option("nnphases", flag="slurm-job-name", help="the array's job name")
    max_requeues: int = option(
        3, min=0, max=10**4, flag="slurm-max-requeues", help="timeouts after which a job is no longer requeued"
    )

    def __post_init__(self) -> None:
        check(self)
        for item in self.extra:
            key, sep, _ = item.partition("=")
            if not sep or not key.strip().lstrip("-"):
                raise ValueError(f"extra (--slurm-option) must be KEY=VALUE, got {item!r}")

    def sbatch_parameters(self) -> dict[str, Any]:
        """These options as parameters of submitit's SlurmExecutor (unset ones left to the cluster's defaults)."""
        params: dict[str, Any] = {"job_name": self.job_name, "time": self.time}
        for name in ("partition", "gpus_per_node", "cpus_per_task", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.mem_gb is not None:
            params["mem"] = (
                f"{int(self.mem_gb)}GB" if self.mem_gb == int(self.mem_gb) else f"{int(self.mem_gb * 1024)}MB"
            )
        if self.setup:
            params["setup"] = list(self.setup)
        if self.extra:
            params["additional_parameters"] = {
                k.strip().lstrip("-"): v for k, _, v in (item.partition("=") for item in self.extra)
            }
        return params


# -- jobs ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One seed of one cell: trains ``seed-<seed>`` of the run folder ``out`` with the cell's configuration.

    ``config`` is the cell's whole configuration (:meth:`Config.to_dict`, all its seeds), written to
    ``out/run.json`` as ``nnphases run`` would, so the cell's folder is an ordinary run folder (``nnphases plot``,
    ``findings`` and ``run --resume`` read it). Calling the job trains that one seed: a finished seed is skipped and
    a partial one resumes. While it runs, ``out/seed-<seed>.job`` names its process and host (touched every
    :data:`HEARTBEAT_S`), so :func:`status` sees it and a second job for the same seed stands aside; an error is
    written to ``out/seed-<seed>.error`` (one line) and removed when the seed finishes. ``threads`` sets torch's
    CPU threads. The job is what submitit runs, and :meth:`checkpoint` (submitit's requeue hook) resubmits it as
    it is, since it resumes from its folder.
    """

    cell: str
    seed: int
    config: Mapping[str, Any]
    out: Path
    threads: int | None = None

    @property
    def run_dir(self) -> Path:
        return self.out / f"seed-{self.seed}"

    @property
    def job_file(self) -> Path:
        return self.out / f"seed-{self.seed}.job"

    @property
    def error_file(self) -> Path:
        return self.out / f"seed-{self.seed}.error"

    def __call__(self) -> str:
        from . import train

        if RunDir(self.run_dir).done:
            self.error_file.unlink(missing_ok=True)
            return "already done"
        self.out.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        holder = _claim(
            self.job_file,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "job": _job_id(),
                "token": token,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        if holder is not None:
            return f"running elsewhere ({holder})"
        beat = _Heartbeat(self.job_file)
        try:
            cfg = Config.from_dict(self.config)
            write_run_json(cfg, self.out)
            if self.threads:
                import torch

                torch.set_num_threads(self.threads)
            train.train_seed(cfg, self.seed, self.run_dir)
        except Exception as e:
            atomic_write_bytes(self.error_file, (one_line(e) + _log_hint() + "\n").encode())
            raise
        finally:  # a kill leaves the file behind, with a pid that is gone: status says interrupted
            beat.stop()
            _release(self.job_file, token)
        self.error_file.unlink(missing_ok=True)
        return "trained"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption or timeout: requeue this same job (it resumes from its run folder)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def jobs_for(configs: Mapping[str, Config], out: str | os.PathLike[str], *, threads: int | None = None) -> list[Job]:
    """One job per cell and seed: cell ``name`` runs in ``out/name`` (the empty name: in ``out`` itself)."""
    if not configs:
        raise ValueError("configs must name at least one cell, got none")
    jobs = []
    for name, cfg in configs.items():
        if not isinstance(cfg, Config):
            raise TypeError(f"configs[{name!r}] must be a Config, got {type(cfg).__name__}")
        if name and (name.startswith(".") or "/" in name or os.sep in name):
            raise ValueError(f"cell names must be plain folder names, got {name!r}")
        folder = Path(out) / name if name else Path(out)
        d = cfg.to_dict()
        jobs += [Job(name, s, d, folder, threads) for s in cfg.seeds]
    return jobs


def jobs_for_grid(overrides: Mapping[str, Any], out: str | os.PathLike[str]) -> list[Job]:
    """The jobs of source 000's grid (18 cells x the seeds), each cell in ``out/<depth>x<width>-<loss>``."""
    from . import train

    return jobs_for(train.grid_configs(dict(overrides)), out)


def cells(preset: str, flat: Mapping[str, Any], grid: Sequence[str] = ()) -> dict[str, Config]:
    """The sweep's configurations by cell name: the preset's (``source000-grid``: its 18 cells) with the flat
    options, times every combination of the ``grid`` axes (``"lr=0.001,0.01"``: one cell per value, named
    ``lr=0.001``; several axes are joined with ``_``). A preset without axes is one cell, named ``""``."""
    from . import train

    axes = _axes(grid, flat, preset)
    out: dict[str, Config] = {}
    for combo in itertools.product(*(values for _, _, values in axes)):
        over = dict(flat)
        parts = []
        for (key, flag, _), (text, value) in zip(axes, combo, strict=True):
            over[key] = value
            parts.append(f"{flag}={text}")
        base = train.grid_configs(over) if preset == "source000-grid" else {"": train.resolve(preset, over)}
        for name, cfg in base.items():
            out["_".join(p for p in [name, *parts] if p)] = cfg
    return out


def _axes(grid: Sequence[str], flat: Mapping[str, Any], preset: str) -> list[tuple[str, str, list[tuple[str, Any]]]]:
    """``NAME=V1,V2`` items as (option, flag, [(text, value)]), each value of the option's type."""
    leaves = flat_options()
    axes: list[tuple[str, str, list[tuple[str, Any]]]] = []
    for item in grid:
        name, sep, values = item.partition("=")
        key = name.strip().lstrip("-").replace("-", "_")
        flag = key.replace("_", "-")
        if not sep or not key or not values.strip():
            raise ValueError(f"--grid must be NAME=VALUE,VALUE,..., got {item!r}")
        if key == "seeds":
            raise ValueError("--grid seeds: the seeds are the jobs of every cell; give them with --seeds")
        if key not in leaves and key != "device":
            raise ValueError(f"--grid {flag}: no such option")
        if key in flat:
            raise ValueError(f"--grid {flag}: --{flag} is also given; give one of them")
        if preset == "source000-grid" and key in ("depth", "width", "loss"):
            raise ValueError(f"--grid {flag}: the source000-grid preset sets {flag} in every cell")
        if any(a[0] == key for a in axes):
            raise ValueError(f"--grid {flag} is given twice; list all its values once")
        texts = [t.strip() for t in values.split(",")]
        if any(not t or t.startswith(".") or "/" in t for t in texts) or len(set(texts)) != len(texts):
            raise ValueError(f"--grid {flag}: values must be distinct, non-empty and without '/', got {values!r}")
        tp = str if key == "device" else leaves[key].type
        if typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in typing.get_args(tp)):
            raise ValueError(f"--grid {flag}: a list option cannot be swept")
        # Choices and strings stay text: the configuration checks them, naming the option as its flag.
        axes.append((key, flag, [(t, parse_text(t, tp, f"--grid {flag}: values")) for t in texts]))
    return axes


# -- submission ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of one job of :func:`submit`: ``skipped`` (done already, or running elsewhere), ``trained``,
    ``failed`` (``detail``: the error), or ``submitted`` to Slurm (``detail``: the Slurm job id)."""

    job: Job
    result: Literal["skipped", "trained", "failed", "submitted"]
    detail: str


def write_run_json(cfg: Config, out: Path) -> None:
    """``out/run.json`` as ``nnphases run`` writes it; an existing one must hold the same configuration."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a folder")
    path = out / "run.json"
    if path.exists():
        if read_config(path) != cfg:
            raise ValueError(f"{out} holds a run with another configuration; sweep into another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, cfg.to_json())  # jobs of one cell may race here: each writes the same whole file


def prepare(jobs: Sequence[Job]) -> None:
    """Checks the jobs and writes each cell's ``run.json`` (before anything is submitted, so a folder that holds
    another configuration stops the sweep at once, and :func:`status` sees the cells of queued jobs)."""
    if not jobs:
        raise ValueError("jobs must hold at least one job, got none")
    by_folder: dict[Path, Mapping[str, Any]] = {}
    seen: set[tuple[Path, int]] = set()
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"jobs must be Job objects, got {type(job).__name__}")
        if by_folder.setdefault(job.out, job.config) != job.config:
            raise ValueError(f"jobs for {job.out} carry different configurations; one configuration per folder")
        if (job.out, job.seed) in seen:
            raise ValueError(f"two jobs train seed {job.seed} in {job.out}")
        seen.add((job.out, job.seed))
    for folder, d in by_folder.items():
        write_run_json(Config.from_dict(d), folder)


def submit(
    jobs: Sequence[Job],
    executor: Literal["local", "slurm"] = "local",
    *,
    folder: str | os.PathLike[str] | None = None,
    parallel: int | None = None,
    slurm: SlurmOptions | None = None,
) -> list[Outcome]:
    """Runs or submits the jobs that are neither done nor running, and says what became of each.

    ``local``: submitit local jobs (one process each, logs in ``folder``), at most ``parallel`` (default 1) at a
    time, each with ``usable_cores() // parallel`` torch threads (unless OMP_NUM_THREADS is set) and, on a GPU
    machine, the GPUs in turn; returns when all have ended. ``slurm``: one submitit job array with ``slurm``'s
    options, at most ``parallel`` tasks running at a time (default: all); returns once it is queued (follow it
    with :func:`status`). ``folder`` holds submitit's pickles and logs (default ``<out>/.submitit``): local jobs
    in ``<time>/<cell>-seed-<k>/``, Slurm jobs in ``<array id>_<task>/``.
    """
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be local or slurm, got {executor!r}")
    if parallel is not None:
        parallel = check_int(parallel, "parallel", 1)
    if slurm is not None and not isinstance(slurm, SlurmOptions):
        raise TypeError(f"slurm must be SlurmOptions, got {type(slurm).__name__}")
    if slurm is not None and executor != "slurm" and slurm != SlurmOptions():
        raise ValueError("slurm options are for executor='slurm'")
    if executor == "slurm":
        import shutil

        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise FileNotFoundError(
                f"executor 'slurm': {' and '.join(missing)} not found on PATH; submit from a "
                "machine of the Slurm cluster"
            )
    prepare(jobs)
    roots = {str((j.out.parent if j.cell else j.out).absolute()) for j in jobs}  # the sweep's folder
    base = Path(folder) if folder is not None else Path(os.path.commonpath(sorted(roots))) / ".submitit"
    outcomes: dict[int, Outcome] = {}
    todo: list[tuple[int, Job]] = []
    for i, job in enumerate(jobs):
        state = _seed_status(job.out, job.cell, job.seed)
        if state.state in ("done", "running"):
            outcomes[i] = Outcome(job, "skipped", f"{state.state}: {state.detail}")
        else:
            todo.append((i, job))
    if todo and executor == "local":
        outcomes.update(_run_local(todo, base / time.strftime("%Y%m%d-%H%M%S"), parallel or 1))
    elif todo:
        outcomes.update(_submit_slurm(todo, base / "%j", parallel or len(todo), slurm or SlurmOptions()))
    return [outcomes[i] for i in range(len(jobs))]


def _run_local(todo: list[tuple[int, Job]], folder: Path, parallel: int) -> dict[int, Outcome]:
    """submitit local jobs, at most ``parallel`` alive: submitit's LocalExecutor starts every job it is given at
    once, so a pool of ``parallel`` threads each submits one job and waits for it before taking the next."""
    from concurrent.futures import ThreadPoolExecutor

    import submitit

    threads = None if os.environ.get("OMP_NUM_THREADS") else max(1, usable_cores() // parallel)
    gpus = _visible_gpus()
    slots: queue.Queue[int] = queue.Queue()
    for k in range(parallel):
        slots.put(k)
    stop = threading.Event()
    live: dict[int, Any] = {}
    guard = threading.Lock()

    def one(item: tuple[int, Job]) -> tuple[int, Outcome]:
        i, job = item
        job = dataclasses.replace(job, threads=job.threads or threads)
        if stop.is_set():
            return i, Outcome(job, "failed", "not started: the sweep was interrupted")
        slot = slots.get()
        try:
            # A folder per job: submitit names local jobs by pid, which a later job of the sweep may reuse.
            ex = submitit.LocalExecutor(
                folder=folder / (f"{job.cell}-seed-{job.seed}" if job.cell else f"seed-{job.seed}")
            )
            params: dict[str, Any] = {"timeout_min": _LOCAL_TIMEOUT_MIN}
            if gpus:  # one GPU per running job, in turn
                params.update(gpus_per_node=1, visible_gpus=(gpus[slot % len(gpus)],))
            ex.update_parameters(**params)
            with guard:
                if stop.is_set():
                    return i, Outcome(job, "failed", "not started: the sweep was interrupted")
                sj = ex.submit(job)
                live[i] = sj
            sj._results_timeout_s = 2  # local files: no shared file system to wait for
            try:
                result = sj.result()
            except Exception as e:
                return i, Outcome(job, "failed", _read_error(job) or one_line(e))
            finally:
                with guard:
                    live.pop(i, None)
            return i, Outcome(job, "trained" if result == "trained" else "skipped", f"{result} (job {sj.job_id})")
        finally:
            slots.put(slot)

    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="nnphases-sweep")
    try:
        return dict(pool.map(one, todo))
    except BaseException:  # Ctrl-C: start nothing more and stop the running jobs (they resume when resubmitted)
        stop.set()
        with guard:
            for sj in live.values():
                sj.cancel(check=False)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit_slurm(todo: list[tuple[int, Job]], folder: Path, parallel: int, opts: SlurmOptions) -> dict[int, Outcome]:
    import submitit
    from submitit.core.utils import FailedJobError

    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=opts.max_requeues)
    ex.update_parameters(array_parallelism=parallel, **opts.sbatch_parameters())
    jobs = [dataclasses.replace(j, threads=j.threads or opts.cpus_per_task) for _, j in todo]
    try:
        with ex.batch():
            submitted = [ex.submit(j) for j in jobs]
    except FailedJobError as e:
        raise ValueError(f"sbatch refused the sweep: {one_line(e)}") from None
    return {i: Outcome(j, "submitted", sj.job_id) for (i, _), j, sj in zip(todo, jobs, submitted, strict=True)}


def _visible_gpus() -> list[int]:
    """The GPU indices this process may use (CUDA_VISIBLE_DEVICES, else every device), for local jobs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if not all(v.isdigit() for v in ids):  # submitit hands local jobs their GPUs by index
            raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r}: local sweeps need GPU indices (e.g. 0,1), not names")
        return [int(v) for v in ids]
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # no usable CUDA: CPU jobs
        return []


# -- status --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedStatus:
    """One seed of one cell: ``done`` (its DONE marker), ``running`` (a live job holds it), ``failed`` (the job's
    error), ``interrupted`` (checkpoints, but no job: killed, preempted or stopped; resubmit to resume) or
    ``pending`` (nothing yet)."""

    cell: str
    seed: int
    state: Literal["done", "running", "failed", "interrupted", "pending"]
    detail: str


def status(out: str | os.PathLike[str]) -> list[SeedStatus]:
    """The state of every seed of every cell under ``out`` (a sweep folder, or one run folder), from the folders
    alone: cells are the folders holding ``run.json`` (``out`` itself, or its subfolders), seeds those of each
    ``run.json``."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"out {str(out)!r} is not a folder")
    folders = [out] if (out / "run.json").is_file() else sorted(p.parent for p in out.glob("*/run.json"))
    if not folders and ((out / "checkpoints").is_dir() or (out / "config.json").is_file()):
        return [_recorder_status(out)]  # one Recorder's folder: no run.json, no seeds of its own
    if not folders:
        raise ValueError(f"out {str(out)!r} holds no run.json, in it or in its subfolders: not a sweep or a run")
    rows = []
    for folder in folders:
        cell = "" if folder == out else folder.name
        rows += [_seed_status(folder, cell, s) for s in read_config(folder / "run.json").seeds]
    return rows


def _recorder_status(path: Path) -> SeedStatus:
    """The state of a folder one Recorder writes (its seed from measures.json when it says)."""
    try:
        seed = int(json.loads((path / "measures.json").read_text()).get("seed", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        seed = 0
    return _seed_status(path.parent, "", seed, run_path=path)


def _seed_status(folder: Path, cell: str, seed: int, run_path: Path | None = None) -> SeedStatus:
    run = RunDir(run_path or folder / f"seed-{seed}")
    if run.done:
        try:
            body = json.loads((run.path / "DONE").read_text())
            detail = f"{body['checkpoints']} checkpoints, last at step {body['last_step']}"
        except (ValueError, KeyError, TypeError):
            detail = ""
        return SeedStatus(cell, seed, "done", detail)
    holder, age = _holder(folder / f"seed-{seed}.job")
    steps = run.completed_steps()
    total = _total_steps(run)
    progress = f"step {steps[-1]} of {total}" if steps else "no checkpoint yet"
    if holder is not None and _alive(holder, age):
        return SeedStatus(
            cell,
            seed,
            "running",
            f"{progress}; pid {holder.get('pid')} on {holder.get('host')}"
            + (f", job {holder['job']}" if holder.get("job") else "")
            + f", seen {age:.0f} s ago",
        )
    writer = lock_holder(run.path)  # a run written without a sweep's job file (nnphases run, a Recorder)
    if writer is not None and (writer.get("host") != socket.gethostname() or _pid_alive(writer.get("pid"))):
        return SeedStatus(
            cell, seed, "running", f"{progress}; written by pid {writer['pid']} on {writer.get('host')} (its lock)"
        )
    error = _read_error_file(folder / f"seed-{seed}.error")
    if error:
        return SeedStatus(cell, seed, "failed", error)
    if steps:
        gone = f"; its job (pid {holder.get('pid')} on {holder.get('host')}) is gone" if holder else ""
        return SeedStatus(
            cell, seed, "interrupted", f"{len(steps)} checkpoints, last at {progress}{gone}; resubmit to resume"
        )
    if holder is not None:
        return SeedStatus(
            cell,
            seed,
            "interrupted",
            f"its job (pid {holder.get('pid')} on {holder.get('host')}) "
            "ended before a checkpoint; resubmit to start again",
        )
    return SeedStatus(cell, seed, "pending", "")


def format_status(rows: Sequence[SeedStatus]) -> str:
    """A table, one line per seed, and a count per state."""
    names = [r.cell or "." for r in rows]
    width = max([len("cell"), *map(len, names)])
    lines = [f"{'cell':{width}s}  seed  {'state':11s}  detail"]
    lines += [
        f"{n:{width}s}  {r.seed:4d}  {r.state:11s}  {r.detail}".rstrip() for n, r in zip(names, rows, strict=True)
    ]
    counts = {s: sum(r.state == s for r in rows) for s in ("done", "running", "failed", "interrupted", "pending")}
    lines.append(f"{len(set(names))} cells, {len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)


def _total_steps(run: RunDir) -> str:
    try:
        return str(run.config["total_steps"])
    except (OSError, ValueError, KeyError):
        return "?"


# -- the job file: who runs a seed -----------------------------------------------------------------------------------


def _claim(path: Path, info: dict[str, Any]) -> str | None:
    """Take ``path`` for this process (None), or describe the live job that holds it. The file appears whole (a
    hard link of a written file, which fails if it exists), and a dead holder's file is moved aside by exactly one
    claimant (a rename), so two jobs never both take a seed."""
    tmp = path.with_name(f".{path.name}.{info['token']}")
    tmp.write_text(json.dumps(info) + "\n")
    try:
        for _ in range(5):
            try:
                os.link(tmp, path)
                return None
            except FileExistsError:
                pass
            holder, age = _holder(path)
            if holder is not None and _alive(holder, age, requeued_as=info.get("job")):
                return f"pid {holder.get('pid')} on {holder.get('host')}"
            aside = path.with_name(f".{path.name}.stale-{info['token']}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue  # another claimant moved it first
            aside.unlink(missing_ok=True)
        return "another job keeps taking it"
    finally:
        tmp.unlink(missing_ok=True)


def _release(path: Path, token: str) -> None:
    holder, _ = _holder(path)
    if holder is not None and holder.get("token") == token:
        path.unlink(missing_ok=True)


def _holder(path: Path) -> tuple[dict[str, Any] | None, float]:
    """The job file's content and its age in seconds (None when absent or unreadable)."""
    try:
        age = time.time() - path.stat().st_mtime
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, 0.0
    return (info, max(age, 0.0)) if isinstance(info, dict) else (None, 0.0)


def _alive(holder: Mapping[str, Any], age: float, requeued_as: str | None = None) -> bool:
    """Whether the job that wrote ``holder`` still runs: on this host its pid says; elsewhere its heartbeat. A
    scheduler runs one instance of a job id at a time, so a requeued job is never kept out by its former self."""
    if requeued_as and holder.get("job") == requeued_as:
        return False
    if holder.get("host") == socket.gethostname():
        return _pid_alive(holder.get("pid"))
    return age < STALE_S


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _job_id() -> str | None:
    """The scheduler's id of the job this process runs in (a Slurm array task, a submitit local job), if any."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID")


class _Heartbeat:
    """Touches the job file every :data:`HEARTBEAT_S` from a daemon thread, so other hosts can tell it is alive."""

    def __init__(self, path: Path) -> None:
        self.path, self._stop = path, threading.Event()
        self._thread = threading.Thread(target=self._run, name="nnphases-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop.set()


# -- errors --------------------------------------------------------------------------------------------------------


def _log_hint() -> str:
    """Where submitit keeps this job's log (the traceback), when it runs under submitit."""
    try:
        import submitit

        return f" (log: {submitit.JobEnvironment().paths.stderr})"
    except Exception:  # not a submitit job
        return ""


def _read_error_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_error(job: Job) -> str:
    return _read_error_file(job.error_file)
