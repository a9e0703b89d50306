"""Single-layer analysis (spec §2, source 002 Figures 1 to 6) on quick FashionMNIST data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnphases.experiments import singlelayer
from nnphases.experiments.data import fashion_mnist

try:
    fashion_mnist(train=False)
    HAVE_FASHION = True
except FileNotFoundError:
    HAVE_FASHION = False

needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason="FashionMNIST not installed (apt-get install dataset-fashion-mnist)"
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``main(quick=True)`` once, capturing the record it plots. One thread: this tiny
    model runs ~10x faster without thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    captured = {}
    original = singlelayer.plot_single_layer

    def capture(record, out_dir, formats=("png", "svg")):
        captured["record"] = record
        return original(record, out_dir, formats=formats)

    out = tmp_path_factory.mktemp("singlelayer")
    try:
        singlelayer.plot_single_layer = capture
        paths = singlelayer.main(out, quick=True)
    finally:
        singlelayer.plot_single_layer = original
        torch.set_num_threads(threads)
    return captured["record"], paths, out


def test_power_of_two_steps():
    assert singlelayer.power_of_two_steps(0) == [0]
    assert singlelayer.power_of_two_steps(8) == [0, 1, 2, 4, 8]
    assert singlelayer.power_of_two_steps(10) == [0, 1, 2, 4, 8, 10]


@needs_fashion
def test_record_keys_and_shapes(quick_run):
    rec, _, _ = quick_run
    steps = rec["steps"]
    s = len(steps)
    assert steps[0] == 0 and steps[-1] == rec["config"]["total_steps"]
    assert np.all(np.diff(steps) > 0)
    for key in ("train_acc", "test_acc", "train_loss", "test_loss", "test_recon"):
        assert rec[key].shape == (s,)
        assert np.all(np.isfinite(rec[key]))
    assert rec["weights"].shape == (s, 10, 784)
    assert rec["bias"].shape == (s, 10)
    assert rec["image_shape"] == (28, 28)
    assert rec["group_loss"].shape == (s, 3) and rec["group_acc"].shape == (s, 3)
    assert rec["group_names"] == ("small", "typical", "large")
    n_c = len(rec["dots"])
    assert n_c == 600  # stratified 6,000-sample subset: 600 per class
    assert rec["group_index"].shape == (n_c,)
    # Bottom / top 10 % by dot product with the class mean, the rest typical.
    assert tuple(rec["group_sizes"]) == (60, 480, 60)
    lo, hi = rec["thresholds"]
    assert rec["dots"][rec["group_index"] == 0].max() < lo <= rec["dots"][rec["group_index"] == 1].min()
    assert rec["dots"][rec["group_index"] == 2].min() >= hi
    assert rec["hist_counts"].sum() == n_c and len(rec["hist_edges"]) == len(rec["hist_counts"]) + 1
    # The weights change, and at step 0 they are the untrained initialisation.
    assert not np.allclose(rec["weights"][0], rec["weights"][-1])
    # 10 outputs cannot hold a 784-pixel image: the reconstruction error lies strictly inside (0, 1).
    assert np.all((rec["test_recon"] > 0) & (rec["test_recon"] < 1))


@needs_fashion
def test_accuracy_rises(quick_run):
    rec, _, _ = quick_run
    assert rec["test_acc"][0] < 0.3  # chance level before training
    assert rec["test_acc"][-1] > 0.6  # ~0.82 in practice
    assert rec["train_acc"][-1] > 0.6


@needs_fashion
def test_group_loss_ordering(quick_run):
    """What holds on this data (class 0, T-shirt/top), as the paper says: at the end
    the small-dot-product group has the highest loss, the large group the lowest
    (measured: ~1.1 > ~0.6 > ~0.08), and all three losses fell from their start."""
    rec, _, _ = quick_run
    small, typical, large = rec["group_loss"][-1]
    assert small > typical > large
    assert np.all(rec["group_loss"][-1] < rec["group_loss"][0])


@needs_fashion
def test_plots_written_and_readable(quick_run):
    import matplotlib.image as mpimg

    _, paths, out = quick_run
    names = {p.name for p in paths}
    for stem in ("weights", "group_loss", "dot_products", "accuracy"):
        assert f"{stem}.png" in names and f"{stem}.svg" in names
    for p in paths:
        assert p.parent == out and p.stat().st_size > 0
        if p.suffix == ".png":
            img = mpimg.imread(p)
            assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
            assert img[..., :3].std() > 0.01  # not blank
        else:
            assert p.read_text().lstrip().startswith("<?xml")


def test_run_rejects_bad_group_class():
    from nnphases.experiments.data import synthetic

    ds = synthetic(n=60, shape=(1, 4, 4))
    with pytest.raises(ValueError):
        singlelayer.run_single_layer(ds, ds, epochs=1, group_class=10)
    rec = singlelayer.run_single_layer(ds, ds, epochs=2, batch=16, steps=[0, 3, 100], group_class=1)
    assert list(rec["steps"]) == [0, 3]
    assert rec["weights"].shape == (2, 10, 16)
