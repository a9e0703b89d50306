#!/usr/bin/env python3
"""Everything GPU-side in one command inside a time budget, for the rare, short loan of a GPU machine: builds the
extension with its CUDA part for the GPU found (in parallel, timed), runs every GPU test (the ``cuda``-marked rows,
in parallel shards), and measures, each as a ratio within the same run, every kernel against the device's copy
bandwidth (``benchmarks/gpu_report.py``), the metric kernels on a VGG-11-sized checkpoint, a measurement against a
plain evaluation pass for VGG-11 and ResNet-10, and a measurement under NCCL with one torchrun rank. Each stage
stops at its own deadline; the results go to at most 8 files under ``$OUT`` (summary.md, figures.json, build.log,
tests.log, bench.log), rewritten after every stage so that a hard kill still leaves them. ``--dry-run`` runs the
same stages on the CPU, the GPU parts reported as skipped ("no GPU") and their CPU-side parts done at toy sizes.

    scripts/device_check                  # on the GPU machine, from the repository root (scripts/README.md)
    scripts/device_check --dry-run --out /tmp/device-check     # here: the same stages on the CPU, under a minute
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SELF = Path(__file__).resolve()
MARK = "@@"  # a worker's result lines: "@@figure {json}", "@@check {json}", "@@skip {json}"; the rest is its log
# Seconds each stage is planned at on the GPU machine; what a stage leaves unused goes to the later ones, in these
# proportions. The build and tests come first because their failures are what a rerun has to fix.
NOMINAL = {"build": 100.0, "tests": 140.0, "kernels": 60.0, "recorder": 60.0, "nccl": 40.0}
RESERVE_S = 8.0  # for the last summary, after every stage's deadline
TEST_SHARDS = 4  # pytest processes sharing the GPU; one would leave 15 of the 16 cores idle


# ----------------------------------------------------------------------------------------------------- plumbing


def emit(kind: str, **data: Any) -> None:
    """One result line of a worker, read back by the parent from the worker's log."""
    print(f"{MARK}{kind} {json.dumps(data)}", flush=True)


def parse_results(text: str) -> dict[str, list[dict[str, Any]]]:
    """The figures, checks and skips a worker emitted, from its log text."""
    found: dict[str, list[dict[str, Any]]] = {"figure": [], "check": [], "skip": []}
    for line in text.splitlines():
        if line.startswith(MARK):
            kind, _, payload = line[len(MARK):].partition(" ")
            found.setdefault(kind, []).append(json.loads(payload))
    return found


@dataclass
class Ran:
    rc: int | None  # None: stopped at its deadline
    seconds: float
    text: str  # what it wrote to its log


def run_logged(cmd: list[str], log: Path, deadline: float, env: dict[str, str] | None = None,
               header: str = "") -> Ran:
    """Runs cmd in its own process group, output appended to log; at the deadline the whole group (torchrun's
    children included) gets SIGTERM, then SIGKILL 3 s later."""
    with log.open("a") as f:
        f.write(f"\n===== {header or ' '.join(cmd)}\n")
        f.flush()
        start = f.tell()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        rc = wait_or_kill(proc, deadline)
    took = time.monotonic() - t0
    with log.open() as f:
        f.seek(start)
        text = f.read()
    with log.open("a") as f:
        f.write(f"===== exit {rc if rc is not None else 'killed at its deadline'} after {took:.1f} s\n")
    return Ran(rc, took, text)


def wait_or_kill(proc: subprocess.Popen[Any], deadline: float) -> int | None:
    try:
        return proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        return None


def child_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """The environment of every child: the repository first on PYTHONPATH (the extension is built in place, and
    nnphases need not be installed), unbuffered output, and a thread count when several children share the cores."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = env["NUMBA_NUM_THREADS"] = str(threads)
    env.update(extra)
    return env


def load_gpu_report() -> ModuleType:
    """benchmarks/gpu_report.py as a module (benchmarks/ is not a package); registered in sys.modules before it
    runs, which its dataclass needs."""
    spec = importlib.util.spec_from_file_location("gpu_report", ROOT / "benchmarks" / "gpu_report.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_report"] = mod
    spec.loader.exec_module(mod)
    return mod


def command_output(cmd: list[str], timeout: float = 20.0) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
                             env=child_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for cand in ([str(Path(home) / "bin" / "nvcc")] if home else []) + [shutil.which("nvcc") or "",
                                                                         "/usr/local/cuda/bin/nvcc"]:
        if cand and Path(cand).exists():
            return cand
    return None


# ------------------------------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, GPU name and compute capability, driver and CUDA versions, the
    library versions, and the modules the stages need that are missing."""
    import torch

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "torch_cuda": torch.version.cuda, "gpu": None, "capability": None, "driver": None,
                            "cuda_driver_api": None, "nvcc": None, "cupy": None}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), info["cpu"])
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = "{}.{}".format(*torch.cuda.get_device_capability())
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    smi = command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    info["driver"] = smi.splitlines()[0].strip() if smi else None
    banner = command_output(["nvidia-smi"])
    found = re.search(r"CUDA Version:\s*([\d.]+)", banner or "")
    info["cuda_driver_api"] = found.group(1) if found else None
    nvcc = find_nvcc()
    version = command_output([nvcc, "--version"]) if nvcc else None
    found = re.search(r"release ([\d.]+)", version or "")
    info["nvcc"] = f"{nvcc} (CUDA {found.group(1)})" if found else nvcc
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except Exception as e:  # CuPy raises more than ImportError when its CUDA libraries do not load
        info["cupy"] = f"unavailable: {type(e).__name__}: {str(e)[:200]}"
    need = ("numpy", "numba", "pyarrow", "pandas", "zarr", "typer", "matplotlib", "tqdm", "pytest", "hypothesis",
            "pybind11", "setuptools")
    info["missing_modules"] = [m for m in need if importlib.util.find_spec(m) is None]
    return info


