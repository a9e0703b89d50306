"""Tests of nnphases.analysis.plot on synthetic run directories (see test_findings.write_runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.image as mpimg  # noqa: E402
from test_findings import STEPS, write_runs  # noqa: E402

from nnphases.analysis.plot import FIGURES, plot, save_figure  # noqa: E402

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
    from nnphases.analysis.plot import _describe

    assert _describe(cfg) == text


# -- atomic figure files ------------------------------------------------------------------------


def _write_plot(out: Path) -> list[Path]:
    return plot(write_runs(out.parent / "runs", steps=(0, 10, 100)), out, formats=("png", "svg"))


def _write_single_layer(out: Path) -> list[Path]:
    from nnphases.experiments import singlelayer
    from nnphases.experiments.data import synthetic

    ds = synthetic(n=60, shape=(1, 4, 4))
    rec = singlelayer.run_single_layer(ds, ds, epochs=1, batch=16, steps=[0, 3], group_class=1)
    return singlelayer.plot_single_layer(rec, out)


def _write_theory(out: Path) -> list[Path]:
    from nnphases.experiments.theory import default_data, plot_theory, train_logistic

    return plot_theory({"seed 0": train_logistic(default_data(0), steps=20, record_every=10)}, out)


def _fail_in_savefig(monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def partial(self, fname, **kwargs):  # half a file, then the error a kill would be
        if hasattr(fname, "write"):
            fname.write(b"\x89PNG partial")
        else:
            Path(fname).write_bytes(b"\x89PNG partial")
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(Figure, "savefig", partial)


def _fail_in_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError("disk failed")

    monkeypatch.setattr(os, "fsync", fsync)


# (writer, the first file it writes)
WRITERS = [
    pytest.param(_write_plot, "heatmap_f.png", id="plot"),
    pytest.param(_write_single_layer, "weights.png", id="singlelayer"),
    pytest.param(_write_theory, "theory.png", id="theory"),
]


@pytest.mark.parametrize("fail, error", [
    pytest.param(_fail_in_savefig, RuntimeError, id="savefig-raises-after-some-bytes"),
    pytest.param(_fail_in_fsync, OSError, id="fsync-fails-while-writing"),
])
@pytest.mark.parametrize("writer, first", WRITERS)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_failed_figure_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer, first: str,
                                            fail, error: type[Exception], existing: bool) -> None:
    out = tmp_path / "figures"
    out.mkdir()
    if existing:
        (out / first).write_bytes(b"the previous figure")
    fail(monkeypatch)
    with pytest.raises(error):
        writer(out)
    monkeypatch.undo()
    # Nothing under a final name but the untouched previous file, and no temporary files.
    assert sorted(p.name for p in out.iterdir()) == ([first] if existing else [])
    if existing:
        assert (out / first).read_bytes() == b"the previous figure"


@pytest.mark.parametrize("writer, first", WRITERS)
def test_figure_writers_write_whole_files(tmp_path: Path, writer, first: str) -> None:
    paths = writer(tmp_path / "figures")
    assert first in [p.name for p in paths]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in paths)
    assert all(p.stat().st_size > 1000 for p in paths)


def test_kill_while_drawing_leaves_no_file(tmp_path: Path) -> None:
    """A process killed (SIGKILL) after savefig has produced some bytes leaves nothing under the final name."""
    child = textwrap.dedent("""
        import sys, time
        from matplotlib.figure import Figure
        from nnphases.analysis.plot import save_figure

        def slow(self, fname, **kwargs):
            fname.write(b"\\x89PNG partial")
            print("drawing", flush=True)
            time.sleep(60)

        Figure.savefig = slow
        save_figure(Figure(), sys.argv[1], "fig", ["png", "svg"])
    """)
    out = tmp_path / "figures"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", child, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "drawing"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("formats, error, fragment", [
    pytest.param("png", TypeError, "formats must be a sequence of file extensions", id="str"),
    pytest.param(["png", "xyz"], ValueError, "formats: 'xyz' is not a format matplotlib writes", id="unknown"),
])
def test_save_figure_checks_formats_before_writing(tmp_path: Path, formats, error: type[Exception],
                                                   fragment: str) -> None:
    from matplotlib.figure import Figure

    with pytest.raises(error, match=fragment):
        save_figure(Figure(), tmp_path, "fig", formats)
    assert list(tmp_path.iterdir()) == []


def test_save_figure_accepts_dotted_formats(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    paths = save_figure(fig, tmp_path / "new", "fig", [".PNG", "svg"])
    assert [p.name for p in paths] == ["fig.png", "fig.svg"] and all(p.stat().st_size > 1000 for p in paths)


def test_plot_of_one_run_folder_writes_into_it(tmp_path: Path) -> None:
    """A Recorder's folder (the run itself, no seed subfolders): its figures go into it, not into its parent, where
    a second run's would overwrite them."""
    root = write_runs(tmp_path / "out")
    paths = plot(root / "seed-0", formats=("png",))
    assert {p.parent for p in paths} == {root / "seed-0" / "figures"}


def test_plot_removes_what_a_killed_plot_left(tmp_path: Path) -> None:
    import os
    import time

    root = write_runs(tmp_path / "out")
    figures = root / "figures"
    figures.mkdir()
    stale, fresh = figures / ".tmp-curves.png-0badf00d", figures / ".tmp-curves.png-5eed5eed"
    stale.write_bytes(b"half a figure")
    fresh.write_bytes(b"another plot's, being written")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    plot(root, formats=("png",))
    assert not stale.exists() and fresh.exists()
