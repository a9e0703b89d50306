"""The single-layer theory of source 002 section 3 (spec §2, "Data model of the theory"),
run numerically: a logistic model ``p = sigmoid(w . x + b)`` (``w`` in R^2, bias ``b``)
trained by full-batch gradient descent on the mean logistic loss over the
``two_attribute`` data, recording how well the input can be reconstructed from the
model's output.

Reconstruction error (the paper's Defs. 3.4/3.5, a linear reconstruction per input
attribute fitted on all training data). With ``z = w . x + b`` the scalar logit, each
attribute ``j`` is reconstructed as ``a_j z + c_j`` with ``a_j, c_j`` the least-squares
optimum over the training set, in closed form ``a_j = Cov(x_j, z) / Var(z)``,
``c_j = E[x_j] - a_j E[z]``. The error is the mean over samples of
``||x - (a z + c)||^2`` divided by the total variance of x, ``tr(Sigma)``::

    recon = 1 - (w^T Sigma^2 w) / ((w^T Sigma w) * tr(Sigma))

where ``Sigma`` is the (biased, 1/N) covariance of x. It lies in [0, 1]: 0 when x lies on
a line that ``z`` pins down, ``1 - lambda_max / tr`` at best for noisy data (``w`` along
the top principal direction), 1 when ``z`` carries nothing (``w = 0``). It depends only on
the direction of ``w`` (not its length, sign, or ``b``).

Expected picture: weights first move toward the large subsets' mean direction
(roughly ``(1, weak)``, near the top principal direction: error falls, large subsets
fitted), then the few small-subset samples, separable only on the weak attribute 2, pull
weight onto attribute 2 (the direction with more noise relative to signal: error rises,
small subsets fitted).

Defaults (chosen so that the fall-then-rise shows clearly for every seed tried, 0-5):
data ``two_attribute(n=1000, large_fraction=0.9, separation=1.0, noise=0.3, weak=0.4)``
(``noise < weak * separation`` so the small subsets are separable on attribute 2); training
``lr=0.2``, ``steps=5000``, ``b = 0`` and, after Ass. 3.3 of the paper (``w_1`` small,
``|w_2|`` bounded away from 0), ``w_1 ~ U(-init_scale/4, init_scale/4)``,
``w_2 = ±U(init_scale/2, init_scale)`` with a random sign, ``init_scale=1``. Under these
the error falls from 0.21-0.76 (seeds 0-5) to its minimum 0.064-0.101 within 33-60 steps
(large subsets 100% correct, small subsets 0-7%) and rises to 0.284-0.308 by step 5000
(small subsets 98-100% correct, ``w_2`` ~ 12 against ``w_1`` ~ 1.2). Without small subsets
(control: ``ds.subset(ds.group == 0)``; the generator refuses ``large_fraction = 1``) the
error ends at its minimum (~0.025-0.027, no rise), ``w`` staying near the large-subset direction.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, two_attribute

__all__ = [
    "DATA_DEFAULTS",
    "TRAIN_DEFAULTS",
    "REL_MARGIN",
    "ABS_MARGIN",
    "default_data",
    "reconstruction_error",
    "train_logistic",
    "phases",
    "report",
    "main",
]

DATA_DEFAULTS: dict[str, Any] = dict(n=1000, large_fraction=0.9, separation=1.0, noise=0.3, weak=0.4)
TRAIN_DEFAULTS: dict[str, Any] = dict(lr=0.2, steps=5000, init_scale=1.0)

# phases(): a fall / rise counts when it exceeds max(REL_MARGIN * (max - min of the curve),
# ABS_MARGIN). The relative part scales with the curve; the absolute floor (in units of the
# normalised error, which lies in [0, 1]) keeps a flat curve's tiny wiggles from counting.
REL_MARGIN = 0.1
ABS_MARGIN = 0.01


def default_data(seed: int = 0, **overrides: Any) -> Dataset:
    """``two_attribute`` with :data:`DATA_DEFAULTS` (any of them overridable) and ``seed``."""
    kw = {**DATA_DEFAULTS, **overrides}
    return two_attribute(seed=seed, **kw)


def _arrays(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = ds.x.flatten(1).double().numpy()
    if x.shape[1] != 2:
        raise ValueError(f"theory expects two attributes per sample, got x of shape {tuple(ds.x.shape)}")
    y = ds.y.numpy().astype(np.float64)
    if ds.num_classes != 2 or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("theory expects binary labels in {0, 1}")
    g = ds.group.numpy() if ds.group is not None else np.zeros(len(y), dtype=np.int64)
    return x, y, g


def _cov(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0)
    return xc.T @ xc / len(x)


def reconstruction_error(w: np.ndarray, sigma: np.ndarray) -> float:
    """Normalised error of the best affine reconstruction of x from ``z = w . x + b``
    (see the module docstring); ``sigma`` is the 1/N covariance of x."""
    w = np.asarray(w, dtype=np.float64)
    tot = float(np.trace(sigma))
    v = float(w @ sigma @ w)
    if tot <= 0:
        return 0.0
    if v <= 1e-300:
        return 1.0
    sw = sigma @ w
    return float(min(1.0, max(0.0, 1.0 - float(sw @ sw) / (v * tot))))


def train_logistic(
    ds: Dataset,
    *,
    lr: float = TRAIN_DEFAULTS["lr"],
    steps: int = TRAIN_DEFAULTS["steps"],
    init_scale: float = TRAIN_DEFAULTS["init_scale"],
    seed: int = 0,
    record_every: int = 1,
) -> dict[str, Any]:
    """Full-batch gradient descent on the mean logistic loss of ``sigmoid(w . x + b)``
    (float64 numpy), from the init described in the module docstring (drawn with
    ``seed``). Records at steps 0, record_every, ..., and always the last step:
    ``step`` [T], ``w`` [T, 2], ``b`` [T], ``loss`` [T], ``acc_large`` [T],
    ``acc_small`` [T] (NaN when the data has no small-subset samples), ``recon`` [T]
    (normalised reconstruction error); plus ``params``."""
    if steps < 0 or record_every < 1:
        raise ValueError(f"need steps >= 0 and record_every >= 1, got {steps}, {record_every}")
    x, y, g = _arrays(ds)
    sigma = _cov(x)
    large, small = g == 0, g == 1
    rng = np.random.default_rng(seed)
    w = np.array(
        [
            rng.uniform(-init_scale / 4, init_scale / 4),
            rng.choice([-1.0, 1.0]) * rng.uniform(init_scale / 2, init_scale),
        ]
    )
    b = 0.0
    rec: dict[str, list] = {k: [] for k in ("step", "w", "b", "loss", "acc_large", "acc_small", "recon")}
    n = len(y)
    for t in range(steps + 1):
        z = x @ w + b
        if t % record_every == 0 or t == steps:
            correct = (z > 0) == (y > 0.5)
            # log(1 + e^z) - y z, stably
            loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
            rec["step"].append(t)
            rec["w"].append(w.copy())
            rec["b"].append(b)
            rec["loss"].append(loss)
            rec["acc_large"].append(float(correct[large].mean()) if large.any() else math.nan)
            rec["acc_small"].append(float(correct[small].mean()) if small.any() else math.nan)
            rec["recon"].append(reconstruction_error(w, sigma))
        if t == steps:
            break
        r = 1.0 / (1.0 + np.exp(-z)) - y
        w = w - lr * (x.T @ r) / n
        b = b - lr * float(r.mean())
    out: dict[str, Any] = {k: np.asarray(v) for k, v in rec.items()}
    out["params"] = dict(lr=lr, steps=steps, init_scale=init_scale, seed=seed, record_every=record_every)
    return out


def phases(record: dict[str, Any]) -> dict[str, Any]:
    """Locate the minimum of the reconstruction error curve. ``falls``: initial - min >
    margin; ``rises``: final - min > margin; margin = max(REL_MARGIN * (max - min),
    ABS_MARGIN) with REL_MARGIN = 0.1 of the curve's range and ABS_MARGIN = 0.01."""
    e = np.asarray(record["recon"], dtype=np.float64)
    steps = np.asarray(record["step"])
    i = int(np.argmin(e))
    lo, hi = float(e[i]), float(e.max())
    margin = max(REL_MARGIN * (hi - lo), ABS_MARGIN)
    init, final = float(e[0]), float(e[-1])
    return dict(
        initial=init,
        min=lo,
        min_index=i,
        min_step=int(steps[i]),
        final=final,
        max=hi,
        margin=margin,
        falls=bool(init - lo > margin),
        rises=bool(final - lo > margin),
    )