# ------------------------------------------------------------------------------------------------------- stages


@dataclass
class Stage:
    name: str
    status: str = "pending"  # ok, failed, partial (cut by its deadline), skipped
    reason: str = ""
    seconds: float = 0.0
    deadline_s: float = 0.0
    cpu_part: str = ""  # what the stage did on the CPU when its GPU part was skipped
    details: dict[str, Any] = field(default_factory=dict)


class Check:
    """The stages in order, each within its share of what is left of the budget, the figures they gathered and
    the files under OUT."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.t0 = time.monotonic()
        self.end = self.t0 + args.budget_s - RESERVE_S
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="device-check-"))  # run folders and shard logs, never under OUT
        self.dry = args.dry_run
        self.only = args.only or list(NOMINAL)
        self.gpu = torch.cuda.is_available() and not self.dry
        self.skip_reason = "no GPU" if not torch.cuda.is_available() else "dry run"
        self.machine = machine()
        self.stages: list[Stage] = []
        self.figures: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        for name in ("build.log", "tests.log", "bench.log"):
            (self.out / name).write_text("")

    # ---- bookkeeping

    def deadline(self, name: str) -> float:
        """This stage's share of the time left, in proportion to the nominal seconds of it and the stages after."""
        names = [n for n in NOMINAL if n in self.only]
        rest = sum(NOMINAL[n] for n in names[names.index(name):])
        now = time.monotonic()
        return now + max(0.0, self.end - now) * NOMINAL[name] / rest

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f} s] {text}", flush=True)

    def stage(self, name: str, fn: Callable[[Stage, float], None]) -> None:
        st = Stage(name)
        self.stages.append(st)
        deadline = self.deadline(name)
        st.deadline_s = round(deadline - time.monotonic(), 1)
        self.say(f"{name}: starting (deadline in {st.deadline_s:.0f} s)")
        t = time.monotonic()
        try:
            fn(st, deadline)
        except Exception as e:  # one stage's crash must not cost the others their turn
            st.status, st.reason = "failed", f"{type(e).__name__}: {e}"
        st.seconds = round(time.monotonic() - t, 1)
        if st.status == "pending":
            st.status = "ok"
        self.say(f"{name}: {st.status}" + (f" ({st.reason})" if st.reason else "")
                 + (f"; on the CPU: {st.cpu_part}" if st.cpu_part else ""))
        self.write()

    def skip_gpu(self, st: Stage, cpu_part: str = "") -> None:
        st.status, st.reason, st.cpu_part = "skipped", self.skip_reason, cpu_part

    def gather(self, st: Stage, ran: Ran, what: str) -> None:
        """A worker's figures and checks into the report, and its outcome into the stage's status."""
        found = parse_results(ran.text)
        for f in found["figure"]:
            self.figures.append({"stage": st.name, **f})
        for c in found["check"]:
            self.checks.append({"stage": st.name, **c})
        if found["skip"]:
            st.details["skipped"] = found["skip"]
        bad = [c for c in found["check"] if not c.get("ok")]
        if ran.rc is None:
            st.status, st.reason = "partial", f"{what} stopped at its deadline after {ran.seconds:.0f} s"
        elif ran.rc != 0 or bad:
            st.status = "failed"
            st.reason = f"{what} exited with {ran.rc}" if ran.rc else f"{len(bad)} check(s) failed"
            st.details["log_tail"] = ran.text[-1500:]
        st.details[f"{what}_s"] = round(ran.seconds, 1)

    # ---- the stages

    def build(self, st: Stage, deadline: float) -> None:
        nvcc = find_nvcc()
        have_pybind = importlib.util.find_spec("pybind11") is not None
        if not self.gpu or self.args.skip_build:
            ext = command_output([sys.executable, "-c", "import nnphases._C as C; print(C.has_cuda)"])
            part = (f"nvcc {'at ' + nvcc if nvcc else 'not found'}; pybind11 {'found' if have_pybind else 'missing'};"
                    f" nnphases._C {'imports (CUDA part: ' + ext + ')' if ext else 'does not import'}")
            if self.args.skip_build and self.gpu:
                st.status, st.reason, st.cpu_part = "skipped", "--skip-build", part
            else:
                self.skip_gpu(st, part)
            return
        arch = self.machine["capability"].replace(".", "")
        env = child_env(NNPHASES_CUDA="1", NNPHASES_CUDA_ARCHS=arch)
        if nvcc and not os.environ.get("CUDA_HOME"):
            env["CUDA_HOME"] = str(Path(nvcc).resolve().parent.parent)
        jobs = os.cpu_count() or 1
        ran = run_logged([sys.executable, str(SELF), "--build-worker", "--jobs", str(jobs)], self.out / "build.log",
                         deadline, env, f"build for sm_{arch} with {jobs} jobs")
        st.details.update(arch=arch, jobs=jobs, build_s=round(ran.seconds, 1))
        if ran.rc != 0:
            st.status = "failed" if ran.rc is not None else "partial"
            st.reason = (f"the build exited with {ran.rc}" if ran.rc is not None
                         else f"the build stopped at its deadline after {ran.seconds:.0f} s")
            st.details["log_tail"] = ran.text[-1500:]
            return
        probe = "import nnphases._C as C; print(C.has_cuda); print(C.cuda_device_report())"
        report = command_output([sys.executable, "-c", probe], timeout=60)
        st.details["extension"] = report
        lines = (report or "").splitlines()
        if not lines or lines[0] != "True":
            st.status, st.reason = "failed", f"the built extension has no CUDA part: {report}"
            return
        if len(lines) > 1 and lines[1].strip():  # empty when the device is usable, else why not (driver too old)
            st.status, st.reason = "failed", f"the extension's CUDA part cannot use the GPU: {lines[1]}"
            return
        self.figures.append({"stage": "build", "name": "build: extension with its CUDA part", "value": ran.seconds,
                             "unit": "s", "arch": arch, "jobs": jobs})

    def tests(self, st: Stage, deadline: float) -> None:
        files, errors = self.collect(min(deadline, time.monotonic() + 60))
        total = sum(files.values())
        st.details.update(collected=total, files=files, collection_errors=errors)
        shards = plan_shards(files, TEST_SHARDS)
        st.details["shards"] = shards
        if not self.gpu:
            self.skip_gpu(st, f"collected {total} GPU tests in {len(files)} files (pytest -m cuda), planned as "
                              f"{len(shards)} shards" + (f"; collection errors in {errors}" if errors else ""))
            return
        env = child_env(threads=max(1, (os.cpu_count() or 1) // max(1, len(shards))))
        logs = [self.work / f"tests-shard-{i}.log" for i in range(len(shards))]
        procs = []
        for files_i, log in zip(shards, logs, strict=True):
            cmd = [sys.executable, "-m", "pytest", "-v", "-rfE", "-m", "cuda", "--continue-on-collection-errors",
                   "-p", "no:cacheprovider", *files_i]
            with log.open("w") as f:
                f.write(f"===== {' '.join(cmd)}\n")
                procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        codes = [wait_or_kill(p, deadline) for p in procs]
        counts: dict[str, int] = {}
        failed: list[str] = []
        with (self.out / "tests.log").open("a") as out:
            for log, rc in zip(logs, codes, strict=True):
                text = log.read_text(errors="replace")
                out.write(text + f"\n===== exit {rc if rc is not None else 'killed at the deadline'}\n\n")
                for k, v in pytest_counts(text).items():
                    counts[k] = counts.get(k, 0) + v
                failed += re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)
        line = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no result"
        if errors:  # a module that does not import may hold GPU tests that were never run
            line += f"; modules that failed to import: {', '.join(errors)}"
        st.details.update(counts=counts, summary=line, failed=sorted(set(failed))[:50])
        with (self.out / "tests.log").open("a") as out:
            out.write(f"===== summary: {line} (of {total} collected)\n")
        self.say(f"tests: {line} (of {total} collected)")
        if any(rc is None for rc in codes):
            cut = [f for files_i, rc in zip(shards, codes, strict=True) if rc is None for f in files_i]
            st.details["cut_files"] = cut
            st.status, st.reason = "partial", f"stopped at the deadline: {line} of {total} (cut: {', '.join(cut)})"
        elif counts.get("failed") or counts.get("error") or any(codes):
            st.status, st.reason = "failed", line

    def collect(self, deadline: float) -> tuple[dict[str, int], list[str]]:
        """GPU tests per file (``-m cuda`` over tests/) and the modules that failed to import."""
        ran = run_logged([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda",
                          "--continue-on-collection-errors", "-p", "no:cacheprovider", "tests"],
                         self.out / "tests.log", deadline, child_env(), "collect the GPU tests")
        files: dict[str, int] = {}
        for line in ran.text.splitlines():
            if "::" in line and not line.startswith(("ERROR", "=")):
                path = line.split("::", 1)[0]
                files[path] = files.get(path, 0) + 1
        errors = sorted(set(re.findall(r"^ERROR (tests/\S+\.py)", ran.text, re.MULTILINE)))
        return files, errors

    def worker(self, st: Stage, deadline: float, name: str, torchrun: bool = False) -> None:
        cmd = [sys.executable, str(SELF), "--worker", name, "--device", "cuda" if self.gpu else "cpu",
               "--deadline-s", f"{max(1.0, deadline - time.monotonic() - 4):.0f}", "--work", str(self.work)]
        if torchrun:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *cmd[1:]]
        if self.dry:
            cmd.append("--tiny")
        ran = run_logged(cmd, self.out / "bench.log", deadline, child_env(), f"{name}: {' '.join(cmd)}")
        self.gather(st, ran, name)

    def kernels(self, st: Stage, deadline: float) -> None:
        self.worker(st, deadline, "kernels")
        if not self.gpu:
            part = "; ".join(c["what"] for c in self.checks if c["stage"] == "kernels")
            if st.status == "pending":
                self.skip_gpu(st, part)
            else:
                st.cpu_part = part

    def recorder(self, st: Stage, deadline: float) -> None:
        self.worker(st, deadline, "recorder")
        if not self.gpu and st.status == "pending":
            ratios = [f"{f['name'].split(': ', 1)[1]} {f['value']:.2f}x" for f in self.figures
                      if f["stage"] == "recorder" and f["unit"] == "x"]
            self.skip_gpu(st, "tiny CPU ratios: " + ", ".join(ratios))

    def nccl(self, st: Stage, deadline: float) -> None:
        self.worker(st, deadline, "nccl", torchrun=True)
        if not self.gpu and st.status == "pending":
            self.skip_gpu(st, "one gloo rank through torchrun: " + "; ".join(
                c["what"] for c in self.checks if c["stage"] == "nccl"))

    # ---- output

    def write(self) -> None:
        """figures.json and summary.md, rewritten after every stage (a hard kill keeps the last ones)."""
        doc = {"machine": self.machine, "dry_run": self.dry, "budget_s": self.args.budget_s,
               "wall_s": round(time.monotonic() - self.t0, 1), "stages": [asdict(s) for s in self.stages],
               "figures": self.figures, "checks": self.checks, "targets": target_rows(self.figures)}
        (self.out / "figures.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
        (self.out / "summary.md").write_text(summary_md(doc))

    def run(self) -> int:
        m = self.machine
        self.say(f"machine: {m['gpu'] or 'no GPU'}" + (f" (sm_{m['capability']}, driver {m['driver']}, CUDA "
                                                       f"{m['cuda_driver_api']})" if m["gpu"] else "")
                 + f", {m['cores']} cores, torch {m['torch']}; out: {self.out}")
        if m["missing_modules"]:
            self.say(f"missing modules: {', '.join(m['missing_modules'])}")
        for name, fn in (("build", self.build), ("tests", self.tests), ("kernels", self.kernels),
                         ("recorder", self.recorder), ("nccl", self.nccl)):
            if name in self.only:
                self.stage(name, fn)
            else:
                self.stages.append(Stage(name, "skipped", "not in --only"))
        shutil.rmtree(self.work, ignore_errors=True)
        self.write()
        for s in self.stages:
            if s.status in ("skipped", "partial"):
                print(f"skipped: {s.name}: {s.reason}" + (f" (on the CPU: {s.cpu_part})" if s.cpu_part else ""))
            for k in s.details.get("skipped", []):
                print(f"skipped: {k['what']}: {k['reason']}")
        wall = time.monotonic() - self.t0
        print(f"device_check: {', '.join(f'{s.name} {s.status}' for s in self.stages)}; {wall:.1f} s; "
              f"{len(list(self.out.iterdir()))} files in {self.out}")
        return 1 if any(s.status == "failed" for s in self.stages) else 0


def plan_shards(files: dict[str, int], shards: int) -> list[list[str]]:
    """Test files into at most `shards` groups of about equal test counts (longest first, each to the lightest)."""
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(min(shards, len(files)))]
    for path, n in sorted(files.items(), key=lambda kv: -kv[1]):
        i = min(range(len(groups)), key=lambda j: groups[j][0])
        groups[i] = (groups[i][0] + n, groups[i][1] + [path])
    return [g[1] for g in groups if g[1]]


