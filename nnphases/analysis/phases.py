"""The learning phases of source 002, read from the probes of recorded runs.

:func:`probe_phases` averages the ``probes`` table over seeds per (mode, layer, step) and describes, for
every layer, the two curves the source reads its phases from:

- the linear probe's test accuracy: its value at init (step 0, or the first measurement) and at the last
  measurement, and whether it *rises* (last above init by more than ``margin``);
- the normalised reconstruction error (1 - R^2): its init value, its minimum after init (and the epoch of
  the minimum), its last value, and three phases with explicit criteria:
  *constant* when at least one measurement after init and before the first one below ``init - margin``
  stays within the margin (that first one's epoch is the onset of the fall, None if it never falls), *falls*
  when the minimum lies more than ``margin`` below init, *rises* when the last value lies more than ``margin``
  above the minimum.

:func:`phase_summary` adds the source's statement about depth ("for layers closer to the input, it gets
weaker"): the Spearman rank correlation between depth and the rise of the reconstruction error
(last - minimum). :func:`mode_agreement` compares the probe modes (``fast``, ``text``, ``code``) layer by layer:
whether they find the same phases, where their boundaries lie, and how their curves rank the measurements.
:func:`report` prints one line per layer and mode, then the summary and the comparison.

Rows written before the ``code`` protocol existed call the text protocol ``paper``; they are read as ``text``.
When one mode was read with BatchNorm in more than one way (runs with different ``--probe-bn``), each reading is
its own mode (``fast/batch``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..store.runs import PathLike, layer_order, read_table
from .statistics import mean_over_seeds, spearman

__all__ = ["LayerPhases", "probe_phases", "phase_summary", "mode_agreement", "report", "probe_modes"]

_MODE_ORDER = ("fast", "text", "code")


def probe_modes(table: pd.DataFrame) -> pd.DataFrame:
    """The ``probes`` table with each row's mode as the comparisons name it: ``paper`` rows as ``text``, and the
    BatchNorm reading added (``fast/batch``) when a mode has rows of more than one reading."""
    t = table.copy()
    t["mode"] = t["mode"].replace({"paper": "text"})
    if "bn" in t.columns:
        bn = t["bn"].fillna("running").replace({"none": "running"})
        mixed = {m for m, g in bn.groupby(t["mode"]) if g.nunique() > 1}
        if mixed:
            t["mode"] = [f"{m}/{b}" if m in mixed else m for m, b in zip(t["mode"], bn, strict=True)]
    return t


def _ordered_modes(modes: Iterable[str]) -> list[str]:
    def key(m: str) -> tuple[int, str]:
        base = m.split("/")[0]
        return (_MODE_ORDER.index(base) if base in _MODE_ORDER else len(_MODE_ORDER), m)

    return sorted(set(modes), key=key)


@dataclass(frozen=True)
class LayerPhases:
    mode: str
    layer: str
    depth: int  # 1 for the shallowest probed layer
    seeds: int
    accuracy_init: float
    accuracy_last: float
    accuracy_rises: bool
    nmse_init: float
    nmse_min: float
    nmse_min_epoch: float
    nmse_last: float
    fall_onset_epoch: float | None
    constant: bool
    falls: bool
    rises: bool

    @property
    def phases(self) -> str:
        parts = ["constant"] if self.constant else []
        parts += ["falls"] if self.falls else []
        parts += ["rises"] if self.rises else []
        return ", then ".join(parts) if parts else "no phase beyond the margin"


def probe_phases(runs: PathLike | Iterable[PathLike] | pd.DataFrame, margin: float = 0.01) -> list[LayerPhases]:
    """The phases of every probed layer and mode in ``runs`` (run folders as for :func:`nnphases.store.runs.run_dirs`,
    or a ``probes`` table)."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite non-negative number, got {margin!r}")
    table = runs if isinstance(runs, pd.DataFrame) else read_table(runs, "probes")
    out: list[LayerPhases] = []
    if table.empty:
        return out
    table = probe_modes(table)
    order = layer_order(table)
    m = mean_over_seeds(table, ["step", "mode", "layer"], ["test_accuracy", "reconstruction_nmse"])
    for mode in _ordered_modes(m["mode"]):
        for depth, layer in enumerate(order, start=1):
            d = m[(m["mode"] == mode) & (m["layer"] == layer)].sort_values("step")
            d = d[
                np.isfinite(d["test_accuracy"].to_numpy(float)) & np.isfinite(d["reconstruction_nmse"].to_numpy(float))
            ]
            if len(d) < 2:
                continue
            acc, nmse, ep = (d[c].to_numpy(float) for c in ("test_accuracy", "reconstruction_nmse", "epoch"))
            k = 1 + int(np.argmin(nmse[1:]))
            below = np.nonzero(nmse[1:] < nmse[0] - margin)[0]
            n_seeds = int(table[(table["mode"] == mode) & (table["layer"] == layer)]["seed"].nunique())
            out.append(
                LayerPhases(
                    mode=mode,
                    layer=layer,
                    depth=depth,
                    seeds=n_seeds,
                    accuracy_init=float(acc[0]),
                    accuracy_last=float(acc[-1]),
                    accuracy_rises=bool(acc[-1] > acc[0] + margin),
                    nmse_init=float(nmse[0]),
                    nmse_min=float(nmse[k]),
                    nmse_min_epoch=float(ep[k]),
                    nmse_last=float(nmse[-1]),
                    fall_onset_epoch=float(ep[1 + below[0]]) if len(below) else None,
                    constant=bool(len(below) and below[0] > 0),
                    falls=bool(nmse[k] < nmse[0] - margin),
                    rises=bool(nmse[-1] > nmse[k] + margin),
                )
            )
    return out


