"""The figure of :mod:`.dynamics`: each layer's sample-set churn between checkpoints and its nodes' redundancy
over training, means over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .dynamics import Dynamics
from .plot import _DPI, _RC, save_figure

__all__ = ["plot_dynamics"]


def plot_dynamics(d: Dynamics, out_dir: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """``out_dir/dynamics.<fmt>``: churn (mean over nodes) and mean |phi| per layer against the epoch."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(11, 4.2))
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        seeds = 0
        for ax, table, column, label in (
            (left, d.churn, "churn", "churn since the previous checkpoint (1 - Jaccard)"),
            (right, d.redundancy, "mean_abs_phi", "mean |phi| between live nodes"),
        ):
            if table.empty:
                ax.text(0.5, 0.5, "no checkpoints with masks", ha="center", va="center", transform=ax.transAxes)
                continue
            seeds = max(seeds, table["seed"].nunique())
            for layer in dict.fromkeys(table["layer"]):
                rows = table[(table["layer"] == layer) & (table["epoch"] > 0)]
                mean = rows.groupby("epoch")[column].mean()
                ax.plot(mean.index.to_numpy(), mean.to_numpy(), marker=".", label=layer)
            ax.set_xscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
        handles, labels = left.get_legend_handles_labels() or right.get_legend_handles_labels()
        if labels:
            fig.legend(handles, labels, loc="center right", fontsize=8)
        fig.suptitle(f"sample-set dynamics from the stored masks ({seeds} seed{'s' if seeds != 1 else ''}, means)")
        fig.subplots_adjust(right=0.88, wspace=0.3)
        return save_figure(fig, out_dir, "dynamics", formats, dpi=_DPI, bbox_inches=None)