def pytest_counts(text: str) -> dict[str, int]:
    """Outcome counts of one pytest run: its final summary line, or, when it was killed before printing one, the
    per-test lines of ``-v``."""
    final = re.findall(r"^=+ (.*\bin [\d.]+s.*) =+$", text, re.MULTILINE)
    counts: dict[str, int] = {}
    if final:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", final[-1]):
            counts["error" if what.startswith("error") else what] = int(n)
        return counts
    for what in re.findall(r"::\S+ (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)", text):
        key = {"XFAIL": "xfailed", "XPASS": "xpassed"}.get(what, what.lower())
        counts[key] = counts.get(key, 0) + 1
    return counts


def target_rows(figures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The figures the issue states targets for (reported against, never a failure), each with its verdict."""
    rows = []
    for f in figures:
        t = f.get("target")
        if t:
            met = f["value"] >= t["bound"] if t["kind"] == "min" else f["value"] <= t["bound"]
            rows.append({"figure": f["name"], "value": f["value"],
                         "target": f"{'>=' if t['kind'] == 'min' else '<='} {t['bound']}", "met": met})
    return rows


def summary_md(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    gpu = (f"{m['gpu']} (sm_{m['capability']}, {m.get('gpu_memory_gib')} GiB), driver {m['driver']}, CUDA "
           f"{m['cuda_driver_api']} (driver API), torch {m['torch']} (CUDA {m['torch_cuda']}), CuPy {m['cupy']}"
           if m["gpu"] else f"no GPU; torch {m['torch']}")
    lines = ["# Device check" + (" (dry run: GPU stages skipped)" if doc["dry_run"] else ""), "",
             f"Machine: {gpu}; {m['cpu']}, {m['cores']} cores; nvcc {m['nvcc']}.",
             f"Budget {doc['budget_s']:.0f} s, wall {doc['wall_s']:.0f} s."]
    if m.get("missing_modules"):
        lines.append(f"Missing modules: {', '.join(m['missing_modules'])}.")
    lines += ["", "| stage | status | seconds | deadline s | reason / summary |", "|---|---|---:|---:|---|"]
    for s in doc["stages"]:
        note = s["reason"] or s["details"].get("summary", "")
        if s["cpu_part"]:
            note += f" (on the CPU: {s['cpu_part']})"
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['deadline_s']:.0f} | {note} |")
    skipped = [f"- {s['name']}: {k['what']}: {k['reason']}" for s in doc["stages"]
               for k in s["details"].get("skipped", [])]
    if skipped:
        lines += ["", "Skipped within the stages:", "", *skipped]
    failed = [t for s in doc["stages"] for t in s["details"].get("failed", [])]
    if failed:
        lines += ["", "Failed tests (first 50):", ""] + [f"- `{t}`" for t in failed]
    if doc["targets"]:
        lines += ["", "## Against the issue's targets", "", "| figure | value | target | met |", "|---|---:|---|---|"]
        lines += [f"| {t['figure']} | {t['value']:.3f} | {t['target']} | {'yes' if t['met'] else '**no**'} |"
                  for t in doc["targets"]]
    if doc["figures"]:
        lines += ["", "## Figures (each ratio measured within this run)", "", "| figure | value | unit |",
                  "|---|---:|---|"]
        lines += [f"| {f['name']} | {f['value']:.4g} | {f['unit']} |" for f in doc["figures"]]
    bad = [c for c in doc["checks"] if not c.get("ok")]
    lines += ["", f"Checks: {sum(1 for c in doc['checks'] if c.get('ok'))} passed, {len(bad)} failed."]
    lines += [f"- FAILED {c['stage']}: {c['what']}: {c.get('detail', '')}" for c in bad]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ the build


def build_worker(jobs: int) -> None:
    """Builds nnphases._C in place with setup.py, which compiles the C++ sources and the nvcc calls `jobs` at a
    time; ``--force`` compiles every object again, so the time is a full build's even over an old one."""
    os.environ["NNPHASES_BUILD_JOBS"] = str(max(1, jobs))
    import runpy

    t = time.monotonic()
    sys.argv = ["setup.py", "build_ext", "--inplace", "--force"]  # a full build's time, even over an old one
    os.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    print(f"built in {time.monotonic() - t:.1f} s with {jobs} jobs", flush=True)


# ------------------------------------------------------------------------------------------------- workers


def figure(name: str, value: float, unit: str, **extra: Any) -> None:
    emit("figure", name=name, value=value, unit=unit, **extra)


def check(what: str, ok: bool, detail: str = "") -> None:
    emit("check", what=what, ok=bool(ok), detail=detail)


def skip(what: str, reason: str) -> None:
    emit("skip", what=what, reason=reason)


def kernels_worker(opts: argparse.Namespace) -> None:
    """Every kernel against the device's copy bandwidth with gpu_report's cases (whole calls, back to back, and the
    kernels alone from the profiler), the metric kernels on a VGG-11-sized checkpoint and a 100-class one, then the
    GPU rows of ``nnphases bench --quick`` checked against the reference. The cases the targets are stated on come
    first, so that a deadline cuts the others. On the CPU: gpu_report imports and its metric check passes on a
    small table through the CPU backends."""
    import torch

    import nnphases.kernels as K

    gr = load_gpu_report()
    stop = time.monotonic() + opts.deadline_s
    if opts.device == "cpu":
        check("benchmarks/gpu_report.py imports", True)
        counts, sizes = gr.count_table(10, 4096, 50)
        want = K.node_metrics(counts, sizes, backend="reference")
        for b in ("cpp", "numba"):
            try:
                gr.check_metrics(K.node_metrics(torch.from_numpy(counts), sizes, backend=b), want, 10, f"{b}")
                check(f"its check_metrics passes on {b}", True)
            except K.BackendError as e:
                skip(f"gpu_report's metric check on {b}", str(e))
        tables = gr.popcount_tables(300, 1000, 10, "cpu")
        want = gr.popcount_truth(tables, "reference")
        for b in ("cpp", "numba"):
            try:
                gr.check_popcounts(tables, b, want)
                check(f"its check_popcounts passes on {b}", True)
            except K.BackendError as e:
                skip(f"gpu_report's popcount check on {b}", str(e))
            except AssertionError as e:
                check(f"its check_popcounts passes on {b}", False, str(e))
        return
    bw = gr.copy_bandwidth(1 << 30)
    figure("kernels: device copy bandwidth (read + write, 1 GiB)", bw / 1e9, "GB/s")
    read_bw = gr.read_bandwidth(1 << 30)
    figure("kernels: device read bandwidth (torch.sum of 1 GiB)", read_bw / 1e9, "GB/s")
    peak, how = gr.popcount_peak()
    if peak:
        figure("kernels: integer popcount peak (estimate)", peak / 1e9, "G pair-words/s", how=how)
    else:
        skip("kernels: integer popcount peak", how)
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    jobs: list[tuple[str, tuple[Any, ...]]] = [
        ("counts", (60000, 4096, 10, f32)), ("metrics", (10, 524_288, 5000)), ("popcount", (4096, 100_000, 10)),
        ("counts", (60000, 4096, 100, f32)), ("popcount", (300_000, 1000, 10)),
        ("counts", (60000, 4096, 10, f16)), ("counts", (60000, 4096, 10, bf16)), ("counts", (12000, 2880, 10, f32)),
        ("counts", (1000, 300_000, 10, f32)), ("metrics", (100, 131_072, 500)), ("counts", (1000, 300_000, 100, f16)),
    ]
    for kind, a in jobs:
        classes = a[0] if kind == "metrics" else a[2]
        what = f"{kind} {'x'.join(map(str, a[:2]))} " + (f"{str(a[3]).replace('torch.', '')} C={classes}"
                                                         if kind == "counts" else f"C={classes}")
        if time.monotonic() > stop - 25:  # leave nnphases bench its turn
            skip(f"kernels: {what}", "the stage's deadline is near")
            continue
        try:
            rows = (gr.case(*a, bw, ["cuda", "cupy"]) if kind == "counts"
                    else gr.popcount_case(*a, read_bw, peak, ["cuda", "cupy"]) if kind == "popcount"
                    else gr.metrics_case(*a, bw, ["cuda", "cupy"]))
            check(f"{what}: every backend matches the reference", True)
        except AssertionError as e:
            check(f"{what}: every backend matches the reference", False, str(e))
            continue
        report_rows(kind, rows)
        torch.cuda.empty_cache()
    try:
        out = subprocess.run([sys.executable, "-m", "nnphases", "bench", "--quick", "--json"], capture_output=True,
                             check=False, text=True, timeout=max(5.0, stop - time.monotonic()), env=child_env())
    except subprocess.TimeoutExpired:
        skip("kernels: nnphases bench --quick", "the stage's deadline came first")
        return
    print(out.stderr[-3000:])
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        check("nnphases bench --quick --json", False, (out.stdout + out.stderr)[-500:])
        return
    gpu_rows = [r for r in report["rows"] if r["device"] != "cpu"]
    bad = [f"{r['kernel']} {r['backend']}: {r['check']}" for r in gpu_rows if r["check"] != "ok"]
    check(f"nnphases bench --quick: {len(gpu_rows)} GPU rows match the reference", bool(gpu_rows) and not bad,
          "; ".join(bad) or ("no GPU rows" if not gpu_rows else ""))
    for r in report["skipped"]:
        skip(f"nnphases bench: {r['kernel']} on {r['backend']} ({r['device']})", r["reason"])


def report_rows(kind: str, rows: list[Any]) -> None:
    """gpu_report's rows as printed lines and as figures named by case and call; a profiler row (indented under the
    call it timed) is named after that call's kernel and backend when its own text does not name it."""
    main = ""
    for r in rows:
        print(r.text(), flush=True)
        what = r.what.strip()
        if r.what.startswith(" "):
            timing = "kernels alone"
            what = what if "_kernel" in what else f"{' '.join(main.split()[:2])}: {what}"
        else:
            main, timing = what, "back to back" if "async" in what else "whole call"
        if r.seconds is not None and r.of_copy is None:  # no yardstick: its time only
            figure(f"kernels: {r.case}: {what}", r.seconds * 1e3, "ms", timing=timing, seconds=r.seconds)
        elif r.seconds is not None:
            figure(f"kernels: {r.case}: {what}", r.of_copy, f"of {r.yardstick}", timing=timing, seconds=r.seconds,
                   gb_per_s=r.nbytes / r.seconds / 1e9, rate_unit=f"G{r.work}/s", target=kernel_target(kind, r))
        else:
            skip(f"kernels: {r.case}: {what}", r.note)


def kernel_target(kind: str, r: Any) -> dict[str, Any] | None:
    """The issue's target for this row, if it has one: whole calls back to back of the extension's class_counts
    and pack_masks >= 0.92 of copy bandwidth; a whole metric call on the VGG-11-sized table >= 0.5."""
    words = r.what.split()
    if kind == "counts" and len(words) > 2 and words[1] == "cuda" and words[2] == "async" \
            and words[0] in ("class_counts", "pack_masks") and r.case.startswith("60000x4096 float32"):
        return {"bound": 0.92, "kind": "min"}
    if kind == "metrics" and words[1:] == ["cuda"] and r.case.startswith("10x524288"):
        return {"bound": 0.5, "kind": "min"}
    return None


def conv_models() -> Iterator[tuple[str, Callable[[], Any]]]:
    from nnphases.experiments.models import resnet10, vgg11

    # One input channel at 32x32: source 002's FashionMNIST protocol, and the shape of the earlier GPU figure.
    yield "vgg11", lambda: vgg11(10, in_channels=1)
    yield "resnet10", lambda: resnet10(10, in_channels=1)


def stored_counts(out: Path, step: int) -> tuple[dict[str, Any], Any]:
    from nnphases import RunDir

    return RunDir(out).read_counts(step)


def exact_mlp(device: str, seed: int = 0) -> Any:
    """A 2x64 ReLU MLP with weights in {-1, 0, 1}: on inputs in {0, 1, 2} every pre-activation is an integer
    below 2^24, computed exactly by any device and any summation order, so its counts are the same on a GPU
    and on the CPU, bit for bit."""
    import torch

    from nnphases.experiments.models import mlp

    torch.manual_seed(seed)
    model = mlp(784, 2, 64, 10).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-1, 2, p.shape))
    return model.to(device)


