"""Figures of recorded runs, after the source's figures (spec §1).

About 540 lines: one function per figure, sharing the axes and the layout helpers of this file.

:func:`plot` reads run directories with :func:`nnphases.store.runs.read_table`
and writes three figures, each in every requested format:

- ``heatmap_f``: activation fraction ``f[l,i]`` of every hidden node (rows,
  shallowest layer at the top, nodes in index order; thin lines between
  layers, layer labels on the left) against epoch on a log axis. Cells are
  drawn with ``pcolormesh`` and span the geometric midpoints between
  measurement epochs (the outer cells extend by half the neighbouring
  log-step). Initialisation (step 0, epoch 0, which a log axis cannot
  show) is its own column in a narrow panel at the left, marked ``init``.
  One seed (the first by default) or the mean over seeds (``seed=None``).
- ``layers_fpu``: ``f[l]``, ``p[l]`` and ``u[l]`` against epoch (log axis),
  one line per layer coloured from shallow (dark) to deep (light), mean over
  seeds with a standard-error band (sample std / sqrt(n seeds); no band for
  one seed). Step 0 is drawn, with its standard error as an error bar, in
  a narrow ``init`` panel left of each log axis, never at a made-up epoch.
  The ``u`` panel has a dashed ``Max`` line at ``log 2 / log |C|``.
- ``curves``: train and validation accuracy and loss against epoch (log
  axis, init panel as above), mean over seeds with standard-error bands.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas,
never through ``pyplot``: nothing is displayed and no global backend is
changed. Matplotlib is imported on the first call. Every figure file, here
and in :mod:`nnphases.experiments.singlelayer` and :mod:`nnphases.experiments.theory`, is written by
:func:`save_figure`: rendered in memory, then written atomically.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..store import DamagedCheckpoint, atomic_write_bytes, remove_stale_temporaries
from ..store.runs import PathLike, class_sizes, layer_order, one_setup, read_table
from .statistics import mean_over_seeds

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

__all__ = ["plot", "save_figure", "figures_folder", "FIGURES"]

FIGURES = ("heatmap_f", "layers_fpu", "curves")

_DPI = 200
_INIT_RATIO = 0.09  # width of an init panel relative to its log-axis panel
_BAND_ALPHA = 0.22
_RC: dict[RcKeyType, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 10,
    "svg.fonttype": "none",
    "axes.spines.top": False,
    "axes.spines.right": False,
}


# -- inputs --------------------------------------------------------------------------------


def _config(run: Path) -> dict[str, Any]:
    for p in (run / "config.json", run.parent / "config.json"):
        try:
            cfg = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict):
            return cfg
    return {}


def _stored_classes(dirs: Sequence[Path]) -> int:
    """The number of classes stored with the first run that has a complete checkpoint."""
    for run in dirs:
        try:
            return len(class_sizes(run))
        except DamagedCheckpoint:
            raise  # refused, like a damaged table: the error names the file
        except ValueError:
            continue
    raise ValueError(f"no run in {[str(d) for d in dirs]} has a complete checkpoint to read class sizes from")


def _describe(cfg: dict[str, Any]) -> str:
    bits = []
    if "dataset" in cfg and isinstance(cfg["dataset"], str):
        bits.append(cfg["dataset"])
    depth, width = cfg.get("depth"), cfg.get("width")
    model = cfg.get("model") if isinstance(cfg.get("model"), str) else None
    if isinstance(depth, int) and isinstance(width, int) and model in (None, "mlp", "fc_bn"):  # others ignore them
        bits.append(f"{model + ' ' if model else ''}{depth}x{width}")
    elif model:
        bits.append(model)
    if isinstance(cfg.get("loss"), str):
        bits.append(f"{cfg['loss']} loss")
    return ", ".join(bits)


def _layer_label(k: int, name: str) -> str:
    return f"layer {k}" if name == str(k) else f"layer {k} ({name})"


# -- axes helpers ---------------------------------------------------------------------------


def _grid(fig: Figure, panels: int) -> Any:
    """A 1 x 2*panels grid: a narrow init column and a log-axis column per panel, packed tightly.

    Panels are kept apart by the init panels' own tick labels and y labels
    (constrained layout makes room for them), not by extra space.
    """
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    engine = fig.get_layout_engine()
    assert isinstance(engine, ConstrainedLayoutEngine)  # every figure here is made with layout="constrained"
    engine.set(w_pad=2 / 72, wspace=0.0)
    return fig.add_gridspec(1, 2 * panels, width_ratios=[_INIT_RATIO, 1.0] * panels)


def _split(fig: Figure, gs: Any, k: int, with_init: bool) -> tuple[Axes | None, Axes]:
    """Panel ``k`` of a :func:`_grid`: an optional init panel and a log-x panel sharing its y axis."""
    if not with_init:
        ax = fig.add_subplot(gs[0, 2 * k : 2 * k + 2])
        ax.set_xscale("log")
        _log_ticks(ax)
        return None, ax
    ax0 = fig.add_subplot(gs[0, 2 * k])
    ax = fig.add_subplot(gs[0, 2 * k + 1], sharey=ax0)
    ax.set_xscale("log")
    _log_ticks(ax)
    ax0.set_xlim(-1, 1)
    ax0.set_xticks([0], ["init"])
    ax0.spines["right"].set_visible(False)
    ax.tick_params(axis="y", which="both", labelleft=False, left=False)
    ax.spines["left"].set_visible(False)
    # Break marks at the foot of the gap: the epoch axis is not continuous there.
    d = 0.012
    ax0.plot([1 - 6 * d, 1 + 6 * d], [-d, d], transform=ax0.transAxes, color="0.3", clip_on=False, lw=0.8)
    ax.plot([-d / 2, d / 2], [-d, d], transform=ax.transAxes, color="0.3", clip_on=False, lw=0.8)
    return ax0, ax


def _log_xlim(ax: Axes, epochs: np.ndarray) -> None:
    """Fit the log x axis to the positive epochs, spanning at least a decade so a labelled tick shows."""
    e = epochs[np.isfinite(epochs) & (epochs > 0)]
    if len(e):
        lo, hi = float(e.min()), float(e.max())
        pad = max((hi / lo) ** 0.03, math.sqrt(10.0 * lo / hi) if hi < 10.0 * lo else 1.0)
        ax.set_xlim(lo / pad, hi * pad)


def _log_ticks(ax: Axes) -> None:
    """Label only the decades of a log x axis (minor labels like 4x10^-1 crowd short ranges)."""
    from matplotlib.ticker import LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10.0, numticks=12))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _no_data(ax: Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


def _band(ax: Axes, ax0: Axes | None, d: pd.DataFrame, value: str, **line: Any) -> Any:
    """Mean line with a +-SE band on the log panel, and the init point (+-SE) on the init panel."""
    d = d[np.isfinite(d[value].to_numpy(dtype=float))]
    init = d[d["step"] == 0]
    post = d[(d["step"] != 0) & (d["epoch"] > 0)]
    handle = None
    if len(post):
        x = post["epoch"].to_numpy(dtype=float)
        y = post[value].to_numpy(dtype=float)
        se = np.nan_to_num(post[f"{value}_se"].to_numpy(dtype=float))
        (handle,) = ax.plot(x, y, lw=1.2, marker="o" if len(x) <= 25 else None, ms=2.2, **line)
        if np.any(se > 0):
            ax.fill_between(x, y - se, y + se, color=handle.get_color(), alpha=_BAND_ALPHA, lw=0)
    if ax0 is not None and len(init):
        y0 = float(init[value].iloc[0])
        se0 = float(np.nan_to_num(init[f"{value}_se"].iloc[0]))
        color = handle.get_color() if handle is not None else line.get("color")
        h0 = ax0.errorbar(
            [0],
            [y0],
            yerr=[se0] if se0 > 0 else None,
            fmt="o",
            ms=3,
            color=color,
            mfc="white",
            capsize=1.5,
            lw=0.8,
            ls=line.get("ls", "-"),
        )
        if handle is None:
            handle = h0.lines[0]
    return handle


# -- writing ---------------------------------------------------------------------------------


def save_figure(
    fig: Figure,
    out_dir: PathLike,
    stem: str,
    formats: Sequence[str],
    *,
    dpi: float = 120,
    bbox_inches: str | None = "tight",
) -> list[Path]:
    """Write ``fig`` as ``out_dir/<stem>.<fmt>`` for each of ``formats`` (``"png"`` or ``".png"``); the paths written.

    Each file is rendered into memory and then written with
    :func:`nnphases.store.atomic_write_bytes`, so an error or a kill while
    drawing or writing leaves the previous file or none under the final name,
    never a truncated one. Formats are checked against what matplotlib can
    write before anything is drawn.
    """
    if isinstance(formats, (str, bytes)) or not isinstance(formats, Sequence):
        raise TypeError(f"formats must be a sequence of file extensions such as ('png', 'svg'), got {formats!r}")
    fmts = [f.lstrip(".").lower() if isinstance(f, str) else f for f in formats]
    known = fig.canvas.get_supported_filetypes()
    for f in fmts:
        if f not in known:
            raise ValueError(f"formats: {f!r} is not a format matplotlib writes ({', '.join(sorted(known))})")
    paths = []
    for fmt in fmts:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches=bbox_inches)
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


# -- figures ---------------------------------------------------------------------------------


def _seeds_text(n: int) -> str:
    """What a figure's curves are: one seed's, or a mean over seeds with standard-error bands."""
    return "1 seed" if n == 1 else f"mean over {n} seeds, bands: standard error"


def _cell_edges(e: np.ndarray) -> np.ndarray:
    """Log-axis cell edges around positive sorted epochs: geometric midpoints, half a log-step outside."""
    if len(e) == 1:
        return np.array([e[0] / math.sqrt(10.0), e[0] * math.sqrt(10.0)])
    mids = np.sqrt(e[:-1] * e[1:])
    first = e[0] ** 2 / mids[0]
    last = e[-1] ** 2 / mids[-1]
    return np.concatenate([[first], mids, [last]])


def _heatmap(nodes: pd.DataFrame, seed: int | str | None, title: str) -> Figure:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    order = layer_order(nodes)
    seeds = sorted(int(s) for s in nodes["seed"].unique())
    if seed is None:
        sel, which = nodes, ("1 seed" if len(seeds) == 1 else f"mean over {len(seeds)} seeds")
    else:
        chosen = seeds[0] if seed == "first" else int(seed)
        if chosen not in seeds:
            raise ValueError(f"seed {seed!r} is not among the runs' seeds {seeds}")
        sel, which = nodes[nodes["seed"] == chosen], f"seed {chosen}"
    m = sel.groupby(["layer", "node", "step"], sort=False)[["f", "epoch"]].mean().reset_index()
    steps = np.sort(m["step"].unique())
    epochs = m.groupby("step")["epoch"].mean().reindex(steps).to_numpy(dtype=float)
    rows = (
        m[["layer", "node"]]
        .drop_duplicates()
        .assign(_l=lambda d: d["layer"].map({n: i for i, n in enumerate(order)}))
        .sort_values(["_l", "node"], kind="stable")
    )
    index = pd.MultiIndex.from_frame(rows[["layer", "node"]])
    grid = (
        m.set_index(["layer", "node", "step"])["f"]
        .unstack("step")
        .reindex(index=index, columns=steps)
        .to_numpy(dtype=float)
    )
    n_rows = grid.shape[0]
    sizes = rows.groupby("_l", sort=True).size().to_numpy()
    bounds = np.concatenate([[0], np.cumsum(sizes)])

    init_cols = np.flatnonzero(steps == 0)
    post_cols = np.flatnonzero((steps != 0) & (epochs > 0))
    cmap = colormaps["viridis"].with_extremes(bad="0.85")

    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax0, ax = _split(fig, _grid(fig, 1), 0, with_init=len(init_cols) > 0)
    y_edges = np.arange(n_rows + 1)
    mesh = None
    if len(post_cols):
        xe = _cell_edges(epochs[post_cols])
        mesh = ax.pcolormesh(
            xe,
            y_edges,
            np.ma.masked_invalid(grid[:, post_cols]),
            cmap=cmap,
            vmin=0,
            vmax=1,
            rasterized=True,
            shading="flat",
        )
        ax.set_xlim(xe[0], xe[-1])
    else:
        _no_data(ax, "no measurements after init")
    if ax0 is not None:
        m0 = ax0.pcolormesh(
            [-1, 1],
            y_edges,
            np.ma.masked_invalid(grid[:, init_cols[:1]]),
            cmap=cmap,
            vmin=0,
            vmax=1,
            rasterized=True,
            shading="flat",
        )
        mesh = mesh or m0
    label_ax = ax0 if ax0 is not None else ax
    for a in (ax0, ax):
        if a is None:
            continue
        for b in bounds[1:-1]:
            a.axhline(b, color="white", lw=0.7)
        for side in ("top", "right"):
            a.spines[side].set_visible(True)
    ax.set_ylim(n_rows, 0)  # shallowest layer at the top
    centres = (bounds[:-1] + bounds[1:]) / 2
    label_ax.set_yticks(centres, [_layer_label(k + 1, n) for k, n in enumerate(order)])
    label_ax.tick_params(axis="y", length=0)
    label_ax.set_ylabel(f"hidden nodes ({n_rows}), shallowest layer at top")
    ax.set_xlabel("epoch")
    if mesh is not None:
        cb = fig.colorbar(mesh, ax=[a for a in (ax0, ax) if a is not None], fraction=0.04, pad=0.02)
        cb.set_label("activation fraction $f_{l,i}$")
    fig.suptitle(f"Activation fraction per node{' - ' + title if title else ''} ({which})")
    return fig


def _layers_fpu(layers: pd.DataFrame, num_classes: int, title: str) -> Figure:
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    order = layer_order(layers)
    m = mean_over_seeds(layers, ["step", "layer"], ["f", "p", "u"])
    n_seeds = layers["seed"].nunique()
    with_init = bool((m["step"] == 0).any())
    cmap = colormaps["viridis"]
    colors = [cmap(x) for x in (np.linspace(0.0, 0.85, len(order)) if len(order) > 1 else [0.0])]
    u_max = math.log(2) / math.log(num_classes) if num_classes >= 2 else math.nan

    fig = Figure(figsize=(10.0, 3.3), layout="constrained")
    gs = _grid(fig, 3)
    panels = [("f", "activation fraction $f_l$"), ("p", "predictability $p_l$"), ("u", "informativeness $u_l$")]
    handles: list[Any] = []
    for k, (value, label) in enumerate(panels):
        ax0, ax = _split(fig, gs, k, with_init)
        for li, layer in enumerate(order):
            d = m[m["layer"] == layer]
            h = _band(ax, ax0, d, value, color=colors[li], label=_layer_label(li + 1, layer))
            if k == 0:
                handles.append(h if h is not None else Line2D([], [], color=colors[li]))
        if value == "u" and np.isfinite(u_max):
            for a in (ax0, ax):
                if a is not None:
                    a.axhline(u_max, color="0.2", ls="--", lw=1.0)
            ax.text(1.0, u_max, " Max", transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=7)
        (ax0 or ax).set_ylabel(label)
        ax.set_xlabel("epoch")
        ax.set_title(label.split(" $")[0].capitalize())
        _log_xlim(ax, m["epoch"].to_numpy(dtype=float))
        if not len(m):
            _no_data(ax)
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
    labels = [_layer_label(i + 1, n) for i, n in enumerate(order)]
    if np.isfinite(u_max):
        handles.append(Line2D([], [], color="0.2", ls="--", lw=1.0))
        labels.append(f"Max = log 2 / log {num_classes} = {u_max:.3f}")
    ncol = min(len(labels), 6)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
    fig.suptitle(f"Layer averages{' - ' + title if title else ''} ({_seeds_text(n_seeds)})")
    return fig


def _curves(stats: pd.DataFrame, title: str) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.0), layout="constrained")
    gs = _grid(fig, 2)
    n_seeds = stats["seed"].nunique() if len(stats) else 0
    m = mean_over_seeds(stats, ["step", "split"], ["accuracy", "loss"]) if len(stats) else None
    with_init = m is not None and bool((m["step"] == 0).any())
    styles = {"train": dict(color="C0", ls="-", label="train"), "val": dict(color="C1", ls="--", label="validation")}
    for k, (value, label) in enumerate([("accuracy", "accuracy"), ("loss", "loss")]):
        ax0, ax = _split(fig, gs, k, with_init)
        drawn = []
        if m is not None:
            for split, style in styles.items():
                d = m[m["split"] == split]
                if len(d) and np.isfinite(d[value].to_numpy(dtype=float)).any():
                    h = _band(ax, ax0, d, value, **style)
                    if h is not None:
                        drawn.append((h, style["label"]))
            _log_xlim(ax, m["epoch"].to_numpy(dtype=float))
        if not drawn:
            _no_data(ax)
        else:
            ax.legend([h for h, _ in drawn], [lab for _, lab in drawn], frameon=False, loc="best")
        (ax0 or ax).set_ylabel(label)
        ax.set_xlabel("epoch")
        ax.set_title(label.capitalize())
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
    fig.suptitle(f"Training curves{' - ' + title if title else ''} ({_seeds_text(n_seeds)})")
    return fig


def _probes(probes: pd.DataFrame, title: str) -> Figure:
    """Probe results per layer against epoch: test and train accuracy of the linear read-out, and the
    normalised reconstruction error (1 - R^2) of the input; mean over seeds with standard-error bands.
    Colours are layers; with several probe modes in the runs, fast mode is solid, the text protocol dashed and
    the code protocol dotted."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .phases import _ordered_modes, probe_modes

    probes = probe_modes(probes)
    order = layer_order(probes)
    modes = _ordered_modes(probes["mode"])
    looks = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))]
    styles = {mode: looks[i % len(looks)] for i, mode in enumerate(modes)}
    values = ["test_accuracy", "train_accuracy", "reconstruction_nmse"]
    m = mean_over_seeds(probes, ["step", "layer", "mode"], values)
    n_seeds = probes["seed"].nunique()
    with_init = bool((m["step"] == 0).any())
    colors = [colormaps["viridis"](x) for x in (np.linspace(0.0, 0.85, len(order)) if len(order) > 1 else [0.0])]
    fig = Figure(figsize=(10.0, 3.3), layout="constrained")
    gs = _grid(fig, 3)
    labels = ["linear probe, test accuracy", "linear probe, train accuracy", "reconstruction error (1 - R$^2$)"]
    shown = [False] * len(order)
    for k, (value, label) in enumerate(zip(values, labels, strict=True)):
        ax0, ax = _split(fig, gs, k, with_init)
        for li, layer in enumerate(order):
            for mode in modes:
                d = m[(m["layer"] == layer) & (m["mode"] == mode)]
                shown[li] |= _band(ax, ax0, d, value, color=colors[li], ls=styles[mode]) is not None
        (ax0 or ax).set_ylabel(label.split(", ")[-1])
        ax.set_xlabel("epoch")
        ax.set_title(label[0].upper() + label[1:])
        _log_xlim(ax, m["epoch"].to_numpy(dtype=float))
        ax.grid(True, which="major", lw=0.3, alpha=0.5)
    handles = [Line2D([], [], color=colors[i], lw=1.2) for i in range(len(order)) if shown[i]]
    names = [_layer_label(i + 1, n) for i, n in enumerate(order) if shown[i]]
    if len(modes) > 1:
        handles += [Line2D([], [], color="0.3", lw=1.2, ls=styles[mode]) for mode in modes]
        names += [f"{mode} mode" for mode in modes]
    fig.legend(handles, names, loc="outside lower center", ncol=min(len(names), 6), frameon=False)
    mode_text = "" if len(modes) > 1 else f", {modes[0]} mode" if modes else ""
    fig.suptitle(f"Probes{' - ' + title if title else ''} ({_seeds_text(n_seeds)}{mode_text})")
    return fig


