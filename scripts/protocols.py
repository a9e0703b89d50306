#!/usr/bin/env python3
"""Both sources' protocols in one command, in parallel, inside a time budget, packing small results as it goes.

Every run is a plain ``nnphases run`` in a subprocess (one process per seed, the run directory format unchanged).
First each job is run for a few steps (calibration) and timed; from those timings the script picks the epochs that
fit the budget (never fewer than the protocol's minimum unless the budget cannot allow it, and then it says so), runs
everything in a pool of ``--jobs`` processes, draws each job's figures and checks its findings when its seeds are
done, and kills what is still running at the deadline. After every event it rewrites, under ``--pack-dir``, one
tar.gz per group of jobs with the small files only (the layer, stats and probes tables, figures, findings, logs;
never nodes.parquet, counts.npz, masks or state.pt) and ``summary.md``/``summary.json``, so a hard timeout still
leaves results. A second invocation over the same ``--out`` skips what is finished and continues what was cut.

    python scripts/protocols.py --pack-data data       # here: copy FashionMNIST's IDX files into data/fashion-mnist
    python scripts/protocols.py --out runs/protocols --budget-minutes 9   # on the GPU machine
    python scripts/protocols.py --smoke --out /tmp/protocols-smoke        # the same pipeline in about a minute, CPU

See scripts/README.md for the jobs, the layout of the output and the device command.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")
PACKED_DATA = REPO / "data" / "fashion-mnist"  # where --pack-data data puts FashionMNIST
IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
STATE_VERSION = 1
# Seconds assumed for one job's `nnphases findings` and `nnphases plot` when planning (full runs, smoke runs).
FINALIZE_S = {False: 45.0, True: 12.0}

# What goes into the archives: the small tables of complete checkpoints, run configs, markers, figures, findings, logs.
TABLES = {"layers.parquet", "stats.parquet", "probes.parquet"}
META = {"run.json", "config.json", "DONE", "findings.txt"}
FIGURES = {".png", ".svg"}
MAX_TABLE = 4 << 20  # bytes; larger files are left out and listed in the summary
MAX_FIGURE = 4 << 20
MAX_LOG = 256 << 10  # a longer log goes in as its tail
MAX_ARCHIVE = 15 << 20  # the device returns files of at most 16 MiB; SVGs are dropped first above this
STEP_DIR = re.compile(r"step-\d+")

# Last ReLU sites (paper-mode probes there); checked against nnphases.recording.capture.find_sites at start-up.
LAST_SITES = {"fc_bn": "relu3", "vgg11": "features.19", "resnet10": "layer4.0.relu_1"}
RUNS = 16  # processes of the full protocols: 3 x 3 seeds (source 000), 5 (FC-BN), 1 + 1 (VGG-11, ResNet-10)
JOB_NAMES = ("source000-9x320-ce", "source000-9x320-mse", "source000-2x320-mse", "source002-fcbn", "source002-vgg11",
             "source002-resnet10")


class UsageError(Exception):
    """Bad input: reported as one line naming the argument and the value, exit status 2."""


# -- jobs --------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    name: str
    group: str  # one archive per group
    preset: str
    args: list[str]  # nnphases run flags besides --preset --out --epochs --seeds --device --schedule --per-decade
    seeds: list[int]
    target: float  # the protocol's epochs
    minimum: float  # never fewer unless the budget cannot allow it
    calib_epochs: float
    schedule: str = "log"  # "log" (per_decade per decade from first_epoch) or "pow2"
    per_decade: int = 10
    first_epoch: float = 1e-3
    protocol: str = ""  # one line for the summary


def job_list(opts: argparse.Namespace, flags: set[str], sites: dict[str, str]) -> list[Job]:
    """The two sources' protocols; ``--smoke`` keeps the list's shape with tiny runs, one seed each."""
    fashion = ["--dataset", "fashion-mnist", "--data-root", str(opts.data_root)]
    s000_data = ["--dataset", "mnist", "--data-root", str(opts.mnist_root)] if opts.mnist_root else fashion
    s000_name = "MNIST" if opts.mnist_root else "FashionMNIST"
    first = ["--first-epoch", "0.001"] if "--first-epoch" in flags else []
    jobs = []
    for depth, width, loss in ((9, 320, "ce"), (9, 320, "mse"), (2, 320, "mse")):
        jobs.append(Job(
            f"source000-{depth}x{width}-{loss}", "source000", "source000",
            s000_data + ["--depth", str(depth), "--width", str(width), "--loss", loss] + first,
            [0, 1, 2], 200, 200, 2,
            protocol=f"{depth}x{width} MLP, {loss}, Adam 1e-3, batch 60, {s000_name}, 200 epochs, seeds 0,1,2, "
                     f"10 measurements per decade from 1e-3 epoch"))
    sgd = ["--lr", "0.002", "--batch", "128", "--probes"]
    full_eval = ["--holdout", "12000", "--train-eval", "12000"]
    jobs.append(Job("source002-fcbn", "source002-fcbn", "source002",
                    fashion + sgd + full_eval + ["--probe-mode", "both", "--paper-layers", sites["fc_bn"]],
                    [0, 1, 2, 3, 4], 256, 256, 1, schedule="pow2",
                    protocol="FC-BN 3x256, FashionMNIST 32x32, SGD lr 0.002, batch 128, 256 epochs, seeds 0-4, "
                             f"steps 0,1,2,4,...; fast probes at every ReLU, paper probes on {sites['fc_bn']}"))
    conv_eval = ["--eval-batch", "1000"] if "--eval-batch" in flags else []
    for model, preset in (("vgg11", "source002-vgg11"), ("resnet10", "source002-resnet10")):
        jobs.append(Job(preset, "source002-conv", preset,
                        fashion + sgd + full_eval + conv_eval
                        + ["--probe-mode", "both", "--paper-layers", sites[model]],
                        [0], 256, 32, 0.5, schedule="pow2",
                        protocol=f"{model}, FashionMNIST 32x32, SGD lr 0.002, batch 128, as many of the source's 256 "
                                 f"epochs as the budget allows (at least 32), seed 0, steps 0,1,2,4,...; fast probes "
                                 f"at every ReLU, paper probes on {sites[model]}"))
    if not opts.smoke:
        return jobs
    # Smoke: tiny runs, one seed, small evaluation sets (paper probes fitted on 100 samples); the conv nets for one
    # step of batch 16 with fast probes on their last site only (a paper probe of a conv layer takes tens of seconds
    # on a CPU).
    small = {"--holdout": "500", "--train-eval": "100"}
    tiny_conv = {"--holdout": "100", "--train-eval": "100", "--batch": "16"}
    for job in jobs:
        job.seeds = job.seeds[:1]
        conv = job.group == "source002-conv"
        job.args = _replace(job.args, tiny_conv if conv else small)
        if conv:
            site = job.args[job.args.index("--paper-layers") + 1]
            job.args = _drop(job.args, {"--probe-mode": 1, "--paper-layers": 1, "--eval-batch": 1}) + \
                ["--probe-mode", "fast", "--probe-layers", site, *(["--eval-batch", "100"] if "--eval-batch" in flags
                                                                    else [])]
        job.target = job.minimum = {"source000": 0.005, "source002-fcbn": 0.005}.get(job.group, 0.0003)
        job.calib_epochs = job.target / 2
        job.protocol = "smoke: " + job.protocol
    return jobs


def _replace(args: list[str], values: dict[str, str]) -> list[str]:
    out = list(args)
    for flag, value in values.items():
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


def _drop(args: list[str], flags: dict[str, int]) -> list[str]:
    out, i = [], 0
    while i < len(args):
        if args[i] in flags:
            i += 1 + flags[args[i]]
            continue
        out.append(args[i])
        i += 1
    return out


def last_sites() -> dict[str, str]:
    """The last ReLU site of each source-002 model, found as nnphases finds them (the models as train.py builds them:
    one input channel, 32x32, 10 classes); the known names when that fails."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the package need not be installed (the GPU machine runs it from here)
    try:
        import torch
        from nnphases.recording import capture
        from nnphases.experiments import models

        x = torch.zeros(2, 1, 32, 32)
        found = {"fc_bn": capture.find_sites(models.fc_bn(1024, 3, 256, 10), x),
                 "vgg11": capture.find_sites(models.vgg11(10, 1), x),
                 "resnet10": capture.find_sites(models.resnet10(10, 1), x)}
        return {k: getattr(v[-1], "name", str(v[-1])) for k, v in found.items()}
    except Exception as e:  # noqa: BLE001 - an API change must not cost a device run; the names are known
        log(f"finding the last ReLU sites failed ({type(e).__name__}: {e}); using {LAST_SITES}")
        return dict(LAST_SITES)