def recorder_worker(opts: argparse.Namespace) -> None:
    """The Recorder on the device: its counts (int32 accumulators, several batches) equal the CPU's on a model
    that every device computes exactly; then, for VGG-11 and ResNet-10 at 32x32, one measurement (SampleSets and
    EvalStats; and with Masks) against a plain evaluation pass (logits, loss, accuracy) over the same data, in
    interleaved rounds as benchmarks/bench_recorder.py times them on the CPU."""
    import torch

    from nnphases import (
        Recorder,
        RecorderOptions,
        Schedule,
    )

    torch.backends.cuda.matmul.allow_tf32 = False  # the exact model relies on float32 products
    dev, work, tiny = opts.device, Path(opts.work), opts.tiny
    stop = time.monotonic() + opts.deadline_s
    n_exact = 512 if tiny else 12000
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (n_exact, 1, 28, 28), generator=g).float()
    y = torch.arange(n_exact) % 10
    runs = []
    for i, where in enumerate(("cpu", dev)):  # on a CPU-only machine: the CPU twice, the same code path
        out = work / f"exact-{i}-{where}"
        rec = Recorder(exact_mlp(where), (x.to(where), y.to(where)), Schedule((0,), 1), out,
                       options=RecorderOptions(batch_size=100 if tiny else 1000))
        rec.measure(0)
        rec.close()
        runs.append(stored_counts(out, 0))
    check(f"Recorder counts on {dev} equal the CPU's ({n_exact} samples, {len(runs[0][0])} sites)",
          same_counts(*runs))

    n = 10 if tiny else 10000  # tiny: one sample of each class, every class needs one
    batch = 5 if tiny else 1000  # tiny: still two batches, so that counts accumulate across batches
    rounds = 1 if tiny else 5
    for name, make in conv_models():
        if time.monotonic() > stop - 10:
            skip(f"recorder: {name}", "the stage's deadline is near")
            continue
        time_measurement(name, make, dev, work, n, batch, rounds, tiny)
        if dev == "cuda":
            torch.cuda.empty_cache()


