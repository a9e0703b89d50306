#!/usr/bin/env python3
"""Do the fast probes rank the measurements of a run as the released code's probes do? And which reading decides?

Trains source 002's FC-BN net (preset ``source002-code``: FashionMNIST at 32x32, SGD lr 0.002 with momentum 0.9,
batch 128) for ``--epochs`` epochs, measuring at steps 0, 1, 2, 4, ... with several probe variants on the same
checkpoints (each variant its own Recorder, fed the same model state):

- ``fast/running`` and ``fast/batch``: the closed-form probes read with running or batch statistics;
- ``code/batch`` with two seeds (the released protocol as it reads, and its own seed-to-seed spread);
- ``code/running``: the released protocol read with running statistics.

It prints, per layer, each curve's values and the Spearman rank correlation of each variant's test accuracy and
reconstruction error (1 - R^2) with ``code/batch`` seed 0 over the checkpoints, and writes the table as CSV.

    python scripts/probe_agreement.py --epochs 2 --out /tmp/agreement     # about 15 minutes on two CPU cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from nnphases.analysis.statistics import spearman
from nnphases.experiments import train
from nnphases.recording.measures import Probes, SampleSets
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
from nnphases.store import read_table

VARIANTS = {  # name -> (Probes options, seed of the trained probes)
    "a": (dict(mode="fast+code", bn="auto"), 0),  # fast/running, code/batch seed 0
    "b": (dict(mode="fast+code", bn="batch"), 1),  # fast/batch, code/batch seed 1
    "c": (dict(mode="code", bn="running"), 0),  # code/running
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--train-eval", type=int, default=4000, help="training samples the probes are fitted on")
    ap.add_argument("--holdout", type=int, default=12000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0, help="the main network's seed")
    ap.add_argument("--summary-only", action="store_true", help="print the summary of the runs already in --out")
    a = ap.parse_args(argv)
    if a.summary_only:
        summarize(a.out, a.epochs)
        return 0
    if a.out.exists():
        print(f"probe_agreement: --out {a.out} exists; choose a new folder", file=sys.stderr)
        return 2
    cfg = train.resolve("source002-code", {"epochs": a.epochs, "train_eval": a.train_eval, "holdout": a.holdout})
    t0 = time.time()
    tr, va = train.load_data(cfg)
    torch.manual_seed(a.seed)
    model = train.build_model(cfg, tr)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    spe = -(-len(tr) // cfg.optim.batch)
    schedule = Schedule.powers_of_two(a.epochs, spe)
    sub = torch.randperm(len(tr), generator=torch.Generator().manual_seed(a.seed))[: a.train_eval]
    recs = {
        k: Recorder(
            model,
            (va.x, va.y),
            schedule,
            a.out / k,
            [SampleSets(), Probes(**o)],
            train_data=(tr.x[sub], tr.y[sub]),
            seed=s,
            options=RecorderOptions(batch_size=1024),
        )
        for k, (o, s) in VARIANTS.items()
    }
    g = torch.Generator().manual_seed(a.seed)
    step = 0
    while True:
        if step in schedule:
            for rec in recs.values():
                rec.measure(step)
            print(f"step {step}: measured ({time.time() - t0:.0f} s)", flush=True)
        if step == schedule.last:
            break
        if step % spe == 0:
            order = torch.randperm(len(tr), generator=g)
        idx = order[(step % spe) * cfg.optim.batch : (step % spe + 1) * cfg.optim.batch]
        model.train()
        opt.zero_grad()
        nn.functional.cross_entropy(model(tr.x[idx]), tr.y[idx]).backward()
        opt.step()
        step += 1
    for rec in recs.values():
        rec.close()
    summarize(a.out, a.epochs)
    print(f"\n{time.time() - t0:.0f} s")
    return 0


def summarize(out: Path, epochs: float) -> None:
    """Print each variant's curves and its Spearman correlation with code/batch seed 0; write agreement.csv."""
    rows = []
    for k, (_, seed) in VARIANTS.items():
        t = read_table(out / k, "probes")
        t["variant"] = [
            f"{m}/{b}" if m == "fast" else f"{m}/{b}/s{seed}" for m, b in zip(t["mode"], t["bn"], strict=True)
        ]
        rows.append(t)
    table = pd.concat(rows)
    table.to_csv(out / "agreement.csv", index=False)
    ref_name = "code/batch/s0"
    print(f"Spearman with {ref_name} over {table['step'].nunique()} checkpoints ({epochs} epochs):")
    for layer in sorted(set(table["layer"])):
        d = table[table["layer"] == layer]
        ref = d[d["variant"] == ref_name].set_index("step").sort_index()
        for name in sorted(set(d["variant"]) - {ref_name}):
            v = d[d["variant"] == name].set_index("step").sort_index()
            steps = ref.index.intersection(v.index)
            rho = [
                spearman(ref.loc[steps, c].to_numpy(float), v.loc[steps, c].to_numpy(float))
                for c in ("test_accuracy", "reconstruction_nmse")
            ]
            nmse = v.loc[steps, "reconstruction_nmse"].to_numpy(float)
            acc = v.loc[steps, "test_accuracy"].to_numpy(float)
            print(
                f"  {layer} {name:>16}: Spearman accuracy {rho[0]:+.2f}, reconstruction {rho[1]:+.2f}; "
                f"1-R^2 {' '.join(f'{x:.2f}' for x in nmse)}; accuracy {' '.join(f'{x:.2f}' for x in acc)}"
            )
        nmse = ref["reconstruction_nmse"].to_numpy(float)
        acc = ref["test_accuracy"].to_numpy(float)
        print(
            f"  {layer} {ref_name:>16}: (reference); 1-R^2 {' '.join(f'{x:.2f}' for x in nmse)}; "
            f"accuracy {' '.join(f'{x:.2f}' for x in acc)}"
        )
    print(f"steps: {sorted(set(table['step']))}; table: {out / 'agreement.csv'}")


if __name__ == "__main__":
    raise SystemExit(main())