# -- nnphases through its console script ---------------------------------------------------------------------------


def nnphases() -> list[str]:
    """``nnphases`` as its console script would run it (pyproject's entry point), with this interpreter: works
    where the package is installed and where it is not (PYTHONPATH has the repository)."""
    target = "nnphases.cli:app"
    try:
        import tomllib

        target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["nnphases"]
    except (OSError, KeyError, ValueError, ImportError):
        pass
    mod, attr = target.split(":")
    return [sys.executable, "-c", f"import sys; sys.argv[0] = 'nnphases'; from {mod} import {attr} as main; "
                                  f"sys.exit(main())"]


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # Errors leave a plain traceback in the run's log (typer's own would print every local variable).
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", NNPHASES_TRACEBACK="1", _TYPER_STANDARD_TRACEBACK="1",
               COLUMNS="200", TERM="dumb",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    return env


def run_flags(env: dict[str, str], meanwhile: Callable[[], Any]) -> tuple[set[str], Any]:
    """The long options ``nnphases run --help`` lists (the CLI is being redesigned; optional flags are used only
    when present), and what ``meanwhile()`` returned while the help was being printed."""
    proc = subprocess.Popen(nnphases() + ["run", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    result = meanwhile()
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit("protocols: error: nnphases run --help did not answer in 120 s")
    if proc.returncode != 0:
        raise SystemExit(f"protocols: error: nnphases run --help failed: {(err or out).strip()[-500:]}")
    return set(re.findall(r"--[a-z][a-z0-9-]*", out)), result


REQUIRED_FLAGS = ("--preset", "--out", "--epochs", "--seeds", "--device", "--per-decade", "--probe-mode",
                  "--paper-layers", "--holdout", "--train-eval", "--batch", "--lr", "--loss", "--depth", "--width",
                  "--dataset", "--data-root", "--schedule", "--no-figures", "--probes")


# -- timing: calibration fits and predictions ---------------------------------------------------------------------


def schedule_steps(job: Job, last: int, spe: float, *, calibration: bool = False) -> int:
    """How many measurements a run of ``last`` steps makes (the rules of nnphases.recording.schedule)."""
    if job.schedule == "pow2" and not calibration:
        return len({0, last} | {1 << k for k in range(max(0, last).bit_length())})
    per_decade = 1 if calibration else job.per_decade
    start, steps, k = job.first_epoch * spe, {0, last}, 0
    while True:
        s = max(1, math.floor(start * 10.0 ** (k / per_decade) + 0.5))
        if s >= last:
            return len(steps)
        steps.add(s)
        k += 1


@dataclass
class Fit:
    """Seconds: start-up to the step-0 checkpoint, per measurement, per training step, after the last checkpoint."""

    startup: float
    measure: float
    step: float
    tail: float
    steps_per_epoch: float

    def predict(self, job: Job, epochs: float) -> float:
        last = max(1, round(epochs * self.steps_per_epoch))
        n = schedule_steps(job, last, self.steps_per_epoch)
        return self.startup + (n - 1) * self.measure + last * self.step + self.tail


def fit_run(run: Path, started: float, ended: float | None, epochs: float) -> Fit:
    """Times of a calibration run from its checkpoints' write times: interval = measure + steps x step, fitted by
    least squares (clamped to be non-negative; conservative fallbacks when the points do not allow a fit)."""
    points = []
    for d in (run / "checkpoints").glob("step-*"):
        if STEP_DIR.fullmatch(d.name) and (d / "layers.parquet").is_file():
            points.append((int(d.name[5:]), (d / "layers.parquet").stat().st_mtime))
    points.sort()
    if len(points) < 2:
        raise ValueError(f"{len(points)} complete checkpoint{'s' if len(points) != 1 else ''}, too few to time")
    cfg = _read_json(run / "config.json")
    last = points[-1][0]
    spe = float(cfg.get("steps_per_epoch") or max(1, last) / epochs)
    startup = max(0.0, points[0][1] - started)
    tail = max(0.0, ended - points[-1][1]) if ended is not None else 0.0
    ds = [b[0] - a[0] for a, b in zip(points, points[1:])]
    dt = [max(0.0, b[1] - a[1]) for a, b in zip(points, points[1:])]
    n = len(ds)
    mean_s, mean_t = sum(ds) / n, sum(dt) / n
    var = sum((s - mean_s) ** 2 for s in ds)
    b = sum((s - mean_s) * (t - mean_t) for s, t in zip(ds, dt)) / var if var > 0 else -1.0
    a = mean_t - b * mean_s
    if b <= 0:  # no usable slope: charge every interval's time both per step and per measurement
        a, b = mean_t, sum(dt) / max(1, sum(ds))
    elif a < 0:
        a, b = 0.0, sum(dt) / max(1, sum(ds))
    return Fit(startup, a, b, tail, spe)


def max_fit(fits: list[Fit]) -> Fit:
    return Fit(*(max(getattr(f, k.name) for f in fits) for k in dataclasses.fields(Fit)))


def fit_epochs(job: Job, fit: Fit, seconds: float) -> float:
    """The most epochs (at most the protocol's) whose predicted time is within ``seconds``; 0 when none fits."""
    if fit.predict(job, job.target) <= seconds:
        return job.target
    lo, hi = 0.0, job.target
    if fit.predict(job, 1 / fit.steps_per_epoch) > seconds:
        return 0.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fit.predict(job, mid) <= seconds else (lo, mid)
    return _round_down(lo)


def _round_down(e: float) -> float:
    if e >= 2:
        return float(math.floor(e))
    digits = 2 - math.floor(math.log10(e)) if e > 0 else 2
    return math.floor(e * 10 ** digits) / 10 ** digits


def makespan(durations: list[float], slots: int) -> float:
    """Longest-first list scheduling of the durations over ``slots`` processes."""
    lanes = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        i = lanes.index(min(lanes))
        lanes[i] += d
    return max(lanes)


def plan(jobs: list[Job], fits: dict[str, Fit], seconds: float, slots: int,
         finalize: float) -> tuple[dict[str, float], float]:
    """Epochs per job: the largest common time allowance per run whose longest-first schedule over ``slots``
    (each job's figures and findings, ``finalize`` seconds, after one of its runs) fits in ``seconds``; each job
    runs the most epochs that fit its allowance, up to its protocol's. Returns the epochs and the allowance."""
    def epochs_at(allowance: float) -> dict[str, float]:
        return {j.name: fit_epochs(j, fits[j.name], allowance) for j in jobs}

    def span(choice: dict[str, float]) -> float:
        return makespan([fits[j.name].predict(j, choice[j.name]) + (finalize if i == 0 else 0.0)
                         for j in jobs if choice[j.name] > 0 for i in range(len(j.seeds))], slots)

    lo, hi = 0.0, seconds
    if span(epochs_at(hi)) <= seconds:
        return epochs_at(hi), hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if span(epochs_at(mid)) <= seconds else (lo, mid)
    return epochs_at(lo), lo


# -- the process pool --------------------------------------------------------------------------------------------


@dataclass
class Task:
    key: str  # "calib/<job>/s<seed>", "train/<job>/s<seed>", "finalize/<job>"
    kind: str
    job: str
    cmds: list[tuple[list[str], Path | None]]  # argv and where its stdout goes (None: the log)
    log: Path
    on_done: Callable[["Task"], None]
    seed: int | None = None
    priority: int = 0
    proc: subprocess.Popen | None = None
    index: int = 0
    started: float = 0.0
    ended: float = 0.0
    rc: int | None = None  # the first non-zero exit status of its commands, else 0
    rcs: list[int] = field(default_factory=list)
    killed: str = ""  # why it was stopped: "at the deadline", "at the budget's end", "by SIGTERM"
    cpu: float = 0.0  # user + system seconds of its processes
    _files: list[Any] = field(default_factory=list)


class Pool:
    """At most ``slots`` subprocesses at once, each in its own process group (killed as a whole)."""

    def __init__(self, slots: int, env: dict[str, str]) -> None:
        self.slots, self.env = slots, env
        self.queue: list[Task] = []
        self.running: list[Task] = []

    def submit(self, task: Task) -> None:
        self.queue.append(task)
        self.queue.sort(key=lambda t: -t.priority)

    def busy(self) -> bool:
        return bool(self.queue or self.running)

    def _start(self, task: Task) -> None:
        argv, stdout = task.cmds[task.index]
        task.log.parent.mkdir(parents=True, exist_ok=True)
        logf = open(task.log, "a")
        logf.write(f"$ {' '.join(argv[3:] if argv[1:2] == ['-c'] else argv)}\n")
        logf.flush()
        outf = open(stdout, "w") if stdout else logf
        task._files = [logf] + ([outf] if stdout else [])
        task.proc = subprocess.Popen(argv, stdout=outf, stderr=logf, stdin=subprocess.DEVNULL, env=self.env,
                                     cwd=REPO, process_group=0)

    def poll(self) -> None:
        for task in list(self.running):
            rc = _reap(task)
            if rc is None:
                continue
            for f in task._files:
                f.close()
            task.rcs.append(rc)
            if not task.killed and task.index + 1 < len(task.cmds):  # the next command runs whatever this one gave
                task.index += 1
                self._start(task)
                continue
            task.rc, task.ended = next((r for r in task.rcs if r != 0), 0), time.time()
            self.running.remove(task)
            task.on_done(task)
        while self.queue and len(self.running) < self.slots:
            task = self.queue.pop(0)
            task.started = time.time()
            self.running.append(task)
            self._start(task)

    def kill(self, why: str, kinds: set[str] | None = None, grace: float = 3.0) -> None:
        """Stops the running tasks of these kinds (all when None) and drops the queued ones."""
        self.queue = [t for t in self.queue if kinds is not None and t.kind not in kinds]
        victims = [t for t in self.running if kinds is None or t.kind in kinds]
        for t in victims:
            t.killed = why
            _signal(t, signal.SIGTERM)
        end = time.time() + grace
        while time.time() < end and any(_reap(t) is None for t in victims):
            time.sleep(0.1)
        for t in victims:
            if _reap(t) is None:
                _signal(t, signal.SIGKILL)
                while _reap(t) is None:
                    time.sleep(0.05)
        self.poll()


def _reap(task: Task) -> int | None:
    """The exit status of the task's current process (None while it runs), adding its CPU time to the task's."""
    proc = task.proc
    if proc.returncode is not None:
        return proc.returncode
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:
        return proc.poll()
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    task.cpu += usage.ru_utime + usage.ru_stime
    return proc.returncode


def _signal(task: Task, sig: int) -> None:
    try:
        os.killpg(task.proc.pid, sig)
    except ProcessLookupError:
        pass


# -- packing and summary -----------------------------------------------------------------------------------------


def small_files(root: Path, folder: Path) -> Iterator[tuple[Path, str]]:
    """(file, why it is left out or "") for everything under ``folder`` that the archives take."""
    if not folder.is_dir():
        return
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        parts = rel.parts
        if "checkpoints" in parts:
            i = parts.index("checkpoints")
            if len(parts) != i + 3 or not STEP_DIR.fullmatch(parts[i + 1]) or p.name not in TABLES:
                continue
            yield p, ("" if _size(p) <= MAX_TABLE else f"{_size(p)} bytes")
        elif p.name in META or p.suffix == ".log":
            yield p, ""
        elif p.suffix in FIGURES:
            yield p, ("" if _size(p) <= MAX_FIGURE else f"{_size(p)} bytes")


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def write_archive(path: Path, root: Path, folders: list[Path], leave_svg: bool = False) -> list[str]:
    """Writes ``path`` (tar.gz, atomically) with the small files under ``folders``; returns what was left out."""
    left = []
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for folder in folders:
            for p, why in small_files(root, folder):
                rel = str(p.relative_to(root))
                if why or (leave_svg and p.suffix == ".svg"):
                    left.append(f"{rel} ({why or 'SVG dropped to keep the archive under its size limit'})")
                    continue
                try:
                    if p.suffix == ".log" and _size(p) > MAX_LOG:
                        data = p.read_bytes()[-MAX_LOG:]
                        info = tarfile.TarInfo(rel)
                        info.size, info.mtime = len(data), int(p.stat().st_mtime)
                        tar.addfile(info, io.BytesIO(data))
                    else:
                        tar.add(p, arcname=rel, recursive=False)
                except FileNotFoundError:
                    continue
    if tmp.stat().st_size > MAX_ARCHIVE and not leave_svg:
        tmp.unlink()
        return write_archive(path, root, folders, leave_svg=True)
    os.replace(tmp, path)
    return left


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def _write_text(p: Path, text: str) -> None:
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def reached(run: Path) -> dict[str, Any]:
    """Last complete checkpoint of a run directory: step, epoch, checkpoints, done."""
    steps = sorted(int(d.name[5:]) for d in (run / "checkpoints").glob("step-*")
                   if STEP_DIR.fullmatch(d.name) and (d / "layers.parquet").is_file())
    out: dict[str, Any] = {"checkpoints": len(steps), "step": steps[-1] if steps else None, "epoch": None,
                           "done": (run / "DONE").is_file()}
    if steps:
        try:
            import pyarrow.parquet as pq

            col = pq.read_table(run / "checkpoints" / f"step-{steps[-1]:012d}" / "layers.parquet",
                                columns=["epoch"]).column("epoch").to_pylist()
            out["epoch"] = round(max(col), 6) if col else None
        except Exception:  # noqa: BLE001 - the summary must be written whatever one table holds
            spe = _read_json(run / "config.json").get("steps_per_epoch")
            out["epoch"] = round(steps[-1] / spe, 6) if spe else None
    return out


# -- the script --------------------------------------------------------------------------------------------------

LOG_FILE: Path | None = None


def log(msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if LOG_FILE is not None:
        with open(LOG_FILE, "a") as f:
            f.write(line + "\n")


class Protocols:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.out: Path = opts.out
        self.pack: Path = opts.pack_dir
        self.t0 = time.time()
        self.budget = opts.budget_minutes * 60
        self.end = self.t0 + self.budget
        # Training stops this long before the end, to leave time for the last figures, findings and archives.
        self.reserve = min(60.0 if not opts.smoke else 15.0, 0.25 * self.budget)
        self.state_path = self.out / "protocols-state.json"
        self.state: dict[str, Any] = _read_json(self.state_path)
        self.env = child_env(max(1, (os.cpu_count() or 1) // opts.jobs))
        self.pool = Pool(opts.jobs, self.env)
        self.jobs: list[Job] = []
        self.this_run: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:],
                                         "status": "running"}
        self.left_out: dict[str, list[str]] = {}
        self.last_pack = 0.0
        self.stop: str | None = None

    # state ---------------------------------------------------------------------------------------------------

    def save(self) -> None:
        self.state["invocations"][-1] = self.this_run
        _write_text(self.state_path, json.dumps(self.state, indent=1))

    def _task_state(self, key: str) -> dict[str, Any]:
        return self.state["tasks"].setdefault(key, {"wall": 0.0, "attempts": 0})

    def load_jobs(self) -> None:
        if self.state:
            if self.state.get("version") != STATE_VERSION or self.state.get("smoke") != self.opts.smoke:
                raise UsageError(f"--out: {self.out} holds a {'smoke' if self.state.get('smoke') else 'full'} "
                                 f"protocols run; use another --out")
            self.jobs = [Job(**j) for j in self.state["jobs"]]
            wanted = self._only()
            self.jobs = [j for j in self.jobs if wanted is None or j.name in wanted]
            self.state["invocations"].append(self.this_run)
            return
        flags, sites = run_flags(self.env, last_sites)
        missing = [f for f in REQUIRED_FLAGS if f not in flags]
        if missing:
            raise SystemExit(f"protocols: error: nnphases run lacks {', '.join(missing)} (the CLI changed)")
        jobs = job_list(self.opts, flags, sites)
        self.state = {"version": STATE_VERSION, "smoke": self.opts.smoke, "jobs": [dataclasses.asdict(j) for j in jobs],
                      "device": self.opts.device, "calibration": {}, "plan": {}, "tasks": {}, "jobs_done": {},
                      "invocations": [self.this_run]}
        wanted = self._only()
        self.jobs = [j for j in jobs if wanted is None or j.name in wanted]
        self.out.mkdir(parents=True, exist_ok=True)
        self.save()

    def _only(self) -> set[str] | None:
        return set(self.opts.only) if self.opts.only else None

    # commands ------------------------------------------------------------------------------------------------

    def log_path(self, job: Job, what: str) -> Path:
        return self.out / "logs" / job.name / f"{what}.log"

    def run_dir(self, kind: str, job: Job, seed: int) -> Path:
        return self.out / ("calibration" if kind == "calib" else "runs") / job.name / f"s{seed}"

    def command(self, kind: str, job: Job, seed: int, epochs: float) -> list[str]:
        sched = ["--schedule", "log", "--per-decade", "1"] if kind == "calib" else \
            ["--schedule", job.schedule] + (["--per-decade", str(job.per_decade)] if job.schedule == "log" else [])
        return nnphases() + ["run", "--preset", job.preset, "--out", str(self.run_dir(kind, job, seed)),
                             "--epochs", f"{epochs:g}", "--seeds", str(seed), "--device", self.state["device"],
                             "--no-figures"] + job.args + sched

    # phases --------------------------------------------------------------------------------------------------

    def calibrate(self) -> None:
        """Times each job on a short run: one per seed while the slots allow (so the contention is the real one),
        else one per job; jobs that differ only in their loss share one calibration (in a smoke run, the jobs of a
        group do: its lengths are fixed, and each process costs seconds on a CPU)."""
        todo = [j for j in self.jobs if j.name not in self.state["calibration"]]
        if not todo:
            return
        twins: dict[str, list[Job]] = {}
        for job in todo:
            key = job.group if self.opts.smoke else \
                json.dumps([job.preset, _drop(job.args, {"--loss": 1}), job.calib_epochs, job.seeds])
            twins.setdefault(key, []).append(job)
        timed = [group[0] for group in twins.values()]
        all_seeds = self.opts.jobs >= sum(len(j.seeds) for j in timed)
        log(f"calibration: {len(timed)} short runs for {len(todo)} jobs "
            f"({', '.join(f'{j.name} {j.calib_epochs:g} epochs' for j in timed)})")
        fits: dict[str, list[Fit]] = collections.defaultdict(list)
        waiting = collections.Counter()
        for group in twins.values():
            job = group[0]
            for seed in job.seeds if all_seeds else job.seeds[:1]:
                run = self.run_dir("calib", job, seed)
                if run.exists():
                    shutil.rmtree(run)  # a cut calibration is redone: its times would be wrong
                waiting[job.name] += 1

                def done(t: Task, job: Job = job, group: list[Job] = group, run: Path = run, seed: int = seed) -> None:
                    self._account(t)
                    if t.rc == 0 or t.killed:
                        try:
                            # A stopped run's time after its last checkpoint is an unfinished interval, not its tail.
                            fits[job.name].append(fit_run(run / f"seed-{seed}", t.started,
                                                          None if t.killed else t.ended, job.calib_epochs))
                            if t.killed:
                                log(f"calibration of {job.name} seed {seed} stopped {t.killed}: fitted on the "
                                    f"checkpoints it wrote")
                        except ValueError as e:
                            why = f"stopped {t.killed} with {e}" if t.killed else f"could not be timed: {e}"
                            log(f"calibration of {job.name} seed {seed} {why}")
                            for j in group:
                                self._note(j.name, f"not run: its calibration {why}")
                    else:
                        log(f"calibration of {job.name} seed {seed} failed (exit {t.rc}); see {t.log}")
                        for j in group:
                            self._fail(j.name, f"calibration failed (exit {t.rc}): {_tail(t.log)}")
                    waiting[job.name] -= 1
                    if waiting[job.name] == 0 and fits[job.name]:
                        f = max_fit(fits[job.name])
                        for j in group:
                            self.state["calibration"][j.name] = dataclasses.asdict(f)
                        log(f"calibration {', '.join(j.name for j in group)}: start-up {f.startup:.1f} s, "
                            f"{f.measure:.2f} s per measurement, {1000 * f.step:.2f} ms per step, "
                            f"{f.steps_per_epoch:g} steps per epoch")
                    self.save()

                self.pool.submit(Task(f"calib/{job.name}/s{seed}", "calib", job.name,
                                      [(self.command("calib", job, seed, job.calib_epochs), None)],
                                      self.log_path(job, f"calib-s{seed}"), done, seed))
        # Calibration may take at most a third of the budget; a run stopped there is fitted on its checkpoints.
        self.drive(lambda: not self.pool.busy(), min(self.end - self.reserve, self.t0 + self.budget / 3),
                   "the calibration's time limit")
        for job in todo:
            if job.name not in self.state["calibration"] and not self.this_run.get("notes", {}).get(job.name) \
                    and not self.this_run.get("failures", {}).get(job.name):
                self._note(job.name, "not run: its calibration did not start before the calibration's time limit")

    def make_plan(self) -> None:
        """Epochs for the calibrated jobs without a plan (or planned to 0 epochs by an earlier, shorter budget)."""
        todo = [j for j in self.jobs if self.state["plan"].get(j.name, {}).get("epochs", 0) <= 0
                and j.name in self.state["calibration"]]
        if not todo:
            return
        fits = {j.name: Fit(**self.state["calibration"][j.name]) for j in todo}
        seconds = 0.85 * (self.end - self.reserve - time.time())
        epochs, allowance = plan(todo, fits, seconds, self.opts.jobs, FINALIZE_S[self.opts.smoke])
        for j in todo:
            e = epochs[j.name]
            predicted = fits[j.name].predict(j, e) if e > 0 else None
            cut = ""
            if e <= 0:
                cut = f"not run: one step of it (predicted {fits[j.name].predict(j, 1e-9):.0f} s) does not fit " \
                      f"the {allowance:.0f} s each run gets ({_processes(self.opts.jobs)}, {seconds:.0f} s left)"
            elif e < j.minimum:
                cut = f"cut by the budget: {e:g} epochs instead of the protocol's {j.minimum:g}"
            elif e < j.target:
                cut = f"{e:g} of the source's {j.target:g} epochs (the budget's most; at least {j.minimum:g})"
            self.state["plan"][j.name] = {"epochs": e, "predicted_s": predicted, "cut": cut,
                                          "cmd": {str(s): self.command("train", j, s, e)[3:] for s in j.seeds}}
            log(f"plan {j.name}: {e:g} epochs x {len(j.seeds)} seeds, predicted {predicted or 0:.0f} s per seed"
                + (f"; {cut}" if cut else ""))
        self.save()

    def train(self) -> None:
        for job in self.jobs:
            p = self.state["plan"].get(job.name)
            if p is None or p["epochs"] <= 0:
                continue
            for seed in job.seeds:
                key = f"train/{job.name}/s{seed}"
                run = self.run_dir("train", job, seed) / f"seed-{seed}"
                if (run / "DONE").is_file():
                    if self._task_state(key).get("status") != "finished":
                        self._task_state(key)["status"] = "finished"
                    log(f"{key}: finished earlier, skipped")
                    continue
                if (run.parent / "run.json").is_file():
                    log(f"{key}: continues from its last checkpoint")
                cmd = nnphases()[:3] + p["cmd"][str(seed)]
                self.pool.submit(Task(key, "train", job.name, [(cmd, None)],
                                      self.log_path(job, f"train-s{seed}"), self._trained, seed,
                                      priority=int(p["predicted_s"] or 0)))
            if self._job_done(job):
                self._finalize(job)
        self.drive(lambda: not any(t.kind == "train" for t in self.pool.running + self.pool.queue),
                   self.end - self.reserve)

    def _trained(self, t: Task) -> None:
        self._account(t)
        st = self._task_state(t.key)
        job = next(j for j in self.jobs if j.name == t.job)
        if t.rc == 0:
            st["status"] = "finished"
            log(f"{t.key} finished in {t.ended - t.started:.0f} s")
        elif t.killed:
            st["status"] = f"stopped {t.killed}"
            log(f"{t.key} stopped {t.killed} after {t.ended - t.started:.0f} s")
        else:
            st["status"] = f"failed (exit {t.rc})"
            log(f"{t.key} failed (exit {t.rc}); see {t.log}")
            self._fail(job.name, f"seed {t.seed} failed (exit {t.rc}): {_tail(t.log)}")
        if not any(x.job == t.job and x.kind == "train" for x in self.pool.running + self.pool.queue) \
                and not t.killed:
            self._finalize(job)
        self.save()
        self.repack({job.group})

    def _job_done(self, job: Job) -> bool:
        return all((self.run_dir("train", job, s) / f"seed-{s}" / "DONE").is_file() for s in job.seeds)

    def _finalize(self, job: Job, partial: bool = False) -> None:
        """Figures (nnphases plot) and findings (nnphases findings) over the job's seeds."""
        jdir = self.out / "runs" / job.name
        complete = self._job_done(job)
        if complete and (jdir / "FINALIZED").is_file():
            return
        runs = [str(self.run_dir("train", job, s)) for s in job.seeds
                if any((self.run_dir("train", job, s) / f"seed-{s}" / "checkpoints").glob("step-*"))]
        if not runs:
            return
        key = f"finalize/{job.name}"
        if any(t.key == key for t in self.pool.running + self.pool.queue):
            return
        jdir.mkdir(parents=True, exist_ok=True)

        def done(t: Task) -> None:
            self._account(t)
            figures = jdir / "figures"
            plotted = [Path(line.strip()) for line in _lines(jdir / ".plot.txt") if line.strip()]
            moved = 0
            for p in plotted:
                p = p if p.is_absolute() else REPO / p
                if p.is_file() and p.parent != figures:
                    figures.mkdir(exist_ok=True)
                    os.replace(p, figures / p.name)
                    moved += 1
            for p in plotted:
                q = p if p.is_absolute() else REPO / p
                if q.parent.is_dir() and q.parent != figures and not any(q.parent.iterdir()):
                    q.parent.rmdir()
            findings = jdir / "findings.txt"
            ok = t.rcs[:1] == [0] and findings.is_file()
            self.state["jobs_done"][job.name] = {"figures": moved, "findings": ok, "partial": not complete,
                                                 "rc": t.rc}
            for command, rc in zip(("findings", "plot"), t.rcs):
                if rc != 0 and not t.killed:
                    self._fail(job.name, f"nnphases {command} failed (exit {rc}): {_tail(t.log)}")
            if t.killed:
                self._note(job.name, f"findings and figures stopped {t.killed}")
            if t.rcs == [0, 0] and ok and complete:
                (jdir / "FINALIZED").write_text("")
            log(f"{job.name}: {moved} figures, findings {'written' if ok else 'failed'}"
                + (" (partial runs)" if not complete else "") + (f" (stopped {t.killed})" if t.killed else "")
                + (f"; see {t.log}" if t.rc else ""))
            self.save()
            self.repack({job.group})

        base = nnphases()
        self.pool.submit(Task(key, "finalize", job.name,
                              [(base + ["findings", *runs], jdir / "findings.txt"),
                               (base + ["plot", *runs], jdir / ".plot.txt")],
                              self.log_path(job, "finalize"), done, priority=10 ** 9))

    def _account(self, t: Task) -> None:
        st = self._task_state(t.key)
        st["wall"] = round(st["wall"] + (t.ended - t.started), 2)
        st["cpu"] = round(st.get("cpu", 0.0) + t.cpu, 2)
        st["attempts"] += 1

    def _fail(self, job: str, why: str) -> None:  # this invocation's failures
        self.this_run.setdefault("failures", {}).setdefault(job, []).append(why)

    def _note(self, job: str, why: str) -> None:  # what this invocation cut besides the plan
        self.this_run.setdefault("notes", {}).setdefault(job, []).append(why)

    def drive(self, finished: Callable[[], bool], deadline: float, why: str = "the deadline") -> None:
        """Runs the pool until ``finished()``; at ``deadline`` stops calibration and training (the rest may go on
        until the budget's end, less a few seconds for the archives)."""
        while not finished():
            self.pool.poll()
            now = time.time()
            if self.stop:
                return
            if now >= deadline and any(t.kind in ("calib", "train") for t in self.pool.running + self.pool.queue):
                log(f"{why}: stopping calibration and training runs")
                if why == "the deadline":
                    self.this_run["cut_at_deadline"] = True
                for t in self.pool.queue:
                    if t.kind == "train":
                        self._note(t.job, f"seed {t.seed} not started before {why}")
                        self._task_state(t.key)["status"] = f"not started before {why}"
                self.pool.kill(f"at {why}", {"calib", "train"})
            if now >= self.end - 5:
                log("budget's end: stopping everything")
                self.pool.kill("at the budget's end")
                return
            if self.opts.pack_every and now - self.last_pack >= self.opts.pack_every and \
                    any(t.kind == "train" for t in self.pool.running):
                self.repack({j.group for j in self.jobs if any(t.job == j.name for t in self.pool.running)})
            time.sleep(0.2)

    def wrap_up(self) -> None:
        """Figures and findings of runs cut at the deadline (partial), while the budget allows."""
        for job in self.jobs:
            if not self._job_done(job) and job.name in self.state["plan"]:
                self._finalize(job, partial=True)
        self.drive(lambda: not self.pool.busy(), self.end - 5)

    # packing and summary -------------------------------------------------------------------------------------

    def repack(self, groups: set[str] | None = None) -> None:
        self.pack.mkdir(parents=True, exist_ok=True)
        for group in sorted(groups if groups is not None else {j.group for j in self.jobs}):
            folders = [self.out / sub / j.name for j in self.state_jobs() if j.group == group
                       for sub in ("runs", "logs")]
            self.left_out[group] = write_archive(self.pack / f"{group}.tar.gz", self.out, folders)
        self.last_pack = time.time()
        self.summarise()

    def state_jobs(self) -> list[Job]:
        return [Job(**j) for j in self.state["jobs"]]

    def summarise(self) -> None:
        rows, text = [], []
        for job in self.state_jobs():
            p = self.state["plan"].get(job.name, {})
            seeds = []
            for s in job.seeds:
                key = f"train/{job.name}/s{s}"
                st = self.state["tasks"].get(key, {})
                r = reached(self.run_dir("train", job, s) / f"seed-{s}")
                running = any(t.key == key for t in self.pool.running)
                seeds.append({"seed": s, "wall_s": st.get("wall", 0.0), "status": "running" if running else
                              st.get("status", "finished" if r["done"] else "not run"), **r})
            fin = self.state["jobs_done"].get(job.name, {})
            findings = (self.out / "runs" / job.name / "findings.txt")
            cuts = ([p["cut"]] if p.get("cut") else []) + self.this_run.get("notes", {}).get(job.name, [])
            cuts += [f"seed {x['seed']} {x['status']} at epoch {x['epoch']:g} of {p.get('epochs'):g}"
                     if x["epoch"] is not None else f"seed {x['seed']} {x['status']} before its first checkpoint"
                     for x in seeds if x["status"].startswith("stopped")]
            rows.append({"job": job.name, "group": job.group, "protocol": job.protocol,
                         "calibration": self.state["calibration"].get(job.name), "epochs_planned": p.get("epochs"),
                         "epochs_target": job.target, "epochs_minimum": job.minimum,
                         "predicted_s_per_seed": p.get("predicted_s"), "seeds": seeds, "cut": cuts,
                         "failures": self.this_run.get("failures", {}).get(job.name, []),
                         "figures": fin.get("figures", 0), "findings_partial": fin.get("partial"),
                         "findings": findings.read_text() if findings.is_file() else None,
                         "archive": f"{job.group}.tar.gz"})
        summary = {"mode": "smoke" if self.state["smoke"] else "full", "out": str(self.out),
                   "budget_minutes": self.opts.budget_minutes, "jobs": self.opts.jobs, "device": self.state["device"],
                   "elapsed_s": round(time.time() - self.t0, 1), "invocations": self.state["invocations"],
                   "runs": rows, "left_out_of_archives": self.left_out}
        _write_text(self.pack / "summary.json", json.dumps(summary, indent=1))
        inv = self.this_run
        text += [f"# Protocols ({summary['mode']}), {inv['started']}",
                 "",
                 f"Invocation {len(self.state['invocations'])}: `{' '.join(['scripts/protocols.py'] + inv['argv'])}`; "
                 f"budget {self.opts.budget_minutes:g} min, {_processes(self.opts.jobs)}, device "
                 f"{self.state['device']}; status: {inv['status']}; {summary['elapsed_s']:.0f} s so far.",
                 "",
                 "| job | epochs (planned / protocol) | per seed: epoch reached, wall s, status | cut | figures |",
                 "|---|---|---|---|---|"]
        for r in rows:
            seeds = "; ".join(f"s{x['seed']}: {x['epoch'] if x['epoch'] is not None else '-'}, "
                              f"{x['wall_s']:.0f} s, {x['status']}" for x in r["seeds"])
            text.append(f"| {r['job']} | {'-' if r['epochs_planned'] is None else format(r['epochs_planned'], 'g')} / "
                        f"{r['epochs_target']:g} | {seeds} | {'; '.join(r['cut']) or 'none'} | {r['figures']} |")
        for r in rows:
            text += ["", f"## {r['job']}", "", r["protocol"] + ".", ""]
            c = r["calibration"]
            if c:
                text.append(f"Calibration: start-up {c['startup']:.1f} s, {c['measure']:.2f} s per measurement, "
                            f"{1000 * c['step']:.2f} ms per step; predicted {r['predicted_s_per_seed'] or 0:.0f} s "
                            f"per seed.")
            for f in r["failures"]:
                text.append(f"Failure: {f}")
            if r["findings"] is not None:
                text += ["", "Findings" + (" (partial runs)" if r["findings_partial"] else "") + ":", "", "```",
                         r["findings"].rstrip(), "```"]
        if any(self.left_out.values()):
            text += ["", "## Left out of the archives", ""]
            text += [f"- {x}" for v in self.left_out.values() for x in v]
        _write_text(self.pack / "summary.md", "\n".join(text) + "\n")

    # main ----------------------------------------------------------------------------------------------------

    def main(self) -> int:
        self.load_jobs()
        for name in {j["name"] for j in self.state["jobs"]} - {j.name for j in self.jobs}:
            if name not in self.state["plan"]:
                self._note(name, "not selected (--only)")
        log(f"protocols ({'smoke' if self.opts.smoke else 'full'}): {len(self.jobs)} jobs, "
            f"{sum(len(j.seeds) for j in self.jobs)} runs, {_processes(self.opts.jobs)}, budget "
            f"{self.opts.budget_minutes:g} min, out {self.out}, archives in {self.pack}")
        self.pack.mkdir(parents=True, exist_ok=True)
        try:
            self.calibrate()
            if not self.stop:
                self.make_plan()
            if not self.stop:
                self.train()
            if not self.stop:
                self.wrap_up()
        finally:
            if self.pool.running or self.pool.queue:
                self.pool.kill(f"by {self.stop}" if self.stop else "at the end")
            status = f"stopped by {self.stop}" if self.stop else \
                "cut at the deadline" if self.this_run.get("cut_at_deadline") else \
                "complete" if all(self._job_done(j) for j in self.jobs) else "incomplete"
            self.this_run["status"] = status
            self.this_run["elapsed_s"] = round(time.time() - self.t0, 1)
            self.save()
            self.repack()
            log(f"done: {status}; {time.time() - self.t0:.0f} s; summary {self.pack / 'summary.md'}")
        # A run cut by the budget is a result (the summary says what was cut); a failed run is not.
        return 1 if self.this_run.get("failures") else 0


def _processes(n: int) -> str:
    return f"{n} process{'es' if n != 1 else ''}"


def _lines(p: Path) -> list[str]:
    try:
        return p.read_text().splitlines()
    except OSError:
        return []


def _tail(p: Path, n: int = 3) -> str:
    lines = [x for x in _lines(p) if x.strip() and x.strip()[0] not in "│╭╰─"]
    return " | ".join(lines[-n:])[-400:]


# -- arguments ---------------------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        raise UsageError(message)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {'integer' if kind is int else 'number'}, "
                                             f"got {text!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be a positive {'integer' if kind is int else 'number'}, "
                                             f"got {text!r}")
        return v
    return parse


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return v


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="protocols.py", description=__doc__.split("\n\n")[0], allow_abbrev=False,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/protocols"), help="output folder (default runs/protocols)")
    p.add_argument("--pack-dir", type=Path, help="where the archives and the summary go (default OUT/packed)")
    p.add_argument("--budget-minutes", type=_positive(float), help="wall time for the whole script, calibration "
                   "and packing included (default 9; smoke 4)")
    p.add_argument("--jobs", type=_positive(int), help="processes at once (default: one per run (16), at most the "
                   "CPU cores; smoke: 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="nnphases run --device (default auto; smoke cpu)")
    p.add_argument("--data-root", type=Path, help=f"FashionMNIST IDX files (default {DEFAULT_DATA}, or the "
                   f"repository's data/fashion-mnist when --pack-data put it there)")
    p.add_argument("--mnist-root", type=Path, help="MNIST IDX files: source 000 runs on MNIST, as the source")
    p.add_argument("--only", help="comma-separated job names to run (default: all)")
    p.add_argument("--pack-every", type=_seconds, help="seconds between archive rewrites while runs go on "
                   "(default 60; smoke 0: only when a run or a job ends)")
    p.add_argument("--smoke", action="store_true", help="the same pipeline with tiny runs on the CPU (about a minute)")
    p.add_argument("--pack-data", type=Path, metavar="DIR", help="only copy the IDX files of --data-root (and "
                   "--mnist-root) into DIR/fashion-mnist (DIR/mnist) and exit; e.g. DIR=data, ignored by git and "
                   "carried to the GPU machine")
    opts = p.parse_args(argv)
    if opts.data_root is None:
        opts.data_root = DEFAULT_DATA if _has_idx(DEFAULT_DATA) or not _has_idx(PACKED_DATA) else PACKED_DATA
    if not _has_idx(opts.data_root):
        raise UsageError(f"--data-root: {str(opts.data_root)!r} holds no FashionMNIST IDX files "
                         f"({', '.join(n + '[.gz]' for n in IDX_TRAIN)})")
    if opts.mnist_root is not None and not _has_idx(opts.mnist_root):
        raise UsageError(f"--mnist-root: {str(opts.mnist_root)!r} holds no MNIST IDX files "
                         f"({', '.join(n + '[.gz]' for n in IDX_TRAIN)})")
    opts.data_root = opts.data_root.resolve()
    opts.mnist_root = opts.mnist_root.resolve() if opts.mnist_root else None
    if opts.pack_data is not None:
        return opts
    if opts.only is not None:
        opts.only = [n.strip() for n in opts.only.split(",") if n.strip()]
        bad = [n for n in opts.only if n not in JOB_NAMES] or ([] if opts.only else [""])
        if bad:
            raise UsageError(f"--only: unknown job {bad[0]!r}; choose from {', '.join(JOB_NAMES)}")
    if opts.smoke and opts.device == "cuda":
        raise UsageError("--device: 'cuda' with --smoke; the smoke run is for the CPU")
    opts.device = opts.device or ("cpu" if opts.smoke else "auto")
    opts.budget_minutes = opts.budget_minutes or (4.0 if opts.smoke else 9.0)
    opts.pack_every = (0.0 if opts.smoke else 60.0) if opts.pack_every is None else opts.pack_every
    opts.jobs = opts.jobs or min(2 if opts.smoke else RUNS, os.cpu_count() or 1)
    opts.out = opts.out.resolve()
    opts.pack_dir = (opts.pack_dir or opts.out / "packed").resolve()
    if opts.out.exists() and not opts.out.is_dir():
        raise UsageError(f"--out: {str(opts.out)!r} is not a folder")
    return opts


def _has_idx(root: Path) -> bool:
    return all((root / n).is_file() or (root / (n + ".gz")).is_file() for n in IDX_TRAIN)


def pack_data(opts: argparse.Namespace) -> int:
    """Copies the IDX files into the repository (a folder git ignores, to be carried to the GPU machine)."""
    copied = []
    for src, name in ((opts.data_root, "fashion-mnist"), (opts.mnist_root, "mnist")):
        if src is None:
            continue
        dst = opts.pack_data / name
        dst.mkdir(parents=True, exist_ok=True)
        for stem in IDX_TRAIN + IDX_TEST:
            for f in (src / (stem + ".gz"), src / stem):
                if f.is_file():
                    shutil.copy2(f, dst / f.name)
                    copied.append(dst / f.name)
                    break
    size = sum(p.stat().st_size for p in copied)
    print(f"copied {len(copied)} files ({size / 2**20:.1f} MiB) into {opts.pack_data}: "
          + ", ".join(str(p) for p in copied))
    return 0


def main(argv: list[str] | None = None) -> int:
    global LOG_FILE
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.pack_data is not None:
            return pack_data(opts)
        opts.pack_dir.mkdir(parents=True, exist_ok=True)
        LOG_FILE = opts.pack_dir / "protocols.log"
        proto = Protocols(opts)

        def on_signal(sig: int, _frame: Any) -> None:
            proto.stop = signal.Signals(sig).name
            raise KeyboardInterrupt

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return proto.main()
        except KeyboardInterrupt:
            return 128 + (signal.SIGTERM if proto.stop == "SIGTERM" else signal.SIGINT)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except UsageError as e:
        print(f"protocols.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