def time_measurement(name: str, make: Callable[[], Any], dev: str, work: Path, n: int, batch: int, rounds: int,
                     tiny: bool) -> None:
    """One model's measurements (SampleSets and EvalStats; and with Masks) against a plain evaluation pass, in
    `rounds` interleaved rounds after a warm-up: the least times' ratio and the median of the rounds' ratios."""
    import torch

    from nnphases import (
        EvalStats,
        Masks,
        Recorder,
        RecorderOptions,
        SampleSets,
        Schedule,
    )

    torch.manual_seed(0)
    model = make().eval().to(dev)
    xs = torch.rand((n, 1, 32, 32), device=dev)
    ys = (torch.arange(n) % 10).to(dev)
    steps = tuple(range(rounds + 2))
    recs = {label: Recorder(model, (xs, ys), Schedule(steps, 1), work / f"{name}-{label}", measures,
                            options=RecorderOptions(batch_size=batch))
            for label, measures in (("sample_sets+eval_stats", [SampleSets(), EvalStats()]),
                                    ("sample_sets+eval_stats+masks", [SampleSets(), EvalStats(), Masks()]))}
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    @torch.no_grad()
    def plain() -> None:  # what a measurement computes besides its measures: logits, loss, accuracy
        loss, correct = 0.0, 0
        for s in range(0, n, batch):
            logits = model(xs[s:s + batch])
            loss += float(torch.nn.functional.cross_entropy(logits, ys[s:s + batch])) * logits.shape[0]
            correct += int((logits.argmax(1) == ys[s:s + batch]).sum())

    paths: dict[str, Callable[[], None]] = {"plain": plain}
    for label, rec in recs.items():
        paths[label] = functools.partial(measure_next, rec, iter(steps))
    times: dict[str, list[float]] = {k: [] for k in paths}
    writes: dict[str, list[float]] = {k: [] for k in recs}
    for k, fn in paths.items():
        fn()  # warm-up: tracing, first kernel calls, NVRTC
        if k in recs:
            recs[k].flush()
    for _ in range(rounds):
        for k, fn in paths.items():
            sync()
            a = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - a)
            if k in recs:
                # The checkpoint is written on a background thread while training goes on: timed apart, and
                # finished here so that it does not slow the next path down.
                a = time.perf_counter()
                recs[k].flush()
                writes[k].append(time.perf_counter() - a)
    for rec in recs.values():
        rec.close()
    t_plain = min(times["plain"])
    figure(f"recorder: {name} plain evaluation pass", t_plain * 1e3, "ms", samples=n, batch=batch)
    for label in recs:
        median = statistics.median(m / p for m, p in zip(times[label], times["plain"], strict=True))
        figure(f"recorder: {name} {label}", min(times[label]) / t_plain, "x", measure_ms=min(times[label]) * 1e3,
               plain_ms=t_plain * 1e3, background_write_wait_ms=min(writes[label]) * 1e3, median_round_ratio=median,
               rounds=rounds, samples=n, batch=batch,
               target={"bound": 1.2 if "masks" in label else 1.1, "kind": "max"} if name == "vgg11" and not tiny
               else None)
    check(f"{name}: {rounds + 1} measurements of each kind stored", all(
        len(stored_steps(work / f"{name}-{label}")) == rounds + 1 for label in recs))
    for label in recs:  # the masks of a full-size run take gigabytes
        shutil.rmtree(work / f"{name}-{label}", ignore_errors=True)