def report(record: dict[str, Any]) -> str:
    """One-paragraph summary: reconstruction error initial / min (at step) / final, and the
    large- and small-subset accuracies at the minimum and at the end."""
    ph = phases(record)
    i = ph["min_index"]
    al, asm, w = record["acc_large"], record["acc_small"], record["w"]
    return (
        f"recon error: initial {ph['initial']:.4f}, min {ph['min']:.4f} at step {ph['min_step']}, "
        f"final {ph['final']:.4f} at step {int(record['step'][-1])} "
        f"(margin {ph['margin']:.4f}; falls={ph['falls']}, rises={ph['rises']})\n"
        f"  at min: acc large {al[i]:.3f}, small {asm[i]:.3f}, w=({w[i][0]:.3f}, {w[i][1]:.3f})\n"
        f"  at end: acc large {al[-1]:.3f}, small {asm[-1]:.3f}, w=({w[-1][0]:.3f}, {w[-1][1]:.3f})"
    )


def plot_theory(
    records: dict[str, dict[str, Any]], out_dir: Any, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    """Reconstruction error and the large and small subsets' accuracy over training, one line per run
    (``records``: label -> :func:`train_logistic` record); returns the files written (``theory.<fmt>``)."""
    from matplotlib.figure import Figure

    from ..analysis.plot import save_figure
    from .singlelayer import step_axis

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    ax_r, ax_a = fig.subplots(1, 2)
    for i, (label, rec) in enumerate(records.items()):
        color = f"C{i}"
        steps = np.asarray(rec["step"], dtype=float)
        ax_r.plot(steps, rec["recon"], color=color, lw=1.2, label=label)
        ax_a.plot(steps, rec["acc_large"], color=color, lw=1.2, label=f"{label}: large subsets")
        if not np.all(np.isnan(np.asarray(rec["acc_small"], dtype=float))):
            ax_a.plot(steps, rec["acc_small"], color=color, lw=1.2, ls="--", label=f"{label}: small subsets")
    ax_r.set_ylabel("reconstruction error (1 - R$^2$)")
    ax_r.set_title("Input reconstructed linearly from the logit", fontsize=10)
    ax_a.set_ylabel("accuracy")
    ax_a.set_title("Accuracy on the large and the small subsets", fontsize=10)
    for ax in (ax_r, ax_a):
        step_axis(ax, "gradient descent step")
        ax.legend(fontsize=7)
    fig.suptitle("Source 002's data model: a single-layer logistic model trained by gradient descent", fontsize=11)
    return save_figure(fig, out, "theory", formats)


def main(argv: list[str] | None = None) -> list[Path]:
    ap = argparse.ArgumentParser(description="Single-layer logistic theory of source 002 section 3")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    for k, v in {**DATA_DEFAULTS, **TRAIN_DEFAULTS}.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=v)
    ap.add_argument("--control", action="store_true", help="drop the small subsets")
    ap.add_argument("--out", default=None, help="folder for the figure (theory.png, theory.svg)")
    a = ap.parse_args(argv)
    records = {}
    for s in a.seeds:
        ds = default_data(s, **{k: getattr(a, k) for k in DATA_DEFAULTS})
        if a.control:
            assert ds.group is not None  # two_attribute labels every sample's subset
            ds = ds.subset(ds.group == 0)
        rec = train_logistic(ds, lr=a.lr, steps=a.steps, init_scale=a.init_scale, seed=s)
        records[f"seed {s}{' (control)' if a.control else ''}"] = rec
        print(f"seed {s}{' (control)' if a.control else ''}: {report(rec)}")
    return plot_theory(records, a.out) if a.out else []


if __name__ == "__main__":
    main()
