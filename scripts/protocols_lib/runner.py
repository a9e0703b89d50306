"""The protocols' run: calibrate every job, plan its epochs, train in the pool, draw figures and check findings,
and stop what is still running at the deadline; its state (``OUT/protocols-state.json``) lets a second invocation
skip what is finished and continue what was cut."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .calibration import calibrate
from .common import UsageError, log, processes, read_json, tail, write_text
from .finalize import finalize
from .jobs import Job, job_list, last_sites
from .packing import write_archive
from .pool import Pool, Task, child_env, nnphases
from .summary import write_summary
from .timing import Fit, plan

STATE_VERSION = 1
# Seconds assumed for one job's `nnphases findings` and `nnphases plot` when planning (full runs, smoke runs).
FINALIZE_S = {False: 45.0, True: 12.0}


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
        self.state: dict[str, Any] = read_json(self.state_path)
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
        write_text(self.state_path, json.dumps(self.state, indent=1))

    def task_state(self, key: str) -> dict[str, Any]:
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
        jobs = job_list(self.opts, last_sites())  # checked against the presets: a changed option stops here
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
        # A calibration run measures once per decade; a training run on its preset's schedule.
        sched = ["--schedule", "log", "--per-decade", "1"] if kind == "calib" else []
        return [*nnphases(), "run", "--preset", job.preset, "--out", str(self.run_dir(kind, job, seed)),
                "--epochs", f"{epochs:g}", "--seeds", str(seed), "--device", self.state["device"], "--no-figures",
                *job.args, *sched]

    # phases --------------------------------------------------------------------------------------------------

    def calibrate(self) -> None:
        calibrate(self)

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
                      f"the {allowance:.0f} s each run gets ({processes(self.opts.jobs)}, {seconds:.0f} s left)"
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
                    if self.task_state(key).get("status") != "finished":
                        self.task_state(key)["status"] = "finished"
                    log(f"{key}: finished earlier, skipped")
                    continue
                if (run.parent / "run.json").is_file():
                    log(f"{key}: continues from its last checkpoint")
                cmd = nnphases()[:3] + p["cmd"][str(seed)]
                self.pool.submit(Task(key, "train", job.name, [(cmd, None)],
                                      self.log_path(job, f"train-s{seed}"), self.trained, seed,
                                      priority=int(p["predicted_s"] or 0)))
            if self.job_done(job):
                self.finalize(job)
        self.drive(lambda: not any(t.kind == "train" for t in self.pool.running + self.pool.queue),
                   self.end - self.reserve)

    def trained(self, t: Task) -> None:
        self.account(t)
        st = self.task_state(t.key)
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
            self.fail(job.name, f"seed {t.seed} failed (exit {t.rc}): {tail(t.log)}")
        if not any(x.job == t.job and x.kind == "train" for x in self.pool.running + self.pool.queue) \
                and not t.killed:
            self.finalize(job)
        self.save()
        self.repack({job.group})

    def job_done(self, job: Job) -> bool:
        return all((self.run_dir("train", job, s) / f"seed-{s}" / "DONE").is_file() for s in job.seeds)

    def finalize(self, job: Job, partial: bool = False) -> None:
        finalize(self, job, partial)

    def account(self, t: Task) -> None:
        st = self.task_state(t.key)
        st["wall"] = round(st["wall"] + (t.ended - t.started), 2)
        st["cpu"] = round(st.get("cpu", 0.0) + t.cpu, 2)
        st["attempts"] += 1

    def fail(self, job: str, why: str) -> None:  # this invocation's failures
        self.this_run.setdefault("failures", {}).setdefault(job, []).append(why)

    def note(self, job: str, why: str) -> None:  # what this invocation cut besides the plan
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
                        self.note(t.job, f"seed {t.seed} not started before {why}")
                        self.task_state(t.key)["status"] = f"not started before {why}"
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
            if not self.job_done(job) and job.name in self.state["plan"]:
                self.finalize(job, partial=True)
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
        write_summary(self)

    # main ----------------------------------------------------------------------------------------------------

    def main(self) -> int:
        self.load_jobs()
        for name in {j["name"] for j in self.state["jobs"]} - {j.name for j in self.jobs}:
            if name not in self.state["plan"]:
                self.note(name, "not selected (--only)")
        log(f"protocols ({'smoke' if self.opts.smoke else 'full'}): {len(self.jobs)} jobs, "
            f"{sum(len(j.seeds) for j in self.jobs)} runs, {processes(self.opts.jobs)}, budget "
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
                "complete" if all(self.job_done(j) for j in self.jobs) else "incomplete"
            self.this_run["status"] = status
            self.this_run["elapsed_s"] = round(time.time() - self.t0, 1)
            self.save()
            self.repack()
            log(f"done: {status}; {time.time() - self.t0:.0f} s; summary {self.pack / 'summary.md'}")
        # A run cut by the budget is a result (the summary says what was cut); a failed run is not.
        return 1 if self.this_run.get("failures") else 0
