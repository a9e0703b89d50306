"""The summary of a protocols run, rewritten with the archives: ``summary.json`` for machines, ``summary.md``
for people (what ran, how far each seed got, what the budget cut and why, the findings)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from .common import processes, write_text
from .packing import reached

if TYPE_CHECKING:
    from .runner import Protocols


def write_summary(proto: Protocols) -> None:
    """Writes ``summary.json`` and ``summary.md`` into the pack folder."""
    rows, text = [], []
    for job in proto.state_jobs():
        p = proto.state["plan"].get(job.name, {})
        seeds = []
        for s in job.seeds:
            key = f"train/{job.name}/s{s}"
            st = proto.state["tasks"].get(key, {})
            r = reached(proto.run_dir("train", job, s) / f"seed-{s}")
            running = any(t.key == key for t in proto.pool.running)
            seeds.append({"seed": s, "wall_s": st.get("wall", 0.0), "status": "running" if running else
                          st.get("status", "finished" if r["done"] else "not run"), **r})
        fin = proto.state["jobs_done"].get(job.name, {})
        findings = (proto.out / "runs" / job.name / "findings.txt")
        cuts = ([p["cut"]] if p.get("cut") else []) + proto.this_run.get("notes", {}).get(job.name, [])
        cuts += [f"seed {x['seed']} {x['status']} at epoch {x['epoch']:g} of {p.get('epochs'):g}"
                 if x["epoch"] is not None else f"seed {x['seed']} {x['status']} before its first checkpoint"
                 for x in seeds if x["status"].startswith("stopped")]
        rows.append({"job": job.name, "group": job.group, "protocol": job.protocol,
                     "calibration": proto.state["calibration"].get(job.name), "epochs_planned": p.get("epochs"),
                     "epochs_target": job.target, "epochs_minimum": job.minimum,
                     "predicted_s_per_seed": p.get("predicted_s"), "seeds": seeds, "cut": cuts,
                     "failures": proto.this_run.get("failures", {}).get(job.name, []),
                     "figures": fin.get("figures", 0), "findings_partial": fin.get("partial"),
                     "findings": findings.read_text() if findings.is_file() else None,
                     "archive": f"{job.group}.tar.gz"})
    summary = {"mode": "smoke" if proto.state["smoke"] else "full", "out": str(proto.out),
               "budget_minutes": proto.opts.budget_minutes, "jobs": proto.opts.jobs, "device": proto.state["device"],
               "elapsed_s": round(time.time() - proto.t0, 1), "invocations": proto.state["invocations"],
               "runs": rows, "left_out_of_archives": proto.left_out}
    write_text(proto.pack / "summary.json", json.dumps(summary, indent=1))
    inv = proto.this_run
    text += [f"# Protocols ({summary['mode']}), {inv['started']}",
             "",
             f"Invocation {len(proto.state['invocations'])}: `{' '.join(['scripts/protocols.py'] + inv['argv'])}`; "
             f"budget {proto.opts.budget_minutes:g} min, {processes(proto.opts.jobs)}, device "
             f"{proto.state['device']}; status: {inv['status']}; {summary['elapsed_s']:.0f} s so far.",
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
    if any(proto.left_out.values()):
        text += ["", "## Left out of the archives", ""]
        text += [f"- {x}" for v in proto.left_out.values() for x in v]
    write_text(proto.pack / "summary.md", "\n".join(text) + "\n")
