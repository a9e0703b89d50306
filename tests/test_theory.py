"""The single-layer theory of source 002 section 3 (nnphases.experiments.theory): reconstruction error
falls then rises when a few small-subset samples must be fitted on the noisy attribute,
and does not rise without them."""

import math

import numpy as np
import pytest

from nnphases.experiments.theory import (
    default_data,
    phases,
    reconstruction_error,
    report,
    train_logistic,
)

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def runs():
    return {s: train_logistic(default_data(s), seed=s) for s in SEEDS}


@pytest.mark.parametrize("seed", SEEDS)
def test_falls_then_rises(runs, seed):
    rec = runs[seed]
    ph = phases(rec)
    i = ph["min_index"]
    print(f"\nseed {seed}: {report(rec)}")
    assert ph["falls"] and ph["rises"], ph
    assert 0 < ph["min_step"] < rec["step"][-1]
    # at the minimum the large subsets are fitted and the small ones are not yet
    assert rec["acc_large"][i] >= 0.95
    # by the end the model has fitted the few
    assert rec["acc_small"][-1] > rec["acc_small"][i] + 0.5
    assert rec["acc_large"][-1] >= 0.95
    # the weight has shifted onto the noisy attribute 2
    w_min, w_end = rec["w"][i], rec["w"][-1]
    assert abs(w_end[1]) / abs(w_end[0]) > 2 * abs(w_min[1]) / abs(w_min[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_control_without_small_subsets_does_not_rise(seed):
    ds = default_data(seed)
    ds = ds.subset(ds.group == 0)
    rec = train_logistic(ds, seed=seed)
    ph = phases(rec)
    print(f"\nseed {seed} control (no small subsets): {report(rec)}")
    assert not ph["rises"], ph
    assert ph["final"] - ph["min"] < 0.01
    assert ph["final"] < ph["initial"]
    assert math.isnan(rec["acc_small"][-1])
    assert rec["acc_large"][-1] == 1.0


def test_reconstruction_error_matches_least_squares():
    ds = default_data(7)
    x = ds.x.flatten(1).double().numpy()
    xc = x - x.mean(0)
    sigma = xc.T @ xc / len(x)
    rng = np.random.default_rng(0)
    for _ in range(5):
        w, b = rng.normal(size=2), rng.normal()
        z = x @ w + b
        design = np.stack([z, np.ones_like(z)], axis=1)
        coef, *_ = np.linalg.lstsq(design, x, rcond=None)
        err = np.mean(np.sum((x - design @ coef) ** 2, axis=1)) / np.trace(sigma)
        assert reconstruction_error(w, sigma) == pytest.approx(err, rel=1e-9, abs=1e-12)
        assert 0.0 <= err <= 1.0
    assert reconstruction_error(np.zeros(2), sigma) == 1.0


def test_record_shapes_and_phases_margins():
    rec = train_logistic(default_data(0), steps=20, record_every=7)
    assert list(rec["step"]) == [0, 7, 14, 20]
    assert rec["w"].shape == (4, 2) and rec["recon"].shape == (4,)
    flat = dict(step=np.arange(5), recon=np.array([0.5, 0.499, 0.498, 0.499, 0.5]))
    ph = phases(flat)
    assert not ph["falls"] and not ph["rises"]  # below the absolute floor of 0.01
    vee = dict(step=np.arange(3), recon=np.array([0.6, 0.1, 0.4]))
    ph = phases(vee)
    assert ph["falls"] and ph["rises"] and ph["min_step"] == 1


def test_figure_written(tmp_path, capsys):
    from matplotlib.image import imread

    from nnphases.experiments.theory import main

    paths = main(["--seeds", "0", "--steps", "300", "--out", str(tmp_path)])
    assert [p.name for p in paths] == ["theory.png", "theory.svg"]
    assert imread(tmp_path / "theory.png").shape[0] > 100
    assert "seed 0: recon error" in capsys.readouterr().out