def phase_summary(phases: list[LayerPhases]) -> list[str]:
    """Per mode: the Spearman correlation of depth with the rise (last - min) of the reconstruction error."""
    lines = []
    for mode in _ordered_modes(p.mode for p in phases):
        ps = [p for p in phases if p.mode == mode]
        if len(ps) < 2:
            continue
        rise = np.array([p.nmse_last - p.nmse_min for p in ps])
        rho = spearman(np.array([p.depth for p in ps], float), rise)
        lines.append(
            f"{mode} mode: the reconstruction error's late rise (last - min) by depth: "
            + ", ".join(f"{p.layer} {r:+.3f}" for p, r in zip(ps, rise, strict=True))
            + f"; Spearman(depth, rise) = {rho:.2f} (the source: weaker closer to the input, i.e. > 0)"
        )
    return lines


def mode_agreement(runs: PathLike | Iterable[PathLike] | pd.DataFrame, phases: list[LayerPhases]) -> list[str]:
    """Per layer, every pair of probe modes: whether they find the same phases and boundaries, and the Spearman
    correlation of their seed-mean curves (test accuracy, reconstruction error) over the steps both measured."""
    table = runs if isinstance(runs, pd.DataFrame) else read_table(runs, "probes")
    if table.empty:
        return []
    m = mean_over_seeds(probe_modes(table), ["step", "mode", "layer"], ["test_accuracy", "reconstruction_nmse"])
    by = {(p.mode, p.layer): p for p in phases}
    modes = _ordered_modes(p.mode for p in phases)
    lines = []
    for layer in dict.fromkeys(p.layer for p in phases):
        for i, a in enumerate(modes):
            for b in modes[i + 1 :]:
                pa, pb = by.get((a, layer)), by.get((b, layer))
                if pa is None or pb is None:
                    continue
                da = m[(m["mode"] == a) & (m["layer"] == layer)].set_index("step")
                db = m[(m["mode"] == b) & (m["layer"] == layer)].set_index("step")
                steps = da.index.intersection(db.index)
                rho = {
                    c: spearman(da.loc[steps, c].to_numpy(float), db.loc[steps, c].to_numpy(float))
                    for c in ("test_accuracy", "reconstruction_nmse")
                }
                same = pa.phases == pb.phases
                lines.append(
                    f"{layer} {a} vs {b}: phases {'agree' if same else 'differ'} ({pa.phases} | {pb.phases}); "
                    f"fall onset epoch {_epoch(pa.fall_onset_epoch)} | {_epoch(pb.fall_onset_epoch)}, minimum at "
                    f"epoch {pa.nmse_min_epoch:.3g} | {pb.nmse_min_epoch:.3g}; Spearman over {len(steps)} steps: "
                    f"accuracy {rho['test_accuracy']:.2f}, reconstruction {rho['reconstruction_nmse']:.2f}"
                )
    return lines


def _epoch(e: float | None) -> str:
    return "none" if e is None else f"{e:.3g}"


def report(phases: list[LayerPhases], agreement: list[str] | None = None) -> str:
    """One line per layer and mode with the numbers behind its phases, then :func:`phase_summary` and the modes'
    comparison (:func:`mode_agreement`) when given."""
    if not phases:
        return "no probe results (run with --probes)"
    lines = []
    for p in phases:
        onset = f", falls from epoch {p.fall_onset_epoch:.3g}" if p.fall_onset_epoch is not None else ""
        lines.append(
            f"{p.mode} {p.layer}: accuracy {p.accuracy_init:.3f} -> {p.accuracy_last:.3f}"
            f"{' (rises)' if p.accuracy_rises else ''}; reconstruction error {p.nmse_init:.3f} -> min "
            f"{p.nmse_min:.3f} at epoch {p.nmse_min_epoch:.3g} -> {p.nmse_last:.3f}{onset}: {p.phases}"
            f" [{p.seeds} seed{'s' if p.seeds != 1 else ''}]"
        )
    return "\n".join(lines + phase_summary(phases) + list(agreement or []))
