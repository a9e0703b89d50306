"""The source's findings about sample sets (spec §1), checked on recorded runs.

:func:`findings` reads the ``layers`` and ``stats`` tables of one or more run
directories (one per seed) with :func:`nnphases.store.runs.read_table`, averages
every metric over seeds per step (the epoch of a step is the seeds' mean
epoch), and checks five statements with explicit criteria. :func:`report`
turns the results into one line each.

Conventions shared by all criteria:

- *init* is the measurement at step 0 (initialisation); when a run has no
  step 0, the first measurement stands in for it (the detail says so).
  *after init* means every later measurement; the *last* value of a curve is
  its last finite value after init.
- Layers are ordered by their first appearance in the layers table
  (shallowest first); layer 1 is the shallowest hidden layer.
- A layer value ``f[l]``, ``p[l]``, ``u[l]`` is the mean over seeds of the
  recorded layer value; "mean over layers" is the NaN-skipping mean of those.

Criteria (defaults of :func:`findings`' keyword arguments in brackets):

a. *fractions first rise then fall*: the mean over layers of ``f[l]``
   peaks after init above its init value by more than ``rise_margin``
   [0.01] and its last value lies at least ``fall_margin`` [0.02] (absolute)
   below the peak.
b. *the fall starts when the loss starts to fall*: the validation loss
   (mean over seeds; the training loss when no validation loss was
   recorded) *starts to fall* at the first measurement ``t`` whose loss is
   below ``loss_drop`` [0.95] times the highest loss of the measurements
   before it (the plateau of the initial phase, which also absorbs an early
   rise of the loss). Holds when the mean ``f`` falls at all (criterion a's
   fall) and the epoch of its peak lies within a factor ``epoch_factor``
   [10, one decade] of that epoch.
c. *the first layer's fraction falls fastest*: the source says the
   decrease "is more rapid in shallower layers" and "the size of sample
   clusters in the first layer decreases more rapidly than in deeper
   layers". For each layer the relative drop ``(peak - last) / peak`` of
   ``f[l]`` from its peak after init to its last value is computed; holds
   when layer 1's relative drop is positive and strictly larger than every
   other layer's. Needs at least two layers.
d. *p rises during training and is higher in deeper layers*: the last
   ``p[l]`` exceeds ``p[l]`` at init for more than half of the layers where
   both are defined, and the Spearman rank correlation between depth
   (layer index) and ``p[l]`` averaged over the last ``last_fraction`` [25%,
   at least one] of the measurements after init is positive. Needs at least
   two layers with a defined ``p``.
e. *u rises then dips slightly and stays far below 1*: the mean over
   layers of ``u[l]`` has a maximum after init above its init value, its
   last value is at most that maximum (the dip, ``max - last``, is reported;
   it is required to be positive only with ``require_dip=True``, since a
   slight dip can be within noise), and no layer's ``u[l]`` after init
   reaches ``u_ceiling`` [0.5].

Missing data (no checkpoints, a single checkpoint, a single layer, no loss,
undefined metrics) never raises: the finding gets ``holds=False`` and a
detail that says what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..store.runs import PathLike, layer_order, one_setup, read_table
from .statistics import mean_over_seeds, spearman

__all__ = ["Finding", "findings", "report", "spearman", "NAMES"]

NAMES = (
    "fractions first rise then fall",
    "the fall starts when the loss starts to fall",
    "the first layer's fraction falls fastest",
    "p rises during training and is higher in deeper layers",
    "u rises then dips slightly and stays far below 1",
)


@dataclass
class Finding:
    """One checked statement: its name, whether it holds, and the numbers behind the verdict."""

    name: str
    holds: bool
    detail: str


def _fmt(x: float, spec: str = ".3f") -> str:
    return "nan" if x is None or not np.isfinite(x) else format(float(x), spec)


def _ep(x: float) -> str:
    return _fmt(x, ".3g")


@dataclass
class _Series:
    """Seed-mean layer metrics as step x layer matrices."""

    steps: np.ndarray  # int [T], ascending
    epochs: np.ndarray  # float [T]
    layers: list[str]
    f: np.ndarray  # [T, L]
    p: np.ndarray
    u: np.ndarray
    has_init: bool  # steps[0] == 0

    @property
    def init_label(self) -> str:
        return "init" if self.has_init else f"first measurement (step {int(self.steps[0])}, no step 0)"


def _series(layers_table: pd.DataFrame) -> _Series | None:
    order = layer_order(layers_table)
    if not order:
        return None
    m = mean_over_seeds(layers_table, ["step", "layer"], ["f", "p", "u"])
    steps = np.sort(m["step"].unique()).astype(np.int64)
    epochs = m.groupby("step")["epoch"].mean().reindex(steps).to_numpy(dtype=float)
    mats = {}
    for v in ("f", "p", "u"):
        mats[v] = (
            m.pivot(index="step", columns="layer", values=v).reindex(index=steps, columns=order).to_numpy(dtype=float)
        )
    return _Series(steps, epochs, order, mats["f"], mats["p"], mats["u"], bool(steps[0] == 0))


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    """Mean over axis 1 ignoring NaN; NaN (no warning) where a row has no finite value."""
    finite = np.isfinite(a)
    cnt = finite.sum(axis=1)
    s = np.where(finite, a, 0.0).sum(axis=1)
    return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)


@dataclass
class _Curve:
    """A curve split into init and after-init parts, with its peak and last finite value."""

    init: float
    peak: float
    peak_epoch: float
    peak_index: int  # index into the full series
    last: float
    last_epoch: float
    last_index: int


def _curve(values: np.ndarray, epochs: np.ndarray) -> _Curve | None:
    if len(values) < 2:
        return None
    post = values[1:]
    finite = np.flatnonzero(np.isfinite(post))
    if len(finite) == 0:
        return None
    k = int(finite[np.argmax(post[finite])]) + 1
    j = int(finite[-1]) + 1
    return _Curve(float(values[0]), float(values[k]), float(epochs[k]), k, float(values[j]), float(epochs[j]), j)


def _need_measurements(s: _Series | None, name: str, minimum: int = 3) -> Finding | None:
    if s is None:
        return Finding(name, False, "no layer measurements (no complete checkpoints in the runs)")
    if len(s.steps) < minimum:
        return Finding(
            name,
            False,
            f"only {len(s.steps)} measurement(s) (step(s) {list(map(int, s.steps))}); "
            f"need at least {minimum} (init and {minimum - 1} after it)",
        )
    return None


# -- the five findings -----------------------------------------------------------------------


def _a_rise_fall(s: _Series | None, rise_margin: float, fall_margin: float) -> Finding:
    name = NAMES[0]
    if (bad := _need_measurements(s, name)) is not None:
        return bad
    assert s is not None  # _need_measurements returned a Finding otherwise
    mean_f = _nanmean_rows(s.f)
    c = _curve(mean_f, s.epochs)
    if c is None or not np.isfinite(c.init):
        return Finding(name, False, "mean f over layers is undefined at init or after it")
    rise, fall = c.peak - c.init, c.peak - c.last
    per_layer = 0
    for li in range(len(s.layers)):
        cl = _curve(s.f[:, li], s.epochs)
        if cl and np.isfinite(cl.init) and cl.peak - cl.init > rise_margin and cl.peak - cl.last >= fall_margin:
            per_layer += 1
    holds = bool(rise > rise_margin and fall >= fall_margin)
    detail = (
        f"mean f over layers: {s.init_label} {_fmt(c.init)}, peak {_fmt(c.peak)} at epoch {_ep(c.peak_epoch)}, "
        f"last {_fmt(c.last)} at epoch {_ep(c.last_epoch)}; rise {rise:+.3f} (needs > {rise_margin:g}), "
        f"fall {fall:.3f} (needs >= {fall_margin:g}); {per_layer}/{len(s.layers)} layers rise then fall"
    )
    return Finding(name, holds, detail)


def _loss_onset(stats: pd.DataFrame, loss_drop: float) -> tuple[float | None, str]:
    """Epoch where the (val, else train) loss first drops below loss_drop x its running maximum, and a note."""
    if stats.empty:
        return None, "no loss recorded (stats table empty)"
    split = "val"
    st = stats[(stats["split"] == "val") & np.isfinite(stats["loss"])]
    if st.empty:
        split = "train"
        st = stats[(stats["split"] == "train") & np.isfinite(stats["loss"])]
    if st.empty:
        return None, "no finite loss recorded"
    m = mean_over_seeds(st, ["step"], ["loss"])
    loss = m["loss"].to_numpy(dtype=float)
    ep = m["epoch"].to_numpy(dtype=float)
    if len(loss) < 2:
        return None, f"{split} loss measured only once"
    plateau = np.maximum.accumulate(loss)
    for t in range(1, len(loss)):
        if loss[t] < loss_drop * plateau[t - 1]:
            return float(ep[t]), (
                f"{split} loss starts to fall at epoch {_ep(ep[t])} "
                f"({_fmt(loss[t])} < {loss_drop:g} x plateau {_fmt(plateau[t - 1])})"
            )
    return None, (
        f"{split} loss never drops below {loss_drop:g} x its running maximum (from {_fmt(loss[0])} to {_fmt(loss[-1])})"
    )


def _b_fall_with_loss(
    s: _Series | None, stats: pd.DataFrame, fall_margin: float, loss_drop: float, epoch_factor: float
) -> Finding:
    name = NAMES[1]
    if (bad := _need_measurements(s, name)) is not None:
        return bad
    assert s is not None  # _need_measurements returned a Finding otherwise
    c = _curve(_nanmean_rows(s.f), s.epochs)
    if c is None:
        return Finding(name, False, "mean f over layers is undefined after init")
    onset, note = _loss_onset(stats, loss_drop)
    fpart = f"mean f peaks at epoch {_ep(c.peak_epoch)} ({_fmt(c.peak)}, last {_fmt(c.last)})"
    if c.peak - c.last < fall_margin:
        return Finding(name, False, f"{fpart} and does not fall by >= {fall_margin:g} after it; {note}")
    if onset is None:
        return Finding(name, False, f"{fpart}; {note}")
    if not (c.peak_epoch > 0 and onset > 0):
        return Finding(name, False, f"{fpart}; {note}; epochs must be > 0 to compare")
    ratio = c.peak_epoch / onset
    holds = bool(max(ratio, 1 / ratio) <= epoch_factor)
    return Finding(
        name, holds, f"{fpart}; {note}; peak/onset epoch ratio {_ep(ratio)} (needs within x{epoch_factor:g})"
    )


def _c_first_layer(s: _Series | None) -> Finding:
    name = NAMES[2]
    if (bad := _need_measurements(s, name)) is not None:
        return bad
    assert s is not None  # _need_measurements returned a Finding otherwise
    if len(s.layers) < 2:
        return Finding(name, False, f"only one layer ({s.layers[0]!r}); need at least two to compare")
    drops, parts = [], []
    for li, layer in enumerate(s.layers):
        c = _curve(s.f[:, li], s.epochs)
        d = (c.peak - c.last) / c.peak if c is not None and c.peak > 0 else math.nan
        drops.append(d)
        if c is None:
            parts.append(f"{li + 1} [{layer}]: undefined")
        else:
            parts.append(
                f"{li + 1} [{layer}]: {_fmt(d)} (peak {_fmt(c.peak)} at epoch {_ep(c.peak_epoch)} "
                f"-> last {_fmt(c.last)})"
            )
    d1 = drops[0]
    others = [d for d in drops[1:] if np.isfinite(d)]
    if not np.isfinite(d1) or not others:
        holds, why = False, "relative drops undefined for layer 1 or for all deeper layers"
    else:
        holds = bool(d1 > 0 and d1 > max(others))
        best = int(np.nanargmax(np.asarray(drops, dtype=float)))
        why = f"largest: layer {best + 1}"
    return Finding(name, holds, f"relative drop of f from peak to last: {'; '.join(parts)}; {why}")


def _d_predictability(s: _Series | None, last_fraction: float) -> Finding:
    name = NAMES[3]
    if (bad := _need_measurements(s, name, minimum=2)) is not None:
        return bad
    assert s is not None  # _need_measurements returned a Finding otherwise
    n_post = len(s.steps) - 1
    k = max(1, math.ceil(last_fraction * n_post))
    tail = s.p[-k:]
    finite = np.isfinite(tail)
    p_late = np.where(
        finite.any(axis=0), np.where(finite, tail, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1), np.nan
    )
    rises, defined, parts = 0, 0, []
    for li in range(len(s.layers)):
        c = _curve(s.p[:, li], s.epochs)
        if c is not None and np.isfinite(c.init):
            defined += 1
            rises += int(c.last > c.init)
            parts.append(f"{li + 1}: {_fmt(c.init)}->{_fmt(c.last)}")
        else:
            parts.append(f"{li + 1}: undefined")
    ok = np.isfinite(p_late)
    depth_txt = ", ".join(_fmt(x) for x in p_late)
    if ok.sum() < 2:
        return Finding(
            name,
            False,
            f"p is undefined (NaN) late in training for {int((~ok).sum())} of "
            f"{len(ok)} layer(s) ({depth_txt}); need at least two defined layers "
            f"to correlate with depth",
        )
    rho = spearman(np.arange(len(s.layers))[ok].astype(float), p_late[ok])
    rise_ok = defined > 0 and rises > defined / 2
    depth_ok = bool(np.isfinite(rho) and rho > 0)
    detail = (
        f"p {s.init_label}->last per layer: {', '.join(parts)} ({rises}/{defined} rise, needs > half); "
        f"mean p over the last {k} measurement(s) by depth: {depth_txt}; "
        f"Spearman(depth, p) = {_fmt(rho)} (needs > 0)"
    )
    return Finding(name, bool(rise_ok and depth_ok), detail)


def _e_informativeness(s: _Series | None, u_ceiling: float, require_dip: bool) -> Finding:
    name = NAMES[4]
    if (bad := _need_measurements(s, name, minimum=2)) is not None:
        return bad
    assert s is not None  # _need_measurements returned a Finding otherwise
    c = _curve(_nanmean_rows(s.u), s.epochs)
    if c is None or not np.isfinite(c.init):
        return Finding(name, False, "mean u over layers is undefined at init or after it")
    post = s.u[1:]
    if np.isfinite(post).any():
        flat = int(np.nanargmax(np.where(np.isfinite(post), post, -np.inf)))
        t, li = divmod(flat, post.shape[1])
        u_top, u_top_layer, u_top_epoch = float(post[t, li]), li + 1, float(s.epochs[t + 1])
    else:
        u_top, u_top_layer, u_top_epoch = math.nan, 0, math.nan
    dip = c.peak - c.last
    rises = c.peak > c.init
    dips = dip > 0 if require_dip else dip >= 0
    below = bool(np.isfinite(u_top) and u_top < u_ceiling)
    detail = (
        f"mean u over layers: {s.init_label} {_fmt(c.init)}, max {_fmt(c.peak)} at epoch {_ep(c.peak_epoch)}, "
        f"last {_fmt(c.last)} (dip {dip:.3f}); highest layer u {_fmt(u_top)} "
        f"(layer {u_top_layer}, epoch {_ep(u_top_epoch)}; needs < {u_ceiling:g})"
    )
    return Finding(name, bool(rises and dips and below), detail)


def findings(
    runs: PathLike | Iterable[PathLike],
    *,
    rise_margin: float = 0.01,
    fall_margin: float = 0.02,
    loss_drop: float = 0.95,
    epoch_factor: float = 10.0,
    last_fraction: float = 0.25,
    u_ceiling: float = 0.5,
    require_dip: bool = False,
) -> list[Finding]:
    """Check the source's five findings (module docstring, criteria a-e) on ``runs``, means over seeds.

    ``runs`` is a run directory, a folder of run directories, or a list of
    either (as for :func:`nnphases.store.runs.run_dirs`). Returns the findings
    in the order a-e; missing data gives ``holds=False`` with a reason. A
    damaged checkpoint is refused (:class:`~nnphases.store.DamagedCheckpoint`
    names it and the file) rather than left out, which could change a
    verdict unseen; ``read_table(..., damaged="skip")`` reads the rest.
    """
    dirs = one_setup(runs)
    layers = read_table(dirs, "layers")
    stats = read_table(dirs, "stats")
    s = _series(layers)
    return [
        _a_rise_fall(s, rise_margin, fall_margin),
        _b_fall_with_loss(s, stats, fall_margin, loss_drop, epoch_factor),
        _c_first_layer(s),
        _d_predictability(s, last_fraction),
        _e_informativeness(s, u_ceiling, require_dip),
    ]


def report(found: Iterable[Finding]) -> str:
    """One line per finding: ``holds`` / ``does not hold``, its name, and the numbers behind it."""
    return "\n".join(f"{'holds' if f.holds else 'does not hold'}: {f.name} -- {f.detail}" for f in found)
