"""Single-layer analysis of source 002 (spec §2, the paper's Figures 1 to 6).

A one-layer linear classifier (``nn.Linear(784, 10)``, cross-entropy, plain SGD) is
trained on FashionMNIST and measured at log-spaced global training steps (0, 1, 2, 4,
8, ... powers of two, plus the last step):

* train and test accuracy (and mean cross-entropy loss);
* the ten weight vectors (10 x 784) as snapshots, to show them as 28x28 images: they
  first become class "prototypes", later lose contrast/structure;
* for one class (``group_class``): each of its *training* samples' dot product with
  the class mean image (raw pixels in [0, 1]), ``d_i = x_i . mean_c``. The samples are
  grouped by that dot product into

  - ``small``: ``d_i`` below the 10th percentile of the class (bottom 10 %),
  - ``typical``: between the 10th and 90th percentiles (middle 80 %),
  - ``large``: at or above the 90th percentile (top 10 %),

  and the mean per-sample cross-entropy loss of each group is recorded at every
  measurement step; the dot products themselves (and a histogram of them) are kept
  for the distribution figure.

``plot_single_layer`` draws ``weights``, ``group_loss``, ``dot_products`` and
``accuracy`` figures; ``main`` runs the whole thing on FashionMNIST (``quick=True``:
a 6,000-sample stratified training subset and a few epochs, for tests and docs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import Dataset, fashion_mnist, stratified_split

__all__ = ["GROUP_NAMES", "FASHION_CLASSES", "power_of_two_steps", "run_single_layer", "plot_single_layer", "main"]

GROUP_NAMES = ("small", "typical", "large")
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# Group thresholds: percentiles of the class's dot products with its mean.
LOW_PCT, HIGH_PCT = 10.0, 90.0


def power_of_two_steps(total: int) -> list[int]:
    """Measurement steps ``0, 1, 2, 4, ..., 2^k <= total`` plus ``total`` itself."""
    if total < 0:
        raise ValueError(f"total steps must be >= 0, got {total}")
    steps = [0]
    s = 1
    while s <= total:
        steps.append(s)
        s *= 2
    if steps[-1] != total:
        steps.append(total)
    return steps


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> tuple[float, float]:
    correct, loss = 0, 0.0
    for i in range(0, len(y), chunk):
        out = model(x[i : i + chunk])
        correct += int((out.argmax(1) == y[i : i + chunk]).sum())
        loss += float(F.cross_entropy(out, y[i : i + chunk], reduction="sum"))
    n = max(len(y), 1)
    return correct / n, loss / n


def run_single_layer(
    train: Dataset,
    test: Dataset,
    *,
    epochs: int = 20,
    lr: float = 0.01,
    batch: int = 128,
    steps: Sequence[int] | None = None,
    seed: int = 0,
    group_class: int = 0,
    hist_bins: int = 60,
) -> dict:
    """Train ``nn.Linear(D, num_classes)`` with SGD (no momentum, no weight decay) on
    cross-entropy for ``epochs`` epochs of shuffled mini-batches of ``batch`` (the
    last, partial batch of an epoch is kept) and measure at the global steps
    ``steps`` (default: ``power_of_two_steps(total)``; step 0 is before any update;
    steps beyond the total are dropped). Everything is fixed by ``seed``.

    Returns a dict of numpy arrays / plain values:
    ``steps`` int64 [S]; ``train_acc``, ``test_acc``, ``train_loss``, ``test_loss``
    float64 [S]; ``weights`` float32 [S, C, D] and ``bias`` float32 [S, C];
    ``image_shape`` (H, W) of one weight image; ``group_class``; ``group_names``
    ("small", "typical", "large"); ``dots`` float64 [n_c] (dot product of each
    training sample of the class with the class mean); ``thresholds`` (10th, 90th
    percentile of ``dots``); ``group_index`` int64 [n_c] (0/1/2 per sample);
    ``group_sizes`` int64 [3]; ``group_loss`` float64 [S, 3] (mean per-sample
    cross-entropy of each group); ``group_acc`` float64 [S, 3]; ``hist_counts``,
    ``hist_edges`` (histogram of ``dots``); ``test_recon`` float64 [S] (test reconstruction error
    1 - R^2 of the input from the outputs, linear decoder fitted on the training set); ``config``."""
    if not 0 <= group_class < train.num_classes:
        raise ValueError(f"group_class={group_class} outside [0, {train.num_classes})")
    if epochs < 0 or batch < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 0, batch >= 1, lr > 0; got {epochs}, {batch}, {lr}")
    gen = torch.Generator().manual_seed(seed)
    xtr = train.x.flatten(1)
    ytr = train.y
    xte = test.x.flatten(1)
    yte = test.y
    n, dim = xtr.shape
    per_epoch = math.ceil(n / batch) if n else 0
    total = epochs * per_epoch
    if steps is None:
        meas = power_of_two_steps(total)
    else:
        meas = sorted({int(s) for s in steps if 0 <= int(s) <= total})
        if not meas:
            raise ValueError(f"no measurement step in [0, {total}] among {list(steps)}")
    meas_set = set(meas)

    torch.manual_seed(seed)  # nn.Linear's default init draws from the global generator
    model = nn.Linear(dim, train.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    # The chosen class, its dot products with its own mean, and the three groups.
    xc = xtr[ytr == group_class].double()
    if len(xc) < 3:
        raise ValueError(f"class {group_class} has {len(xc)} training samples; need at least 3")
    mean_c = xc.mean(0)
    dots = (xc @ mean_c).numpy()
    lo, hi = np.percentile(dots, [LOW_PCT, HIGH_PCT])
    group_index = np.where(dots < lo, 0, np.where(dots >= hi, 2, 1)).astype(np.int64)
    group_sizes = np.bincount(group_index, minlength=3).astype(np.int64)
    xc = xc.float()
    yc = torch.full((len(xc),), group_class, dtype=torch.int64)
    gidx = torch.from_numpy(group_index)

    rec: dict[str, list] = {
        k: []
        for k in (
            "train_acc",
            "test_acc",
            "train_loss",
            "test_loss",
            "weights",
            "bias",
            "group_loss",
            "group_acc",
            "recon",
        )
    }

    @torch.no_grad()
    def measure() -> None:
        acc, loss = _evaluate(model, xtr, ytr)
        rec["train_acc"].append(acc)
        rec["train_loss"].append(loss)
        acc, loss = _evaluate(model, xte, yte)
        rec["test_acc"].append(acc)
        rec["test_loss"].append(loss)
        rec["weights"].append(model.weight.detach().clone().numpy())
        rec["bias"].append(model.bias.detach().clone().numpy())
        out = model(xc)
        per = F.cross_entropy(out, yc, reduction="none").double()
        hit = (out.argmax(1) == yc).double()
        rec["group_loss"].append([float(per[gidx == g].mean()) if group_sizes[g] else float("nan") for g in range(3)])
        rec["group_acc"].append([float(hit[gidx == g].mean()) if group_sizes[g] else float("nan") for g in range(3)])
        rec["recon"].append(_reconstruction(model, xtr, ytr, xte, yte))

    step = 0
    if 0 in meas_set:
        measure()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step in meas_set:
                measure()

    counts, edges = np.histogram(dots, bins=hist_bins)
    image_shape = (int(train.x.shape[-2]), int(train.x.shape[-1])) if train.x.shape[1] == 1 else None
    return {
        "steps": np.asarray(meas, dtype=np.int64),
        "train_acc": np.asarray(rec["train_acc"], dtype=np.float64),
        "test_acc": np.asarray(rec["test_acc"], dtype=np.float64),
        "train_loss": np.asarray(rec["train_loss"], dtype=np.float64),
        "test_loss": np.asarray(rec["test_loss"], dtype=np.float64),
        "weights": np.stack(rec["weights"]).astype(np.float32),
        "bias": np.stack(rec["bias"]).astype(np.float32),
        "image_shape": image_shape,
        "num_classes": int(train.num_classes),
        "group_class": int(group_class),
        "group_names": GROUP_NAMES,
        "dots": dots.astype(np.float64),
        "thresholds": (float(lo), float(hi)),
        "group_index": group_index,
        "group_sizes": group_sizes,
        "group_loss": np.asarray(rec["group_loss"], dtype=np.float64).reshape(-1, 3),
        "group_acc": np.asarray(rec["group_acc"], dtype=np.float64).reshape(-1, 3),
        "test_recon": np.asarray(rec["recon"], dtype=np.float64),
        "hist_counts": counts.astype(np.int64),
        "hist_edges": edges.astype(np.float64),
        "config": {
            "epochs": epochs,
            "lr": lr,
            "batch": batch,
            "seed": seed,
            "n_train": n,
            "n_test": len(yte),
            "total_steps": total,
            "dataset": train.name,
        },
    }


# --------------------------------------------------------------------------- plots


def _reconstruction(
    model: nn.Linear, xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor, chunk: int = 8192
) -> float:
    """Test reconstruction error (1 - R^2) of the input from the classifier's outputs: a linear decoder fitted
    on the training set in closed form (the source's reconstruction function, Def. 3.4; fast-mode probes)."""
    from ..probes import RidgeProbe

    c = model.out_features
    probe = RidgeProbe(c, c, xtr.shape[1])
    for s in range(0, len(xtr), chunk):
        probe.update_train(model(xtr[s : s + chunk]), ytr[s : s + chunk], xtr[s : s + chunk])
    probe.fit()
    for s in range(0, len(xte), chunk):
        probe.update_test(model(xte[s : s + chunk]), yte[s : s + chunk], xte[s : s + chunk])
    return float(probe.result()["reconstruction_nmse"])


def _pick_rows(steps: np.ndarray, k: int) -> list[int]:
    """Indices of about ``k`` measurement steps spread evenly in log(step + 1), incl. first and last."""
    s = len(steps)
    if s <= k:
        return list(range(s))
    logs = np.log1p(steps.astype(np.float64))
    targets = np.linspace(logs[0], logs[-1], k)
    picked: list[int] = []
    for t in targets:
        order = np.argsort(np.abs(logs - t))
        for j in order:
            if int(j) not in picked:
                picked.append(int(j))
                break
    return sorted(picked)


def _class_names(record: dict) -> list[str]:
    c = record["num_classes"]
    if c == 10 and "fashion" in str(record["config"].get("dataset", "")):
        return list(FASHION_CLASSES)
    return [f"class {i}" for i in range(c)]


def step_axis(ax, label: str = "training step") -> None:
    """A symlog step axis from 0 (step 0 is the initialisation) with a light grid."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"{label} (symlog scale)")
    ax.grid(True, alpha=0.3)


def plot_single_layer(record: dict, out_dir, formats: Sequence[str] = ("png", "svg"), rows: int = 6) -> list[Path]:
    """Write ``weights``, ``group_loss``, ``dot_products`` and ``accuracy`` (with the reconstruction error) figures
    (one file per format) into ``out_dir`` and return their paths."""
    from matplotlib.figure import Figure

    from ..analysis.plot import save_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = record["steps"]
    names = _class_names(record)
    gc = record["group_class"]
    paths: list[Path] = []

    # Weights: rows = steps, columns = classes; each row shares one symmetric colour scale.
    shape = record["image_shape"]
    if shape is not None:
        sel = _pick_rows(steps, rows)
        ncls = record["weights"].shape[1]
        height = 1.35 * len(sel) + 0.8
        fig = Figure(figsize=(1.25 * ncls + 1.2, height))
        axes = fig.subplots(len(sel), ncls, squeeze=False)
        fig.subplots_adjust(top=1 - 0.6 / height, bottom=0.1 / height, hspace=0.25, wspace=0.08)
        for r, si in enumerate(sel):
            w = record["weights"][si]
            vmax = float(np.abs(w).max()) or 1.0
            for c in range(ncls):
                ax = axes[r, c]
                im = ax.imshow(w[c].reshape(shape), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(names[c], fontsize=9)
                if c == 0:
                    ax.set_ylabel(f"step {int(steps[si])}\n|w|≤{vmax:.2g}", fontsize=9)
            cb = fig.colorbar(im, ax=list(axes[r]), fraction=0.012, pad=0.01)
            cb.ax.tick_params(labelsize=7)
        fig.suptitle(
            "Weight vectors of the single-layer classifier over training "
            "(red: positive, blue: negative; symmetric scale per row)",
            fontsize=11,
            y=1 - 0.15 / height,
        )
        paths += save_figure(fig, out_dir, "weights", formats)

    # Group losses.
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    lo, hi = record["thresholds"]
    labels = [
        f"small dot product (bottom {LOW_PCT:g}%, n={record['group_sizes'][0]})",
        f"typical (middle, n={record['group_sizes'][1]})",
        f"large dot product (top {100 - HIGH_PCT:g}%, n={record['group_sizes'][2]})",
    ]
    for g, (lab, col) in enumerate(zip(labels, ("tab:red", "tab:gray", "tab:blue"), strict=True)):
        ax.plot(steps, record["group_loss"][:, g], marker="o", ms=3, color=col, label=lab)
    step_axis(ax)
    ax.set_ylabel("mean per-sample cross-entropy loss")
    ax.set_title(f"Loss of '{names[gc]}' training samples grouped by dot product with the class mean", fontsize=10)
    ax.legend(fontsize=8)
    paths += save_figure(fig, out_dir, "group_loss", formats)

    # Dot-product distribution.
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    edges, counts = record["hist_edges"], record["hist_counts"]
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:gray", edgecolor="white", linewidth=0.3)
    ax.axvline(lo, color="tab:red", ls="--", label=f"{LOW_PCT:g}th percentile = {lo:.1f} (small | typical)")
    ax.axvline(hi, color="tab:blue", ls="--", label=f"{HIGH_PCT:g}th percentile = {hi:.1f} (typical | large)")
    ax.set_xlabel(r"dot product $x_i \cdot \bar{x}_c$ with the class mean")
    ax.set_ylabel("number of training samples")
    ax.set_title(f"Distribution of dot products, class '{names[gc]}' (n={len(record['dots'])})", fontsize=10)
    ax.legend(fontsize=8)
    paths += save_figure(fig, out_dir, "dot_products", formats)

    # Accuracy and reconstruction error (the source's Figure 1).
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(steps, record["train_acc"], marker="o", ms=3, label="train")
    ax.plot(steps, record["test_acc"], marker="s", ms=3, label="test")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Single-layer classifier accuracy", fontsize=10)
    ax.legend()
    ax2.plot(steps, record["test_recon"], marker="o", ms=3, color="tab:purple")
    ax2.set_ylabel("reconstruction error (1 - R$^2$, test)")
    ax2.set_title("Input reconstructed linearly from the outputs", fontsize=10)
    step_axis(ax)
    step_axis(ax2)
    paths += save_figure(fig, out_dir, "accuracy", formats)
    return paths


def main(out_dir, *, quick: bool = False, root=None, formats: Sequence[str] = ("png", "svg"), group_class: int = 0):
    """Load FashionMNIST, train, plot into ``out_dir``; return the figure paths.
    ``quick``: a stratified 6,000-sample training subset, the first 2,000 test
    images and 8 epochs with batch 64 (about 750 steps; seconds on a CPU)."""
    train = fashion_mnist(root, train=True)
    test = fashion_mnist(root, train=False)
    if quick:
        _, keep = stratified_split(train.y, 6000, seed=0)
        train = train.subset(keep)
        test = test.subset(slice(0, 2000))
        record = run_single_layer(train, test, epochs=8, lr=0.05, batch=64, group_class=group_class)
    else:
        record = run_single_layer(train, test, group_class=group_class)
    return plot_single_layer(record, out_dir, formats=formats)


if __name__ == "__main__":  # pragma: no cover
    import sys

    ps = main(sys.argv[1] if len(sys.argv) > 1 else "singlelayer_out", quick="--quick" in sys.argv)
    print("\n".join(map(str, ps)))
