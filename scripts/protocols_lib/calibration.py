"""Calibration: each job run for a short length and timed from its checkpoints' write times."""

from __future__ import annotations

import collections
import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .common import log, tail
from .jobs import Job, without
from .pool import Task
from .timing import Fit, fit_run, max_fit

if TYPE_CHECKING:
    from .runner import Protocols


def calibrate(proto: Protocols) -> None:
    """Times each job on a short run: one per seed while the slots allow (so the contention is the real one),
    else one per job; jobs that differ only in their loss share one calibration (in a smoke run, the jobs of a
    group do: its lengths are fixed, and each process costs seconds on a CPU)."""
    todo = [j for j in proto.jobs if j.name not in proto.state["calibration"]]
    if not todo:
        return
    twins: dict[str, list[Job]] = {}
    for job in todo:
        key = job.group if proto.opts.smoke else \
            json.dumps([job.preset, without(job.args, "--loss"), job.calib_epochs, job.seeds])
        twins.setdefault(key, []).append(job)
    timed = [group[0] for group in twins.values()]
    all_seeds = proto.opts.jobs >= sum(len(j.seeds) for j in timed)
    log(f"calibration: {len(timed)} short runs for {len(todo)} jobs "
        f"({', '.join(f'{j.name} {j.calib_epochs:g} epochs' for j in timed)})")
    fits: dict[str, list[Fit]] = collections.defaultdict(list)
    waiting = collections.Counter()
    for group in twins.values():
        job = group[0]
        for seed in job.seeds if all_seeds else job.seeds[:1]:
            run = proto.run_dir("calib", job, seed)
            if run.exists():
                shutil.rmtree(run)  # a cut calibration is redone: its times would be wrong
            waiting[job.name] += 1

            def done(t: Task, job: Job = job, group: list[Job] = group, run: Path = run, seed: int = seed) -> None:
                proto.account(t)
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
                            proto.note(j.name, f"not run: its calibration {why}")
                else:
                    log(f"calibration of {job.name} seed {seed} failed (exit {t.rc}); see {t.log}")
                    for j in group:
                        proto.fail(j.name, f"calibration failed (exit {t.rc}): {tail(t.log)}")
                waiting[job.name] -= 1
                if waiting[job.name] == 0 and fits[job.name]:
                    f = max_fit(fits[job.name])
                    for j in group:
                        proto.state["calibration"][j.name] = dataclasses.asdict(f)
                    log(f"calibration {', '.join(j.name for j in group)}: start-up {f.startup:.1f} s, "
                        f"{f.measure:.2f} s per measurement, {1000 * f.step:.2f} ms per step, "
                        f"{f.steps_per_epoch:g} steps per epoch")
                proto.save()

            proto.pool.submit(Task(f"calib/{job.name}/s{seed}", "calib", job.name,
                                   [(proto.command("calib", job, seed, job.calib_epochs), None)],
                                   proto.log_path(job, f"calib-s{seed}"), done, seed))
    # Calibration may take at most a third of the budget; a run stopped there is fitted on its checkpoints.
    proto.drive(lambda: not proto.pool.busy(), min(proto.end - proto.reserve, proto.t0 + proto.budget / 3),
                "the calibration's time limit")
    for job in todo:
        if job.name not in proto.state["calibration"] and not proto.this_run.get("notes", {}).get(job.name) \
                and not proto.this_run.get("failures", {}).get(job.name):
            proto.note(job.name, "not run: its calibration did not start before the calibration's time limit")