def figures_folder(runs: PathLike | Sequence[PathLike], dirs: Sequence[Path]) -> Path:
    """Where the figures of ``runs`` (whose run folders are ``dirs``) go by default: beside the runs, in the one
    folder given (a run's own, or its seeds' parent), else in the first run's parent."""
    if isinstance(runs, (str, os.PathLike)):
        return Path(runs) / "figures"
    return Path(dirs[0]).parent / "figures"


def plot(
    runs: PathLike | Sequence[PathLike],
    out_dir: PathLike | None = None,
    formats: Sequence[str] = ("png", "svg"),
    *,
    seed: int | str | None = "first",
    num_classes: int | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write the heatmap, layer-average and training-curve figures of ``runs``; return the files written.

    ``runs``: run directories (one per seed) or folders of them (as for
    :func:`nnphases.store.runs.run_dirs`).
    ``out_dir``: defaults to ``<runs>/figures`` when ``runs`` is one folder (a run's own folder, or the folder of its
    seeds), else ``<first run's parent>/figures``. ``formats``:
    file extensions matplotlib can write (``png`` at 200 dpi). ``seed``:
    the heatmap's seed: ``"first"`` (the smallest seed id), a seed id, or
    None for the mean over seeds. ``num_classes``: ``|C|`` for the ``Max``
    line; defaults to the number of classes stored with the runs (the
    ``class_sizes`` of the first run's newest checkpoint). ``title``: text
    added to each figure's title (default: dataset, model and loss from the
    config when present). Files are named ``heatmap_f``, ``layers_fpu`` and
    ``curves`` (and ``probes`` when the runs fitted probes) with each extension. Raises ValueError when the runs hold no
    measurements, and :class:`~nnphases.store.DamagedCheckpoint` (a ValueError) naming the checkpoint and the file
    when a file it reads is damaged: a figure is never drawn silently without some of its measurements.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    dirs = one_setup(runs)
    nodes = read_table(dirs, "nodes")
    layers = read_table(dirs, "layers")
    stats = read_table(dirs, "stats")
    probes = read_table(dirs, "probes")
    if layers.empty or nodes.empty:
        raise ValueError(f"no complete checkpoints with node and layer tables in {runs!r}")
    cfg = _config(dirs[0]) if dirs else {}
    if num_classes is None:
        num_classes = _stored_classes(dirs)
    if title is None:
        title = _describe(cfg)
    out = Path(out_dir) if out_dir is not None else figures_folder(runs, dirs)

    written: list[Path] = []
    with matplotlib.rc_context(_RC):
        figures = {
            "heatmap_f": lambda: _heatmap(nodes, seed, title),
            "layers_fpu": lambda: _layers_fpu(layers, num_classes, title),
            "curves": lambda: _curves(stats, title),
        }
        if not probes.empty:
            figures["probes"] = lambda: _probes(probes, title)
        remove_stale_temporaries(out)  # a plot killed mid-write left them
        for name, build in figures.items():
            fig = build()
            FigureCanvasAgg(fig)
            written += save_figure(fig, out, name, formats, dpi=_DPI, bbox_inches=None)
    return written
