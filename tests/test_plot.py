"""Tests of nnphases.plot on synthetic run directories (see test_findings.write_runs)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.image as mpimg  # noqa: E402
from test_findings import STEPS, write_runs  # noqa: E402

from nnphases.plot import FIGURES, plot  # noqa: E402

EXPECTED = [f"{name}.{ext}" for name in FIGURES for ext in ("png", "svg")]


def _check_files(paths: list[Path], folder: Path) -> None:
    assert [p.name for p in paths] == EXPECTED
    for p in paths:
        assert p.parent == folder and p.is_file() and p.stat().st_size > 5000, p
        if p.suffix == ".png":
            img = mpimg.imread(p)
            h, w = img.shape[:2]
            assert img.ndim == 3 and 500 <= w <= 2500 and 400 <= h <= 1500, (p.name, img.shape)
            assert img[..., :3].std() > 0.05, f"{p.name} looks blank"
        else:
            text = p.read_text()
            assert text.lstrip().startswith("<?xml") and "</svg>" in text


def test_plot_writes_six_files_next_to_the_runs(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no warnings from matplotlib or pandas on regular data
        paths = plot([root / "seed-0", root / "seed-1"])
    _check_files(paths, root / "figures")


def test_plot_from_parent_with_options(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "out", seeds=(0, 1, 2), config={"num_classes": 4})
    out = tmp_path / "figs"
    paths = plot(root, out, formats=("png",), seed=None, title="synthetic")
    assert [p.name for p in paths] == [f"{n}.png" for n in FIGURES]
    assert all(p.parent == out for p in paths)
    paths = plot(root, out, formats=[".pdf"], seed=2)
    assert [p.suffix for p in paths] == [".pdf"] * 3 and all(p.stat().st_size > 1000 for p in paths)


def test_plot_max_line_uses_stored_class_sizes(tmp_path: Path) -> None:
    # The config names a 100-class dataset; the stored class sizes (4 classes) decide.
    root = write_runs(tmp_path / "out", classes=4, config={"num_classes": 100, "dataset": "cifar100"})
    svg = [p for p in plot(root, tmp_path / "a", formats=("svg",)) if p.stem == "layers_fpu"][0].read_text()
    assert "log 4 = 0.500" in svg
    svg = [p for p in plot(root, tmp_path / "b", formats=("svg",), num_classes=100) if p.stem == "layers_fpu"][0]
    assert "log 100 = 0.151" in svg.read_text()


@pytest.mark.parametrize("num_classes", [1, True, 2.5, "10"], ids=["one", "bool", "float", "str"])
def test_plot_num_classes_validation(tmp_path: Path, num_classes: object) -> None:
    root = write_runs(tmp_path / "out", steps=(0, 100))
    with pytest.raises(ValueError, match=f"num_classes must be an integer >= 2, got {num_classes!r}"):
        plot(root, tmp_path / "f", num_classes=num_classes)  # type: ignore[arg-type]
    assert not (tmp_path / "f").exists()


def test_plot_without_stored_class_sizes_names_the_file(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "out", seeds=(0,), steps=(0, 100))
    (root / "seed-0" / "checkpoints" / "step-000000000100" / "counts.npz").unlink()
    with pytest.raises(FileNotFoundError, match="step-000000000100/counts.npz"):
        plot(root, tmp_path / "f")


def test_plot_unknown_seed(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "out")
    with pytest.raises(ValueError, match="seed 7"):
        plot(root, tmp_path / "f", seed=7)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(steps=STEPS[1:]),                       # no step 0: no init panels
        dict(steps=(0,)),                            # init only
        dict(steps=(0, 100)),                        # one measurement after init
        dict(layers=("features.2",), seeds=(5,)),    # one layer, one seed
    ],
    ids=["no-init", "init-only", "one-after-init", "one-layer-one-seed"],
)
def test_plot_sparse_data(tmp_path: Path, kwargs: dict) -> None:
    root = write_runs(tmp_path / "out", **kwargs)
    paths = plot(root, formats=("png",))
    assert [p.name for p in paths] == [f"{n}.png" for n in FIGURES]
    for p in paths:
        assert mpimg.imread(p).shape[1] >= 500


def test_plot_without_stats(tmp_path: Path) -> None:
    root = write_runs(tmp_path / "out")
    for p in root.glob("seed-*/checkpoints/*/stats.parquet"):
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        pq.write_table(t.slice(0, 0), p)
    paths = plot(root, formats=("png",))
    assert (root / "figures" / "curves.png") in paths


def test_plot_without_checkpoints_raises(tmp_path: Path) -> None:
    run = tmp_path / "out" / "seed-0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"seed": 0}))
    with pytest.raises(ValueError, match="no complete checkpoints"):
        plot(tmp_path / "out")


def test_heatmap_rows_follow_layer_order(tmp_path: Path) -> None:
    """Layer 1's nodes (which fall most) are at the top: the top rows at the right edge are the darkest."""
    root = write_runs(tmp_path / "out")
    png = [p for p in plot(root, tmp_path / "f", formats=("png",)) if p.stem == "heatmap_f"][0]
    img = mpimg.imread(png)[..., :3]
    h, w = img.shape[:2]
    # Probe the last column of cells just left of the colour bar area: top third vs bottom third.
    col = img[:, int(w * 0.8), :]
    lum = col @ np.array([0.299, 0.587, 0.114])
    body = lum[int(h * 0.1):int(h * 0.85)]
    top, bottom = body[: len(body) // 3].mean(), body[-len(body) // 3:].mean()
    assert top < bottom    # viridis: low f is dark


@pytest.mark.parametrize("cfg,text", [
    ({"dataset": "fashion-mnist", "model": "mlp", "depth": 5, "width": 80, "loss": "ce"},
     "fashion-mnist, mlp 5x80, ce loss"),
    ({"dataset": "fashion-mnist", "model": "fc_bn", "depth": 3, "width": 256, "loss": "ce"},
     "fashion-mnist, fc_bn 3x256, ce loss"),
    ({"dataset": "fashion-mnist", "model": "vgg11", "depth": 5, "width": 80, "loss": "ce"},
     "fashion-mnist, vgg11, ce loss"),  # depth and width are the MLP defaults, unused by VGG
    ({"depth": 2, "width": 20}, "2x20"),
])
def test_title_describes_the_model(cfg, text):
    from nnphases.plot import _describe

    assert _describe(cfg) == text

