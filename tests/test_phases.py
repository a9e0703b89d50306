"""Probe phases (source 002) read from probes tables whose curves are known."""

from __future__ import annotations

import pandas as pd
import pytest

from nnphases.analysis.phases import mode_agreement, phase_summary, probe_modes, probe_phases, report

STEPS = [0, 1, 2, 4, 8, 16]


def _table(curves: dict[tuple[str, str], tuple[list[float], list[float]]], seeds=(0,)) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        for (mode, layer), (acc, nmse) in curves.items():
            for step, a, e in zip(STEPS, acc, nmse):
                rows.append(dict(step=step, epoch=step / 8, seed=seed, layer=layer, mode=mode, test_accuracy=a,
                                 reconstruction_nmse=e))
    return pd.DataFrame(rows)


FLAT = [0.5] * 6
UP = [0.1, 0.3, 0.5, 0.6, 0.7, 0.8]


@pytest.mark.parametrize("nmse,onset,falls,rises,phases", [
    ([0.30, 0.30, 0.25, 0.20, 0.22, 0.26], 0.25, True, True, "constant, then falls, then rises"),
    ([0.30, 0.25, 0.20, 0.18, 0.17, 0.16], 0.125, True, False, "falls"),
    ([0.30, 0.30, 0.20, 0.18, 0.17, 0.16], 0.25, True, False, "constant, then falls"),
    ([0.30, 0.30, 0.30, 0.31, 0.35, 0.40], None, False, True, "rises"),
    ([0.30, 0.305, 0.30, 0.296, 0.30, 0.30], None, False, False, "no phase beyond the margin"),
])
def test_reconstruction_phases(nmse, onset, falls, rises, phases):
    (p,) = probe_phases(_table({("fast", "relu1"): (UP, nmse)}))
    assert (p.fall_onset_epoch, p.falls, p.rises, p.phases) == (onset, falls, rises, phases)
    assert p.nmse_min == min(nmse[1:]) and p.nmse_init == nmse[0] and p.nmse_last == nmse[-1]
    assert p.accuracy_rises and (p.accuracy_init, p.accuracy_last) == (0.1, 0.8)


def test_accuracy_flat_does_not_rise():
    (p,) = probe_phases(_table({("fast", "a"): (FLAT, FLAT)}))
    assert not p.accuracy_rises and p.mode == "fast"


def test_older_paper_rows_are_the_text_protocol():
    (p,) = probe_phases(_table({("paper", "a"): (FLAT, FLAT)}))
    assert p.mode == "text"


def test_modes_in_order_and_readings_kept_apart():
    t = _table({("code", "a"): (UP, FLAT), ("fast", "a"): (UP, FLAT), ("text", "a"): (UP, FLAT)})
    t["bn"] = "running"
    assert [p.mode for p in probe_phases(t)] == ["fast", "text", "code"]
    other = t[t["mode"] == "fast"].assign(bn="batch", seed=1)
    modes = probe_modes(pd.concat([t, other]))
    assert sorted(set(modes["mode"])) == ["code", "fast/batch", "fast/running", "text"]


@pytest.mark.parametrize("b_nmse,same,rho", [
    ([0.30, 0.30, 0.25, 0.20, 0.22, 0.26], "agree", "1.00"),  # the same curve
    ([0.20, 0.22, 0.25, 0.30, 0.30, 0.30], "differ", "-0.80"),  # the other way round
])
def test_mode_agreement(b_nmse, same, rho):
    a_nmse = [0.30, 0.30, 0.25, 0.20, 0.22, 0.26]
    t = _table({("fast", "relu1"): (UP, a_nmse), ("code", "relu1"): (UP, b_nmse)})
    ps = probe_phases(t)
    (line,) = mode_agreement(t, ps)
    assert line.startswith(f"relu1 fast vs code: phases {same} ")
    assert line.endswith(f"Spearman over 6 steps: accuracy 1.00, reconstruction {rho}")
    assert line in report(ps, mode_agreement(t, ps))


def test_seeds_are_averaged_and_depth_order_kept():
    t = _table({("fast", "relu1"): (UP, [0.3, 0.2, 0.2, 0.2, 0.2, 0.21]),
                ("fast", "relu2"): (UP, [0.3, 0.2, 0.2, 0.2, 0.25, 0.3])}, seeds=(0, 1))
    t.loc[t.seed == 1, "reconstruction_nmse"] += 0.1  # seed means shift by 0.05
    ps = probe_phases(t)
    assert [(p.layer, p.depth, p.seeds) for p in ps] == [("relu1", 1, 2), ("relu2", 2, 2)]
    assert ps[0].nmse_init == pytest.approx(0.35)
    (line,) = phase_summary(ps)
    assert "relu1 +0.010, relu2 +0.100" in line and "Spearman(depth, rise) = 1.00" in line
    assert report(ps).count("\n") == 2


def test_empty_and_bad_margin():
    assert probe_phases(pd.DataFrame()) == []
    assert report([]) == "no probe results (run with --probes)"
    with pytest.raises(ValueError, match="margin must be a finite non-negative number, got -1"):
        probe_phases(_table({("fast", "a"): (UP, FLAT)}), margin=-1)
