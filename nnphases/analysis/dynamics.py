"""Sample-set dynamics read from the stored masks: which samples are in each node's sample set, over training.

Two tables per run, each row one (step, layer) of one seed:

- ``churn``: between consecutive checkpoints with masks, each node's Jaccard churn
  ``1 - |A ∩ B| / |A ∪ B|`` of its sample set A (the earlier step) and B (the later one), from
  :func:`nnphases.kernels.mask_overlap`. Columns: the later ``step`` and its ``epoch``, ``prev_step``, ``layer``,
  ``nodes``, ``churn`` (mean over the nodes whose union is not empty), ``churn_pooled``
  (``1 - sum |A ∩ B| / sum |A ∪ B|`` over the layer's nodes), ``moving`` (the share of nodes whose set changed at
  all). When sample sets settle, churn falls towards 0.
- ``redundancy``: per checkpoint, how much the layer's nodes co-activate beyond what their activation fractions
  predict, from :func:`nnphases.kernels.coactivation`. For nodes i and j over S samples with set sizes n_i, n_j and
  n_ij samples in common, the phi coefficient of their binary activations is
  ``(S n_ij - n_i n_j) / sqrt(n_i (S - n_i) n_j (S - n_j))`` (0 for independent nodes, 1 for identical sets, -1 for
  complementary ones). Columns: ``step``, ``epoch``, ``layer``, ``nodes``, ``live`` (nodes neither dead nor always
  active, the ones phi is defined for), ``mean_abs_phi`` and ``mean_phi`` over the pairs of live nodes,
  ``duplicates`` (the share of live nodes with another live node of phi above 0.99), and ``code_score``: for
  ``min(CODE_SAMPLES, nodes // 4)`` samples spread evenly over the evaluation set, ``log |det K|`` of their binary
  codes' agreement matrix ``K[a, b] = nodes - hamming(code_a, code_b)`` (:func:`code_score`, from
  :func:`nnphases.kernels.sample_agreement`: the score that ranks untrained networks by how differently they code
  different inputs). K has rank at most the live nodes + 3, so more samples would make it singular whatever the
  codes; -inf when K is singular, e.g. when two chosen samples share a code.

With per-sample records (``Records``, ``--keep-records``) two more:

- ``fitted``: per checkpoint, the share of samples ``fitted`` for good by it (correct there and at every later
  checkpoint) and the share ``correct`` there; a sample's fitting step is the first checkpoint from which it stays
  correct (never, when it is wrong at the last one). ``t90`` (the ``settled`` column, the same on every row): the
  first checkpoint by which 90% of the samples that end correct are fitted; the samples fitted after it are the
  *late* ones.
- ``late``: between consecutive checkpoints with masks, the pooled churn (as above) of three groups of samples
  separately: ``early`` (fitted by ``t90``), ``late`` (fitted after it) and ``never`` (wrong at the end), from
  :func:`nnphases.kernels.mask_overlap` with the groups as classes: do the late samples' memberships keep moving
  after the majority's settle?

Masks are read one layer at a time, in blocks of nodes for the churn, so memory holds two blocks of one layer (or,
for the redundancy, one layer's masks and its ``nodes x nodes`` table: layers wider than ``max_nodes`` are skipped
and named in the result's ``skipped`` list).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import kernels
from ..store import RunDir, atomic_write_bytes, read_records
from ..store.records import RECORDS
from ..store.runs import PathLike, run_dirs

__all__ = [
    "Dynamics",
    "dynamics",
    "churn_table",
    "redundancy_table",
    "fitted_tables",
    "write_tables",
    "TABLES",
    "GROUPS",
]

TABLES = ("dynamics_churn", "dynamics_redundancy", "dynamics_fitted", "dynamics_late")  # ``<name>.parquet`` each
GROUPS = ("early", "late", "never")  # the samples of the late table, by when they are fitted

_BLOCK = 1024  # nodes of one layer read at a time for the churn
CODE_SAMPLES = 128  # samples of the binary-code score, as the minibatch the score was defined with


@dataclass
class Dynamics:
    """The tables of :func:`dynamics` over every run asked for (a ``seed`` column tells the runs apart)."""

    churn: pd.DataFrame
    redundancy: pd.DataFrame
    fitted: pd.DataFrame = field(default_factory=pd.DataFrame)
    late: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: list[str] = field(default_factory=list)


def _mask_steps(run: RunDir) -> list[int]:
    return [s for s in run.completed_steps() if run.mask_nodes(s)]


def _epochs(run: RunDir, steps: Sequence[int]) -> dict[int, float]:
    return {s: float(run.read_table(s, "layers")["epoch"].iloc[0]) for s in steps}


def _samples(run: RunDir, step: int) -> int:
    _, sizes = run.read_counts(step)
    return int(sizes.sum())


def churn_table(path: PathLike, layers: Sequence[str] | None = None) -> pd.DataFrame:
    """The churn rows of one run folder (see the module docstring)."""
    run = RunDir(path)
    steps = _mask_steps(run)
    if len(steps) < 2:
        return pd.DataFrame(
            columns=["seed", "step", "epoch", "prev_step", "layer", "nodes", "churn", "churn_pooled", "moving"]
        )
    seed = int(run.read_table(steps[0], "layers")["seed"].iloc[0])
    epochs = _epochs(run, steps)
    samples = _samples(run, steps[0])
    rows = []
    for prev, step in itertools.pairwise(steps):
        widths = run.mask_nodes(step)
        for layer in _chosen(widths, layers, run, step):
            width = widths[layer]
            inter, union = _overlap(run, prev, step, layer, width, samples)
            some = union > 0
            rows.append(
                dict(
                    seed=seed,
                    step=step,
                    epoch=epochs[step],
                    prev_step=prev,
                    layer=layer,
                    nodes=width,
                    churn=float(np.mean(1 - inter[some] / union[some])) if some.any() else math.nan,
                    churn_pooled=float(1 - inter.sum() / union.sum()) if union.sum() else math.nan,
                    moving=float(np.mean(inter != union)) if width else math.nan,
                )
            )
    return pd.DataFrame(rows)


def redundancy_table(
    path: PathLike, layers: Sequence[str] | None = None, *, max_nodes: int = 8192
) -> tuple[pd.DataFrame, list[str]]:
    """The redundancy rows of one run folder and the layers skipped for width (see the module docstring)."""
    run = RunDir(path)
    steps = _mask_steps(run)
    rows: list[dict] = []
    skipped: list[str] = []
    if not steps:
        return pd.DataFrame(rows), skipped
    seed = int(run.read_table(steps[0], "layers")["seed"].iloc[0])
    epochs = _epochs(run, steps)
    samples = _samples(run, steps[0])
    for step in steps:
        widths = run.mask_nodes(step)
        for layer in _chosen(widths, layers, run, step):
            width = widths[layer]
            if width > max_nodes:
                if layer not in skipped:
                    skipped.append(layer)
                continue
            masks = run.read_masks(step, layer)
            co = kernels.coactivation(masks, samples).astype(np.float64)
            # K has rank at most rank(C) + 3 (it is 2 C C^T plus rank-3 terms, C the chosen samples' 0/1 codes), and
            # rank(C) is at most the live nodes: samples well below the width keep K regular unless codes coincide.
            m = min(CODE_SAMPLES, samples, width // 4)
            chosen = np.unique(np.linspace(0, samples - 1, m).astype(np.int64)) if m else np.zeros(0, np.int64)
            score = code_score(kernels.sample_agreement(masks, samples, chosen), width)
            rows.append(
                dict(
                    seed=seed,
                    step=step,
                    epoch=epochs[step],
                    layer=layer,
                    nodes=width,
                    **_phi(co, samples),
                    code_score=score,
                )
            )
    return pd.DataFrame(rows), [f"{path}: {layer} (wider than {max_nodes} nodes)" for layer in skipped]


def code_score(distances: np.ndarray, nodes: int) -> float:
    """``log |det K|`` of the agreement matrix ``K = nodes - distances`` of binary codes (``distances``: Hamming,
    ``[m, m]``, as :func:`nnphases.kernels.sample_agreement` gives them); -inf when K is singular."""
    k = nodes - np.asarray(distances, dtype=np.float64)
    if k.shape[0] == 0:
        return math.nan
    if np.linalg.matrix_rank(k) < k.shape[0]:  # singular up to rounding: slogdet would return rounding noise
        return -math.inf
    sign, logdet = np.linalg.slogdet(k)
    return float(logdet) if sign != 0 else -math.inf


def _phi(co: np.ndarray, samples: int) -> dict[str, float]:
    n = np.diag(co)
    live = (n > 0) & (n < samples)
    k = int(live.sum())
    out = dict(live=k, mean_abs_phi=math.nan, mean_phi=math.nan, duplicates=math.nan)
    if k < 2:
        return out
    c, m = co[np.ix_(live, live)], n[live]
    spread = np.sqrt(m * (samples - m))
    phi = (samples * c - np.outer(m, m)) / np.outer(spread, spread)
    off = ~np.eye(k, dtype=bool)
    out.update(
        mean_abs_phi=float(np.abs(phi[off]).mean()),
        mean_phi=float(phi[off].mean()),
        duplicates=float(np.mean((np.where(off, phi, -np.inf) > 0.99).any(axis=1))),
    )
    return out


def _record_steps(run: RunDir) -> list[int]:
    return [s for s in run.completed_steps() if (run.checkpoint_path(s) / RECORDS).exists()]


def fitting_steps(correct: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """Per sample, the first of ``steps`` from which it is correct at every later one (-1: wrong at the last);
    ``correct`` is bool ``[checkpoints, samples]``."""
    # Correct from checkpoint k on: a suffix of Trues. Counted from the end, the run of Trues' length.
    stays = np.logical_and.accumulate(correct[::-1], axis=0)[::-1]
    first = np.where(stays.any(axis=0), stays.argmax(axis=0), -1)
    return np.where(first >= 0, np.asarray(steps)[np.maximum(first, 0)], -1)


def fitted_tables(path: PathLike, layers: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The fitted and late rows of one run folder (empty without records; see the module docstring)."""
    run = RunDir(path)
    steps = _record_steps(run)
    if not steps:
        return pd.DataFrame(), pd.DataFrame()
    seed = int(run.read_table(steps[0], "layers")["seed"].iloc[0])
    epochs = _epochs(run, steps)
    correct = np.stack([read_records(run.checkpoint_path(s))[0] for s in steps])
    fit = fitting_steps(correct, steps)
    samples = correct.shape[1]
    ends = fit[fit >= 0]
    settled = int(np.sort(ends)[max(0, math.ceil(0.9 * len(ends)) - 1)]) if len(ends) else -1
    fitted = pd.DataFrame(
        dict(
            seed=seed,
            step=steps,
            epoch=[epochs[s] for s in steps],
            fitted=[float(np.mean((fit >= 0) & (fit <= s))) for s in steps],
            correct=correct.mean(axis=1),
            settled=settled,
        )
    )
    group = np.where(fit < 0, 2, np.where(fit <= settled, 0, 1)).astype(np.int64)
    rows = []
    masked = [s for s in _mask_steps(run) if s in set(steps)]
    for prev, step in itertools.pairwise(masked):
        widths = run.mask_nodes(step)
        for layer in _chosen(widths, layers, run, step):
            per_node = _overlap(run, prev, step, layer, widths[layer], samples, group, len(GROUPS))
            inter, union = (x.sum(axis=1) for x in per_node)
            for g, name in enumerate(GROUPS):
                rows.append(
                    dict(
                        seed=seed,
                        step=step,
                        epoch=epochs[step],
                        prev_step=prev,
                        layer=layer,
                        group=name,
                        samples=int((group == g).sum()),
                        churn_pooled=float(1 - inter[g] / union[g]) if union[g] else math.nan,
                    )
                )
    return fitted, pd.DataFrame(rows)


