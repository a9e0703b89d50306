"""The figure of :mod:`.dynamics`: each layer's sample-set churn between checkpoints and its nodes' redundancy
over training, means over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .dynamics import Dynamics
from .plot import _DPI, _RC, save_figure

__all__ = ["plot_dynamics"]


def plot_dynamics(d: Dynamics, out_dir: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """``out_dir/dynamics.<fmt>``: churn (mean over nodes) and mean |phi| per layer against the epoch."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        records = not d.fitted.empty
        fig = Figure(figsize=(11, 8.4 if records else 4.2))
        FigureCanvasAgg(fig)
        axes = fig.subplots(2 if records else 1, 2, squeeze=False)
        left, right = axes[0]
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
        if records:
            _fitted(axes[1][0], d)
            _late(axes[1][1], d)
        handles, labels = left.get_legend_handles_labels() or right.get_legend_handles_labels()
        if labels:
            fig.legend(handles, labels, loc="center right", fontsize=8)
        fig.suptitle(f"sample-set dynamics from the stored masks ({seeds} seed{'s' if seeds != 1 else ''}, means)")
        fig.subplots_adjust(right=0.88, wspace=0.3)
        return save_figure(fig, out_dir, "dynamics", formats, dpi=_DPI, bbox_inches=None)


def _fitted(ax: Any, d: Dynamics) -> None:
    f = d.fitted[d.fitted["epoch"] > 0]
    for column, label in (("fitted", "fitted for good"), ("correct", "correct")):
        mean = f.groupby("epoch")[column].mean()
        ax.plot(
            mean.index.to_numpy(), mean.to_numpy(), marker=".", label=label, color="k" if column == "fitted" else "0.6"
        )
    settled = d.fitted.groupby("seed")["settled"].first()
    epoch_of = dict(zip(d.fitted["step"], d.fitted["epoch"], strict=False))
    for step in settled:
        if step in epoch_of and epoch_of[step] > 0:
            ax.axvline(epoch_of[step], color="tab:red", alpha=0.4, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of samples (red: 90% of the fitted are in)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, alpha=0.3)


def _late(ax: Any, d: Dynamics) -> None:
    if d.late.empty:
        ax.text(0.5, 0.5, "no checkpoints with masks", ha="center", va="center", transform=ax.transAxes)
        return
    late = d.late[d.late["epoch"] > 0]
    for group, colour in (("early", "tab:blue"), ("late", "tab:orange"), ("never", "tab:gray")):
        mean = late[late["group"] == group].groupby("epoch")["churn_pooled"].mean()
        if mean.notna().any():
            ax.plot(mean.index.to_numpy(), mean.to_numpy(), marker=".", color=colour, label=f"{group} samples")
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("pooled churn of their memberships (mean over layers)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, alpha=0.3)
