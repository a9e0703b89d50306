"""Probes in the Recorder: the same evaluation pass feeds the sample-set counts and the probes' scores;
results are Parquet rows of the run; bad layer names list the model's layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from nnphases.experiments import data
from nnphases.recording.measures import EvalStats, Probes, SampleSets
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
from nnphases.store import read_table


def _setup(tmp_path, probes, **kw):
    ds = data.synthetic(n=1200, num_classes=4, shape=(1, 4, 4), seed=3)
    tr, va = data.stratified_split(ds.y, 400, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    layers = None if probes is True else tuple(probes)
    return Recorder(model, (ds.x[va], ds.y[va]), Schedule((0, 1), 10), tmp_path / "run",
                    [SampleSets(), EvalStats(), Probes(layers=layers, **kw)], train_data=(ds.x[tr], ds.y[tr]),
                    options=RecorderOptions(batch_size=100))


_QUICK_PAPER = dict(classifier_epochs=3, decoder_epochs=2)


def test_probes_rows_per_layer(tmp_path):
    rec = _setup(tmp_path, probes=True)
    rec.measure(0)
    rec.close()
    t = read_table(tmp_path / "run", "probes")
    assert list(t.layer) == ["2", "4"]
    assert ((t.test_accuracy > 0.5) & (t.test_accuracy <= 1)).all()  # synthetic classes are separable
    assert ((t.train_accuracy >= 0) & (t.train_accuracy <= 1)).all()
    assert np.isfinite(t.reconstruction_nmse).all() and (t.reconstruction_nmse >= 0).all()
    assert (t.n_train == 800).all() and (t.n_test == 400).all()
    assert set(t.reduction) == {"none"}
    # counts from the same pass are there too
    assert len(read_table(tmp_path / "run", "layers")) == 2


def test_unknown_probe_layer_lists_sites(tmp_path):
    with pytest.raises(ValueError, match=r"probe_layers: no ReLU site named \['9'\].*'2', '4'"):
        _setup(tmp_path, probes=["9"])
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_both_modes_rows(tmp_path):
    rec = _setup(tmp_path, probes=["4"], mode="both", paper=_QUICK_PAPER)
    rec.measure(0)
    rec.measure(1)
    rec.close()
    t = read_table(tmp_path / "run", "probes").sort_values(["step", "mode"])
    assert list(zip(t.step, t.layer, t["mode"])) == [(0, "4", "fast"), (0, "4", "text"), (1, "4", "fast"),
                                                      (1, "4", "text")]
    paper = t[t["mode"] == "text"]  # "both" is fast+text, by its older name
    assert ((paper.test_accuracy >= 0) & (paper.test_accuracy <= 1)).all()
    assert ((paper.train_accuracy >= 0) & (paper.train_accuracy <= 1)).all()
    assert np.isfinite(paper.reconstruction_nmse).all() and paper.ridge.isna().all()
    assert (t.n_train == 800).all() and (t.n_test == 400).all()


@pytest.mark.parametrize("warm", [False, True])
def test_paper_warm_start(tmp_path, warm):
    """Warm start continues from the previous measurement's models: with a frozen network, a second fit
    from the first's weights lowers the reconstruction error, while a cold refit repeats it exactly."""
    rec = _setup(tmp_path, probes=["2"], mode="paper", warm_start=warm, paper=_QUICK_PAPER)
    rec.measure(0)
    rec.measure(1)
    rec.close()
    t = read_table(tmp_path / "run", "probes").sort_values("step")
    first, second = t.reconstruction_mse.to_numpy()
    if warm:
        assert second < first
    else:
        assert second == first


def test_paper_mode_memory_check(tmp_path, monkeypatch):
    from nnphases.recording import plan

    monkeypatch.setattr(plan, "free_memory", lambda device: 10**5)
    with pytest.raises(ValueError, match=r"800 training samples at sites \['2', '4'\].*GiB is free"):
        _setup(tmp_path, probes=True, mode="paper")
    _setup(tmp_path, probes=True, mode="fast")  # fast mode keeps nothing


@pytest.mark.parametrize("mode", ["slow", "", None, "Fast"])
def test_bad_probe_mode(tmp_path, mode):
    with pytest.raises(ValueError, match=f"mode \\(--probe-mode\\) must be one of .*got {mode!r}"):
        _setup(tmp_path, probes=True, mode=mode)


def test_probes_need_training_data(tmp_path):
    ds = data.synthetic(n=100, num_classes=2, shape=(1, 2, 2), seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="probes need training data: pass train_data"):
        Recorder(model, (ds.x, ds.y), Schedule((0,), 1), tmp_path / "r", [SampleSets(), Probes()])


