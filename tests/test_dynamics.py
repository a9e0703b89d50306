"""nnphases dynamics: sample-set churn and node redundancy from the stored masks, checked against the same
quantities computed here from the unpacked masks with NumPy; a run with 601 evaluation samples whose masks were
written in batches of 77, so that neither the rows nor the batches are whole words."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnphases.analysis.dynamics import GROUPS, dynamics
from nnphases.store import RunDir, read_records, read_table

SAMPLES = 601


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nnphases.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dyn") / "r"
    done = _cli("run", "--dataset", "synthetic", "--holdout", str(SAMPLES), "--eval-batch", "77", "--depth", "2",
                "--width", "24", "--epochs", "1", "--seeds", "0,1", "--per-decade", "4", "--keep-masks", "--keep-records",
                "--no-figures", "--device", "cpu", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def bits(run: RunDir, step: int, layer: str) -> np.ndarray:
    """[samples, nodes] booleans of a stored layer."""
    packed = run.read_masks(step, layer)
    return np.unpackbits(packed, axis=1, bitorder="little")[:, :SAMPLES].T.astype(bool)


def test_churn_and_redundancy_equal_numpy_on_the_unpacked_masks(masked_run):
    d = dynamics(masked_run)
    assert set(d.churn["seed"]) == {0, 1} and d.skipped == []
    for seed in (0, 1):
        run = RunDir(masked_run / f"seed-{seed}")
        steps = run.completed_steps()
        churn = d.churn[d.churn["seed"] == seed]
        assert len(churn) == 2 * (len(steps) - 1)  # two layers, every consecutive pair
        for prev, step in itertools.pairwise(steps):
            for layer in ("relu1", "relu2"):
                a, b = bits(run, prev, layer), bits(run, step, layer)
                inter, union = (a & b).sum(axis=0), (a | b).sum(axis=0)
                row = churn[(churn["step"] == step) & (churn["layer"] == layer)].iloc[0]
                assert row["prev_step"] == prev and row["nodes"] == a.shape[1]
                some = union > 0
                assert row["churn"] == pytest.approx(np.mean(1 - inter[some] / union[some]), rel=1e-12)
                assert row["churn_pooled"] == pytest.approx(1 - inter.sum() / union.sum(), rel=1e-12)
                assert row["moving"] == np.mean(inter != union)
        red = d.redundancy[d.redundancy["seed"] == seed]
        assert len(red) == 2 * len(steps)
        for step in steps:
            for layer in ("relu1", "relu2"):
                x = bits(run, step, layer)
                live = (x.sum(axis=0) > 0) & (x.sum(axis=0) < SAMPLES)
                row = red[(red["step"] == step) & (red["layer"] == layer)].iloc[0]
                assert row["live"] == live.sum()
                if live.sum() < 2:
                    assert np.isnan(row["mean_abs_phi"])
                    continue
                phi = np.corrcoef(x[:, live].T.astype(np.float64))  # Pearson on 0/1 columns is phi
                off = ~np.eye(live.sum(), dtype=bool)
                assert row["mean_abs_phi"] == pytest.approx(np.abs(phi[off]).mean(), rel=1e-9)
                assert row["mean_phi"] == pytest.approx(phi[off].mean(), rel=1e-9, abs=1e-12)
                assert row["duplicates"] == np.mean((np.where(off, phi, -np.inf) > 0.99).any(axis=1))
        for step in steps:  # the binary-code score of 24 // 4 = 6 samples spread over the set
            for layer in ("relu1", "relu2"):
                x = bits(run, step, layer)
                chosen = np.unique(np.linspace(0, SAMPLES - 1, 6).astype(np.int64))
                agree = (x[chosen][:, None, :] == x[chosen][None, :, :]).sum(axis=2).astype(np.float64)
                row = red[(red["step"] == step) & (red["layer"] == layer)].iloc[0]
                if np.linalg.matrix_rank(agree) < len(chosen):
                    assert row["code_score"] == -np.inf
                else:
                    assert row["code_score"] == pytest.approx(np.linalg.slogdet(agree)[1], rel=1e-12)


def test_the_command_writes_tables_in_each_run_and_a_figure(masked_run, tmp_path):
    done = _cli("dynamics", str(masked_run), "--format", "png", "--out", str(tmp_path / "figs"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "figs" / "dynamics.png").stat().st_size > 0
    d = dynamics(masked_run)
    for seed in (0, 1):
        for name, want in (("dynamics_churn", d.churn), ("dynamics_redundancy", d.redundancy),
                           ("dynamics_fitted", d.fitted), ("dynamics_late", d.late)):
            got = pd.read_parquet(masked_run / f"seed-{seed}" / f"{name}.parquet")
            mine = want[want["seed"] == seed].drop(columns="run").reset_index(drop=True)
            pd.testing.assert_frame_equal(got, mine)


@pytest.mark.parametrize("args, message", [
    (["--layers", "relu7"], r"layers \['relu7'\] have no stored masks at step \d+ of .*; stored: \['relu1', 'relu2'\]"),
    (["--layers", ","], r"--layers must name at least one layer, got ','"),
    (["--format", ""], r"--format must name at least one file format"),
])
def test_bad_options_are_named(masked_run, args, message):
    import re

    done = _cli("dynamics", str(masked_run), *args)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(message, lines[0]), done.stderr


def test_a_run_without_masks_says_how_to_record_them(tmp_path):
    out = tmp_path / "plain"
    done = _cli("run", "--dataset", "synthetic", "--holdout", "300", "--depth", "1", "--width", "8", "--epochs", "0.2",
                "--seeds", "0", "--per-decade", "2", "--no-figures", "--device", "cpu", "--out", str(out))
    assert done.returncode == 0, done.stderr
    done = _cli("dynamics", str(out))
    assert done.returncode != 0 and "holds masks; record with --keep-masks" in done.stderr


def test_records_agree_with_the_stats_table(masked_run):
    run = RunDir(masked_run / "seed-0")
    stats = read_table(masked_run / "seed-0", "stats")
    for step in run.completed_steps():
        correct, loss = read_records(run.checkpoint_path(step))
        assert correct.shape == loss.shape == (SAMPLES,) and loss.dtype == np.float32
        val = stats[(stats["step"] == step) & (stats["split"] == "val")].iloc[0]
        assert correct.sum() == round(val["accuracy"] * SAMPLES)  # the same predictions, counted
        assert float(loss.astype(np.float64).mean()) == pytest.approx(val["loss"], rel=1e-6)


def test_fitted_and_late_equal_a_direct_count(masked_run):
    d = dynamics(masked_run)
    for seed in (0, 1):
        run = RunDir(masked_run / f"seed-{seed}")
        steps = run.completed_steps()
        correct = np.stack([read_records(run.checkpoint_path(s))[0] for s in steps])
        fit = []
        for i in range(SAMPLES):  # sample by sample: the first checkpoint from which it stays correct
            k = next((k for k in range(len(steps)) if correct[k:, i].all()), None)
            fit.append(-1 if k is None else steps[k])
        fit = np.array(fit)
        ends = np.sort(fit[fit >= 0])
        settled = int(ends[int(np.ceil(0.9 * len(ends))) - 1]) if len(ends) else -1
        fitted = d.fitted[d.fitted["seed"] == seed].reset_index(drop=True)
        assert list(fitted["step"]) == steps and set(fitted["settled"]) == {settled}
        for k, s in enumerate(steps):
            assert fitted.loc[k, "fitted"] == np.mean((fit >= 0) & (fit <= s))
            assert fitted.loc[k, "correct"] == correct[k].mean()
        group = np.where(fit < 0, 2, np.where(fit <= settled, 0, 1))
        late = d.late[d.late["seed"] == seed]
        for prev, step in itertools.pairwise(steps):
            for layer in ("relu1", "relu2"):
                a, b = bits(run, prev, layer), bits(run, step, layer)
                for g, name in enumerate(GROUPS):
                    row = late[(late["step"] == step) & (late["layer"] == layer) & (late["group"] == name)].iloc[0]
                    inter, union = (a & b)[group == g].sum(), (a | b)[group == g].sum()
                    assert row["samples"] == (group == g).sum()
                    if union:
                        assert row["churn_pooled"] == pytest.approx(1 - inter / union, rel=1e-12)
                    else:
                        assert np.isnan(row["churn_pooled"])
