"""Tests of nnphases.analysis.findings on synthetic run directories written directly as parquet files.

The designed runs (2 seeds, 3 layers of 5 nodes, 13 measurements from init to
epoch 50) show every finding of the source; each counterexample breaks one.
``write_runs`` is also used by test_plot.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nnphases.analysis.findings import NAMES, Finding, findings, report
from nnphases.store import SCHEMAS

STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
STEPS_PER_EPOCH = 100
LAYERS = ("1", "3", "5")
NODES = 5

Fn = Callable[[int, np.ndarray], np.ndarray]   # (layer index, epochs) -> layer mean per epoch


def _sig(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x - centre) / width))


def _logx(epochs: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(epochs, 1e-4))     # init (epoch 0) sits far left of every transition


def f_rise_fall(l: int, e: np.ndarray) -> np.ndarray:
    """0.5 at init, up to ~0.75 by epoch 0.1, then down; layer 1 falls most (to ~0.3), deeper layers less."""
    x = _logx(e)
    return 0.5 + 0.25 * _sig(x, -1.7, 0.2) - (0.45 - 0.12 * l) * _sig(x, 0.0, 0.35)


def p_rising(l: int, e: np.ndarray) -> np.ndarray:
    return 0.05 + (0.3 + 0.15 * l) * _sig(_logx(e), -0.5, 0.4)


def u_rise_dip(l: int, e: np.ndarray) -> np.ndarray:
    x = _logx(e)
    return 0.01 + (0.08 + 0.03 * l) * _sig(x, -0.8, 0.3) - 0.015 * _sig(x, 1.2, 0.2)


def loss_val(e: np.ndarray) -> np.ndarray:
    """A plateau at 2.3 that starts to fall around epoch 0.3."""
    return 2.3 - 2.2 * _sig(_logx(e), 0.1, 0.25)


def write_runs(
    root: Path,
    *,
    f: Fn = f_rise_fall,
    p: Fn = p_rising,
    u: Fn = u_rise_dip,
    loss: Callable[[np.ndarray], np.ndarray] = loss_val,
    seeds: tuple[int, ...] = (0, 1),
    layers: tuple[str, ...] = LAYERS,
    steps: tuple[int, ...] = STEPS,
    nodes: int = NODES,
    config: dict | None = None,
    classes: int = 10,
) -> Path:
    """Write ``root/seed-<s>/`` run directories (config.json, per-step parquet tables and the ``class_sizes`` of
    ``classes`` classes in counts.npz); return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"depth": len(layers), "width": nodes, "loss": "ce", "steps_per_epoch": STEPS_PER_EPOCH,
           **(config or {})}
    (root / "config.json").write_text(json.dumps(cfg))
    offsets = np.linspace(-0.08, 0.08, nodes)              # node spread with mean zero
    for s in seeds:
        run = root / f"seed-{s}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({**cfg, "seed": s}))
        rng = np.random.default_rng(s)
        noise = {k: rng.normal(0, 0.004, size=(len(steps), len(layers))) for k in "fpu"}
        for t, step in enumerate(steps):
            epoch = step / STEPS_PER_EPOCH
            ep = np.array([epoch])
            ck = run / "checkpoints" / f"step-{step:012d}"
            ck.mkdir(parents=True)
            np.savez(ck / "counts.npz", class_sizes=np.full(classes, 100, dtype=np.int64))
            node_rows, layer_rows = [], []
            for li, layer in enumerate(layers):
                fl = float(f(li, ep)[0]) + noise["f"][t, li]
                pl = float(p(li, ep)[0]) + noise["p"][t, li]
                ul = float(u(li, ep)[0]) + noise["u"][t, li]
                fn = np.clip(fl + offsets, 0.0, 1.0)
                for i in range(nodes):
                    node_rows.append(dict(seed=s, step=step, epoch=epoch, layer=layer, node=i, f=fn[i],
                                          p=pl, u=ul, h_z_given_y=(1 - pl) * math.log(2),
                                          h_y_given_z=(1 - ul) * math.log(10), dead=False, always_active=False))
                layer_rows.append(dict(seed=s, step=step, epoch=epoch, layer=layer, nodes=nodes, f=float(fn.mean()),
                                       p=pl, u=ul, dead=0, always_active=0))
            lv = float(loss(ep)[0]) * (1 + 0.01 * s)
            stat_rows = [
                dict(seed=s, step=step, epoch=epoch, split="train", loss=0.9 * lv, accuracy=1 - 0.4 * lv),
                dict(seed=s, step=step, epoch=epoch, split="val", loss=lv, accuracy=0.98 - 0.38 * lv),
            ]
            for name, rows in (("nodes", node_rows), ("layers", layer_rows), ("stats", stat_rows)):
                table = pa.Table.from_pandas(pd.DataFrame(rows), schema=SCHEMAS[name], preserve_index=False)
                pq.write_table(table, ck / f"{name}.parquet")
    return root


