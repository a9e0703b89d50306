"""A run's curves in TensorBoard and Weights & Biases, checkpoint by checkpoint as it is recorded, or replayed.

At each checkpoint a logger reads that checkpoint's tables from the run folder
and logs, under a prefix (default ``nnphases/``): per layer ``f``, ``p``,
``u``, ``dead`` and ``always_active`` (``nnphases/f/<layer>``, from the
``layers`` table), per probed layer and mode the probe's test accuracy and
reconstruction error (``nnphases/probe_test_accuracy/<layer>/<mode>``,
``nnphases/probe_reconstruction_nmse/<layer>/<mode>``, from ``probes``), the
loss and accuracy per split (``nnphases/loss/val``, ``nnphases/accuracy/train``,
from ``stats``), the epoch, and one image: every node's activation fraction
``f``, one row per layer (``nnphases/f_heatmap``). Scalars are per layer,
never per node: both services cap the number of series a run may hold.
Values that are not finite (a metric undefined at that step) are left out.

The x-axis: TensorBoard plots against a step or wall time only, so its
``global_step`` is the training step and ``nnphases/epoch`` is logged at the
same step (epoch = step / steps per epoch, so curves keep their shape). W&B
plots every ``nnphases/*`` key against ``nnphases/epoch``
(``define_metric(..., step_metric=...)``), and logs without ``step=``, which
leaves the run's own step, e.g. a trainer's, alone. ``WANDB_MODE=offline``
works without an account.

TensorBoard needs ``pip install 'nnphases[tensorboard]'`` and W&B
``pip install 'nnphases[wandb]'``; this module imports them only when a logger
is built.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..options import check, check_int, option
from ..recording.schedule import MAX_STEP
from ..store import RunDir
from ..store.runs import PathLike, layer_order

__all__ = ["LoggerOptions", "Checkpoint", "read_checkpoint", "f_heatmap", "TensorBoardLogger", "WandbLogger", "log_run"]

_LAYER_METRICS = ("f", "p", "u", "dead", "always_active")
_PROBE_METRICS = ("test_accuracy", "reconstruction_nmse")


@dataclass(frozen=True)
class LoggerOptions:
    prefix: str = option("nnphases/", help="prefix of every logged name, keeping them apart from a trainer's own")
    heatmaps: bool = option(True, help="log one image of every node's f per checkpoint")
    heatmap_width: int = option(
        256,
        min=1,
        max=4096,
        help="columns of the heatmap: wider layers are averaged into this many, narrower ones stretched",
    )

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class Checkpoint:
    """What a logger logs of one checkpoint: its step, epoch, per-layer scalars by name, and the f image."""

    step: int
    epoch: float
    scalars: dict[str, float]
    heatmap: np.ndarray | None  # uint8 [height, width, 3]


def _table(rd: RunDir, step: int, table: str) -> pd.DataFrame | None:
    # One checkpoint's rows (nnphases.store.runs.read_table reads every checkpoint of a run, which logging after each
    # checkpoint would repeat): verified, from compacted tables when there are some, node rows derived from the
    # counts for layers whose rows were not stored.
    t = rd.read_table(step, table)
    return t if len(t) else None


def _value(row: Any, column: str) -> float:
    """A metric of a table row as a float; NaN (left out) when a run written before that column lacks it."""
    v = getattr(row, column, None)
    return math.nan if v is None else float(v)


def read_checkpoint(run: PathLike, step: int, options: LoggerOptions | None = None) -> Checkpoint:
    """The scalars (and, with ``options.heatmaps``, the f image) of the complete checkpoint at ``step`` of ``run``.

    ``run`` is one run directory; ValueError names it when ``step`` has no
    complete checkpoint there.
    """
    opts = options if options is not None else LoggerOptions()
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a path, got {run!r}")
    step = check_int(step, "step", 0, MAX_STEP)
    rd = RunDir(run)
    pre = opts.prefix
    layers, stats, probes = (_table(rd, step, t) for t in ("layers", "stats", "probes"))
    assert layers is not None and stats is not None  # every complete checkpoint holds them
    epoch = float(layers["epoch"].iloc[0]) if len(layers) else float(stats["epoch"].iloc[0]) if len(stats) else 0.0
    scalars: dict[str, float] = {}
    for row in layers.itertuples(index=False):
        for m in _LAYER_METRICS:
            scalars[f"{pre}{m}/{row.layer}"] = _value(row, m)
    for row in stats.itertuples(index=False):
        scalars[f"{pre}loss/{row.split}"] = _value(row, "loss")
        scalars[f"{pre}accuracy/{row.split}"] = _value(row, "accuracy")
    if probes is not None:
        for row in probes.itertuples(index=False):
            for m in _PROBE_METRICS:
                scalars[f"{pre}probe_{m}/{row.layer}/{row.mode}"] = _value(row, m)
    scalars = {k: v for k, v in scalars.items() if math.isfinite(v)}
    image = None
    if opts.heatmaps:
        nodes = _table(rd, step, "nodes")
        assert nodes is not None
        image = f_heatmap(nodes, opts.heatmap_width, title=f"f per node, step {step}, epoch {epoch:.4g}")
    return Checkpoint(step, epoch, scalars, image)


def _columns(f: np.ndarray, width: int) -> np.ndarray:
    """``f`` of one layer's nodes on ``width`` columns: the mean of the nodes falling in each, or the node each
    column falls in when the layer has fewer nodes than columns."""
    n = len(f)
    if n >= width:
        col = np.arange(n) * width // n
        return np.bincount(col, weights=f, minlength=width) / np.bincount(col, minlength=width)
    return f[np.arange(width) * n // width]


def f_heatmap(nodes: pd.DataFrame, width: int = 256, title: str = "") -> np.ndarray:
    """An RGB image (uint8 ``[height, width, 3]``, a few hundred pixels a side) of ``f`` for one checkpoint's
    ``nodes`` table: a row per layer in model order, nodes in index order across at most ``width`` columns."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    f = {
        str(name): part.sort_values("node", kind="stable")["f"].to_numpy(dtype=np.float64)
        for name, part in nodes.groupby("layer", sort=False)
    }
    names = layer_order(nodes)
    widest = max((len(f[n]) for n in names), default=1)
    cols = min(width, widest)
    grid = np.full((max(1, len(names)), cols), np.nan)
    for i, name in enumerate(names):
        grid[i] = _columns(f[name], cols)
    # Fixed margins (room for the longest layer name) rather than a layout engine, which took half the time.
    height = 0.75 + 0.2 * len(grid)
    fig = Figure(figsize=(5.0, height), dpi=72)
    left = min(0.45, (8 + 4.0 * max((len(n) for n in names), default=1)) / (5.0 * 72))
    ax = fig.add_axes((left, 0.45 / height, 0.87 - left, 1 - 0.7 / height))
    im = ax.imshow(grid, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_yticks(range(len(names)), labels=names, fontsize=7)
    ax.tick_params(axis="x", labelsize=7, pad=1)
    ax.set_xlabel("node" if widest <= width else f"node (averaged into {cols} columns)", fontsize=7, labelpad=1)
    if title:
        ax.set_title(title, fontsize=8, pad=2)
    fig.colorbar(im, cax=fig.add_axes((0.9, 0.45 / height, 0.025, 1 - 0.7 / height))).ax.tick_params(labelsize=7)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class TensorBoardLogger:
    """Logs checkpoints to TensorBoard event files in ``log_dir`` (``torch.utils.tensorboard.SummaryWriter``),
    at ``global_step`` = the training step; flushed after each checkpoint so curves appear while training runs."""

    def __init__(self, log_dir: PathLike, options: LoggerOptions | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(f"TensorBoardLogger needs TensorBoard ({e}): pip install 'nnphases[tensorboard]'") from e
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(f"log_dir must be a path, got {log_dir!r}")
        self.options = _options(options)
        self.writer = SummaryWriter(str(log_dir))

    def log_checkpoint(self, run: PathLike, step: int) -> None:
        c = read_checkpoint(run, step, self.options)
        self.writer.add_scalar(f"{self.options.prefix}epoch", c.epoch, global_step=c.step)
        for tag, value in c.scalars.items():
            self.writer.add_scalar(tag, value, global_step=c.step)
        if c.heatmap is not None:
            self.writer.add_image(f"{self.options.prefix}f_heatmap", c.heatmap, global_step=c.step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Logs checkpoints to a Weights & Biases run, every ``<prefix>*`` key plotted against ``<prefix>epoch``.

    ``run``: the run to log into; without it, a new run started with
    ``wandb.init(**init)`` when ``init`` is given, else the active
    ``wandb.run``, else a new one. :meth:`close` finishes only a run this
    logger started.
    """

    def __init__(
        self, run: Any = None, *, init: Mapping[str, Any] | None = None, options: LoggerOptions | None = None
    ) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError(f"WandbLogger needs wandb ({e}): pip install 'nnphases[wandb]'") from e
        if init is not None and not isinstance(init, Mapping):
            raise TypeError(f"init must be a dict of wandb.init arguments, got {init!r}")
        self.options = _options(options)
        self._wandb = wandb
        self._owned = run is None and (init is not None or wandb.run is None)
        if run is None:
            run = wandb.init(**dict(init or {})) if self._owned else wandb.run
        self.run = run
        pre = self.options.prefix
        run.define_metric(f"{pre}epoch")
        run.define_metric(f"{pre}*", step_metric=f"{pre}epoch")

    def log_checkpoint(self, run: PathLike, step: int) -> None:
        c = read_checkpoint(run, step, self.options)
        pre = self.options.prefix
        data: dict[str, Any] = {f"{pre}epoch": c.epoch, f"{pre}step": c.step, **c.scalars}
        if c.heatmap is not None:
            data[f"{pre}f_heatmap"] = self._wandb.Image(c.heatmap, caption=f"step {c.step}, epoch {c.epoch:.4g}")
        self.run.log(data)

    def close(self) -> None:
        if self._owned:
            self.run.finish()
            self._owned = False


def _options(options: LoggerOptions | None) -> LoggerOptions:
    if options is None:
        return LoggerOptions()
    if not isinstance(options, LoggerOptions):
        raise TypeError(f"options must be LoggerOptions, got {type(options).__name__}")
    return options


def log_run(
    run: PathLike,
    tensorboard: PathLike | TensorBoardLogger | None = None,
    wandb: WandbLogger | Mapping[str, Any] | bool | None = None,
    options: LoggerOptions | None = None,
) -> list[int]:
    """Replays every complete checkpoint of the run directory ``run`` into TensorBoard and/or W&B; returns the steps.

    ``tensorboard``: a log folder, or a :class:`TensorBoardLogger`.
    ``wandb``: a :class:`WandbLogger`, a dict of ``wandb.init`` arguments
    (e.g. ``{"project": "mine", "mode": "offline"}``), or True for
    ``wandb.init()``. Loggers built here are closed at the end; loggers given
    are left open. ``options`` apply to the loggers built here.
    """
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a path, got {run!r}")
    rd = RunDir(run)
    steps = rd.completed_steps()
    if not steps:
        raise ValueError(f"run: {str(Path(run))!r} holds no complete checkpoint to log")
    if tensorboard is None and (wandb is None or wandb is False):
        raise ValueError("log_run needs tensorboard= (a log folder) or wandb= (init arguments), got neither")
    built: list[TensorBoardLogger | WandbLogger] = []
    loggers: list[TensorBoardLogger | WandbLogger] = []
    try:
        if isinstance(tensorboard, TensorBoardLogger):
            loggers.append(tensorboard)
        elif tensorboard is not None:
            built.append(TensorBoardLogger(tensorboard, options))
        if isinstance(wandb, WandbLogger):
            loggers.append(wandb)
        elif wandb is True or isinstance(wandb, Mapping):
            built.append(WandbLogger(init=wandb if isinstance(wandb, Mapping) else {}, options=options))
        elif wandb is not None and wandb is not False:
            raise TypeError(f"wandb must be a WandbLogger, a dict of wandb.init arguments or True, got {wandb!r}")
        for step in steps:
            for lg in loggers + built:
                lg.log_checkpoint(run, step)
    finally:
        for lg in built:
            lg.close()
    return steps
