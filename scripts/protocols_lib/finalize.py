"""A job's figures (``nnphases plot``) and findings (``nnphases findings``) over its seeds' runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .common import REPO, lines, log, tail
from .jobs import Job
from .pool import Task, nnphases

if TYPE_CHECKING:
    from .runner import Protocols


def finalize(proto: Protocols, job: Job, partial: bool = False) -> None:
    """Figures (nnphases plot) and findings (nnphases findings) over the job's seeds."""
    jdir = proto.out / "runs" / job.name
    complete = proto.job_done(job)
    if complete and (jdir / "FINALIZED").is_file():
        return
    runs = [str(proto.run_dir("train", job, s)) for s in job.seeds
            if any((proto.run_dir("train", job, s) / f"seed-{s}" / "checkpoints").glob("step-*"))]
    if not runs:
        return
    key = f"finalize/{job.name}"
    if any(t.key == key for t in proto.pool.running + proto.pool.queue):
        return
    jdir.mkdir(parents=True, exist_ok=True)

    def done(t: Task) -> None:
        proto.account(t)
        figures = jdir / "figures"
        plotted = [Path(line.strip()) for line in lines(jdir / ".plot.txt") if line.strip()]
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
        proto.state["jobs_done"][job.name] = {"figures": moved, "findings": ok, "partial": not complete,
                                              "rc": t.rc}
        # A task stopped after its first command has one exit status.
        for command, rc in zip(("findings", "plot"), t.rcs, strict=False):
            if rc != 0 and not t.killed:
                proto.fail(job.name, f"nnphases {command} failed (exit {rc}): {tail(t.log)}")
        if t.killed:
            proto.note(job.name, f"findings and figures stopped {t.killed}")
        if t.rcs == [0, 0] and ok and complete:
            (jdir / "FINALIZED").write_text("")
        log(f"{job.name}: {moved} figures, findings {'written' if ok else 'failed'}"
            + (" (partial runs)" if not complete else "") + (f" (stopped {t.killed})" if t.killed else "")
            + (f"; see {t.log}" if t.rc else ""))
        proto.save()
        proto.repack({job.group})

    base = nnphases()
    proto.pool.submit(Task(key, "finalize", job.name,
                          [([*base, "findings", *runs], jdir / "findings.txt"),
                           ([*base, "plot", *runs], jdir / ".plot.txt")],
                          proto.log_path(job, "finalize"), done, priority=10 ** 9))