def by_name(found: list[Finding]) -> dict[str, Finding]:
    assert [x.name for x in found] == list(NAMES)
    return {x.name: x for x in found}


A, B, C, D, E = NAMES


def test_all_hold_on_designed_runs(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "out")
    found = findings(root)
    text = report(found)
    assert all(x.holds for x in found), text
    lines = text.splitlines()
    assert len(lines) == 5 and all(line.startswith("holds: ") for line in lines)
    # Same result from a list of run directories.
    again = findings([root / "seed-0", root / "seed-1"])
    assert [x.holds for x in again] == [True] * 5
    assert [x.detail for x in again] == [x.detail for x in found]


def test_details_carry_the_numbers(tmp_path: Path) -> None:
    found = by_name(findings(write_runs(tmp_path / "out")))
    a = found[A].detail
    assert re.search(r"init 0\.5\d\d, peak 0\.\d+ at epoch 0\.\d+", a), a
    assert "last 0." in a and "rise +" in a and "fall 0." in a
    b = found[B].detail
    assert "peaks at epoch" in b and "val loss starts to fall at epoch" in b and "ratio" in b
    c = found[C].detail
    assert "1 [1]:" in c and "2 [3]:" in c and "3 [5]:" in c and "largest: layer 1" in c
    d = found[D].detail
    assert "3/3 rise" in d and "Spearman(depth, p) = 1.000" in d
    e = found[E].detail
    assert "max 0." in e and "dip 0.0" in e and "needs < 0.5" in e
    text = report(found.values())
    for x in found.values():
        assert x.detail in text


def test_mean_values_match_design(tmp_path: Path) -> None:
    """The init and peak values in detail (a) equal the seed/layer means of the written tables."""
    found = by_name(findings(write_runs(tmp_path / "out")))
    files = sorted((tmp_path / "out").glob("seed-*/checkpoints/*/layers.parquet"))
    layers = pd.concat(pd.read_parquet(p) for p in files)
    mean_f = layers.groupby("step")["f"].mean()
    init = float(re.search(r"init (\d\.\d+)", found[A].detail).group(1))
    peak = float(re.search(r"peak (\d\.\d+)", found[A].detail).group(1))
    assert init == pytest.approx(mean_f.loc[0], abs=5e-4)
    assert peak == pytest.approx(mean_f.loc[mean_f.index > 0].max(), abs=5e-4)


def _only_fails(found: list[Finding], name: str) -> None:
    text = report(found)
    m = by_name(found)
    assert not m[name].holds, text
    assert f"does not hold: {name} -- {m[name].detail}" in text