def test_plot_draws_probes(tmp_path):
    from matplotlib.image import imread

    from nnphases.analysis.plot import plot

    rec = _setup(tmp_path, probes=True)
    rec.measure(0)
    rec.measure(1)
    rec.close()
    written = plot([tmp_path / "run"], tmp_path / "fig", formats=("png",))
    probes_png = tmp_path / "fig" / "probes.png"
    assert probes_png in written
    assert imread(probes_png).shape[0] > 100


def test_paper_layers_subset(tmp_path):
    rec = _setup(tmp_path, probes=True, mode="both", paper_layers=["4"], paper=_QUICK_PAPER)
    rec.measure(0)
    rec.close()
    t = read_table(tmp_path / "run", "probes")
    assert sorted(zip(t.layer, t["mode"])) == [("2", "fast"), ("4", "fast"), ("4", "text")]


@pytest.mark.parametrize("kw,match", [
    (dict(probes=True, mode="both", paper_layers=["9"]), r"paper_layers: \['9'\] are not among the probed"),
    (dict(probes=["2"], mode="both", paper_layers=["4"]), r"paper_layers: \['4'\] are not among the probed"),
    (dict(probes=True, mode="fast", paper_layers=["4"]), r"paper_layers \['4'\] need fast and trained probes"),
])
def test_bad_paper_layers(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _setup(tmp_path, **kw)


def test_fast_train_accuracy_without_a_second_pass(tmp_path, monkeypatch):
    """With memory to spare the fast probes keep their training features and score the train accuracy in fit:
    one pass over train_eval fewer, the same rows as with the second pass."""
    from nnphases.recording import plan

    passes = {}
    for name, free in (("kept", 10**12), ("second-pass", 10**5)):
        monkeypatch.setattr(plan, "free_memory", lambda device, free=free: free)
        rec = _setup(tmp_path / name, probes=True)
        calls = []
        original = rec._run_pass
        monkeypatch.setattr(rec, "_run_pass", lambda p, wanted: calls.append(p) or original(p, wanted))
        rec.measure(0)
        rec.close()
        passes[name] = calls
    assert passes == {"kept": ["train", "eval"], "second-pass": ["train", "rescore", "eval"]}
    kept, second = (read_table(tmp_path / n / "run", "probes") for n in ("kept", "second-pass"))
    pd.testing.assert_frame_equal(kept, second)


def test_decoder_column(tmp_path):
    rec = _setup(tmp_path, probes=["4"], mode="both", paper=_QUICK_PAPER, decoder="random-features",
                 fast={"decoder_width": 32})
    rec.measure(0)
    rec.close()
    t = read_table(tmp_path / "run", "probes")
    assert sorted(zip(t["mode"], t.decoder)) == [("fast", "random-features-32"), ("text", "dense")]


def test_paper_probes_on_a_conv_site(tmp_path):
    """Conv sites get the transposed-convolution decoder from their [C, h, w] activations to the image."""
    ds = data.synthetic(n=600, num_classes=3, shape=(1, 8, 8), seed=1)
    tr, va = data.stratified_split(ds.y, 200, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64, 3))
    rec = Recorder(model, (ds.x[va], ds.y[va]), Schedule((0,), 10), tmp_path / "run",
                   [SampleSets(), Probes(mode="both", paper=dict(_QUICK_PAPER, channels=8))],
                   train_data=(ds.x[tr], ds.y[tr]), options=RecorderOptions(batch_size=100))
    rec.measure(0)
    rec.close()
    t = read_table(tmp_path / "run", "probes").sort_values("mode")
    assert list(zip(t["mode"], t.decoder, t.features, t.reduction)) == [("fast", "linear", 256, "none"),
                                                                         ("text", "conv", 256, "none")]
    # A 4-channel 3x3 conv of an 8x8 image holds nearly all of it: the closed form recovers it; the paper
    # decoder, after 8 Adam updates, has only a finite error to show.
    fast_nmse, paper_nmse = t.reconstruction_nmse
    assert 0 <= fast_nmse < 0.1 and np.isfinite(paper_nmse) and paper_nmse >= 0
    assert t.test_accuracy.between(0, 1).all()


@pytest.mark.parametrize("kw,match", [
    (dict(fast={"decoder_width": 0}), "decoder_width must be a positive int, got 0"),
    (dict(mode="paper", paper={"channels": -1}), "channels must be a positive int, got -1"),
])
def test_bad_probe_options_fail_at_construction(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _setup(tmp_path, probes=True, **kw)