def measure_next(rec: Any, steps: Iterator[int]) -> None:
    rec.measure(next(steps))


def same_counts(a: tuple[dict[str, Any], Any], b: tuple[dict[str, Any], Any]) -> bool:
    """Two stored (counts per site, class sizes) pairs are identical: the same sites, sizes and every count."""
    return (list(a[0]) == list(b[0]) and a[1].tolist() == b[1].tolist()
            and all((a[0][k] == b[0][k]).all() for k in a[0]))


def stored_steps(path: Path) -> list[int]:
    from nnphases import RunDir

    return list(RunDir(path).completed_steps())


def nccl_worker(opts: argparse.Namespace) -> None:
    """Under torchrun with one rank: the same measurement without a process group and then under one (NCCL on
    the GPU, gloo on the CPU), timed after a warm-up each; the ratio of the two and a check that both stored the
    same counts (a world of one must change nothing but add the all_reduce)."""
    import torch
    import torch.distributed as dist

    from nnphases import Recorder, RecorderOptions, Schedule
    from nnphases.experiments.models import mlp, vgg11

    dev, work, tiny = opts.device, Path(opts.work), opts.tiny
    torch.manual_seed(0)
    model = (mlp(784, 2, 64, 10) if tiny else vgg11(10, in_channels=1)).eval().to(dev)
    n = 256 if tiny else 10000
    shape = (1, 28, 28) if tiny else (1, 32, 32)
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(1)).to(dev)
    y = (torch.arange(n) % 10).to(dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    backend = "nccl" if dev == "cuda" else "gloo"
    best: dict[str, float] = {}
    for world in ("no process group", backend):
        if world == backend:
            if dev == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend)
        out = work / f"nccl-{world.replace(' ', '-')}"
        rec = Recorder(model, (x, y), Schedule((0, 1, 2, 3), 1), out,
                       options=RecorderOptions(batch_size=64 if tiny else 1000))
        rec.measure(0)  # warm-up
        rec.flush()
        times = []
        for step in (1, 2, 3):
            sync()
            a = time.perf_counter()
            rec.measure(step)
            sync()
            times.append(time.perf_counter() - a)
            rec.flush()  # the background write, outside the timing (as in the recorder stage)
        rec.close()
        best[world] = min(times)
    ratio = best[backend] / best["no process group"]
    figure(f"nccl: one {backend} rank through torchrun, measurement vs no process group", ratio, "x",
           with_group_ms=best[backend] * 1e3, without_ms=best["no process group"] * 1e3, samples=n)
    same = same_counts(*(stored_counts(work / f"nccl-{w.replace(' ', '-')}", 3) for w in ("no process group", backend)))
    check(f"{backend}, one rank: the same counts as without a process group ({ratio:.2f}x its time)", same)
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------------- main


def stage_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in NOMINAL]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"stages are {', '.join(NOMINAL)}; got {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same stages on the CPU; GPU parts skipped")
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall time of the whole check (default 420)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "/tmp/device-check",
                    help="folder of the results (default $OUT, else /tmp/device-check)")
    ap.add_argument("--skip-build", action="store_true", help="use the extension already built in place")
    ap.add_argument("--only", type=stage_list, default=None,
                    help=f"comma-separated stages to run (a rerun of what failed): {','.join(NOMINAL)}")
    ap.add_argument("--build-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help=argparse.SUPPRESS)
    ap.add_argument("--worker", choices=("kernels", "recorder", "nccl"), help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--deadline-s", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=tempfile.gettempdir(), help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.build_worker:
        build_worker(args.jobs)
        return 0
    if args.worker:
        {"kernels": kernels_worker, "recorder": recorder_worker, "nccl": nccl_worker}[args.worker](args)
        return 0
    if args.budget_s < 30:
        ap.error(f"--budget-s must be at least 30, got {args.budget_s}")
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