def _overlap(
    run: RunDir,
    prev: int,
    step: int,
    layer: str,
    width: int,
    samples: int,
    labels: np.ndarray | None = None,
    classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """|A ∩ B| and |A ∪ B| of each node of ``layer`` between steps ``prev`` and ``step`` (``[nodes]`` each, or
    ``[classes, nodes]`` with ``labels``), the masks read ``_BLOCK`` nodes at a time."""
    shape = (width,) if labels is None else (classes or 1, width)
    inter, union = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for d in range(0, width, _BLOCK):
        a = run.read_masks(prev, layer, nodes=slice(d, d + _BLOCK))
        b = run.read_masks(step, layer, nodes=slice(d, d + _BLOCK))
        both = kernels.mask_overlap(a, b, samples, labels=labels, num_classes=classes)
        inter[..., d : d + _BLOCK], union[..., d : d + _BLOCK] = both[0], both[1]
    return inter, union


def _chosen(widths: dict[str, int], layers: Sequence[str] | None, run: RunDir, step: int) -> list[str]:
    if layers is None:
        return list(widths)
    unknown = [x for x in layers if x not in widths]
    if unknown:
        raise ValueError(f"layers {unknown} have no stored masks at step {step} of {run.path}; stored: {list(widths)}")
    return list(layers)


def dynamics(runs: PathLike | Sequence[PathLike], layers: Sequence[str] | None = None) -> Dynamics:
    """Both tables over every run folder of ``runs`` (as :func:`nnphases.store.runs.run_dirs` finds them), with a
    ``run`` column naming each row's folder."""
    churn, red, fitted, late, skipped = [], [], [], [], []
    for d in run_dirs(runs):
        churn.append(churn_table(d, layers).assign(run=str(d)))
        r, s = redundancy_table(d, layers)
        red.append(r.assign(run=str(d)))
        skipped += s
        f, la = fitted_tables(d, layers)
        fitted.append(f.assign(run=str(d)))
        late.append(la.assign(run=str(d)))

    def joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
        kept = [f for f in frames if len(f)]
        return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()

    return Dynamics(joined(churn), joined(red), joined(fitted), joined(late), skipped)


def write_tables(d: Dynamics, runs: PathLike | Sequence[PathLike]) -> list[Path]:
    """Each run folder's rows of ``d`` as ``<table>.parquet`` in that folder (:data:`TABLES`; those without rows,
    for want of masks or records, are not written), atomically, replacing earlier ones; the files written."""
    import io

    written = []
    for run in run_dirs(runs):
        for name, table in zip(TABLES, (d.churn, d.redundancy, d.fitted, d.late), strict=True):
            if table.empty:
                continue  # no masks, or no records
            rows = table[table["run"] == str(run)].drop(columns="run")
            buf = io.BytesIO()
            rows.reset_index(drop=True).to_parquet(buf, index=False)
            path = Path(run) / f"{name}.parquet"
            atomic_write_bytes(path, buf.getvalue())
            written.append(path)
    return written