def test_a_fails_for_monotone_falling_f(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", f=lambda l, e: 0.7 - (0.3 - 0.1 * l) * _sig(_logx(e), -1, 0.5)))
    _only_fails(found, A)
    assert "rise -" in by_name(found)[A].detail or "rise +0.00" in by_name(found)[A].detail


def test_a_fails_for_monotone_rising_f(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", f=lambda l, e: 0.4 + 0.3 * _sig(_logx(e), -1, 0.5)))
    _only_fails(found, A)
    _only_fails(found, B)           # f never falls, so its fall cannot start with the loss's
    assert "does not fall" in by_name(found)[B].detail


def test_b_fails_when_loss_falls_long_before_f(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", loss=lambda e: 2.3 - 2.2 * _sig(_logx(e), -2.0, 0.15)))
    by = by_name(found)
    assert by[A].holds
    _only_fails(found, B)
    assert "starts to fall at epoch 0.01" in by[B].detail


def test_b_fails_when_loss_never_falls(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", loss=lambda e: 2.3 + 0 * e))
    _only_fails(found, B)
    assert "never drops below 0.95" in by_name(found)[B].detail


def test_c_fails_when_deepest_layer_falls_fastest(tmp_path: Path) -> None:
    f = lambda l, e: 0.5 + 0.25 * _sig(_logx(e), -1.7, 0.2) - (0.2 + 0.12 * l) * _sig(_logx(e), 0.0, 0.35)  # noqa: E731
    found = findings(write_runs(tmp_path / "out", f=f))
    by = by_name(found)
    assert by[A].holds and by[B].holds
    _only_fails(found, C)
    assert "largest: layer 3" in by[C].detail


def test_d_fails_when_p_is_lower_in_deeper_layers(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", p=lambda l, e: 0.05 + (0.6 - 0.15 * l) * _sig(_logx(e), -0.5, 0.4)))
    _only_fails(found, D)
    assert "Spearman(depth, p) = -1.000" in by_name(found)[D].detail


def test_d_fails_when_p_falls(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", p=lambda l, e: 0.5 + 0.1 * l - 0.3 * _sig(_logx(e), -0.5, 0.4)))
    _only_fails(found, D)
    assert "0/3 rise" in by_name(found)[D].detail


def test_e_fails_when_u_gets_close_to_one(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", u=lambda l, e: 0.01 + (0.5 + 0.1 * l) * _sig(_logx(e), -0.8, 0.3)))
    _only_fails(found, E)
    assert re.search(r"highest layer u 0\.[6-7]\d\d \(layer 3", by_name(found)[E].detail)


def test_e_fails_when_u_never_rises(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", u=lambda l, e: 0.2 - 0.15 * _sig(_logx(e), -0.8, 0.3)))
    _only_fails(found, E)


def test_e_require_dip(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "out", u=lambda l, e: 0.01 + 0.1 * _sig(_logx(e), -0.8, 0.3) + 0.001 * _logx(e))
    assert by_name(findings(root))[E].holds
    assert not by_name(findings(root, require_dip=True))[E].holds


def test_single_checkpoint(tmp_path: Path) -> None:
    found = findings(write_runs(tmp_path / "out", steps=(0,)))
    assert not any(x.holds for x in found)
    assert all("measurement" in x.detail for x in found), report(found)


def test_two_checkpoints(tmp_path: Path) -> None:
    found = by_name(findings(write_runs(tmp_path / "out", steps=(0, 100))))
    assert not found[A].holds and "only 2 measurement(s)" in found[A].detail
    assert not found[C].holds


def test_single_layer(tmp_path: Path) -> None:
    found = by_name(findings(write_runs(tmp_path / "out", layers=("1",))))
    assert found[A].holds and found[B].holds and found[E].holds
    assert not found[C].holds and "only one layer" in found[C].detail
    assert not found[D].holds and "need at least two" in found[D].detail


def test_no_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "seed-0").mkdir(parents=True)
    (root / "seed-0" / "config.json").write_text("{}")
    found = findings(root)
    assert not any(x.holds for x in found)
    assert all("no layer measurements" in x.detail for x in found)


def test_undefined_p_and_no_validation_loss(tmp_path: Path) -> None:
    """NaN p in every layer (all nodes dead/always active) and only train stats: no exception."""
    root = write_runs(tmp_path / "out", p=lambda l, e: np.full_like(e, np.nan))
    for path in root.glob("seed-*/checkpoints/*/stats.parquet"):
        t = pq.read_table(path).to_pandas()
        pq.write_table(pa.Table.from_pandas(t[t["split"] == "train"], schema=SCHEMAS["stats"], preserve_index=False),
                       path)
    found = by_name(findings(root))
    assert not found[D].holds and "undefined" in found[D].detail
    assert found[B].holds and "train loss starts to fall" in found[B].detail


def test_single_seed_and_no_step_zero(tmp_path: Path) -> None:
    found = by_name(findings(write_runs(tmp_path / "out", seeds=(3,), steps=STEPS[1:])))
    assert "first measurement (step 1, no step 0)" in found[A].detail
