"""The statistics the analyses share: means over seeds with their standard errors, and rank correlation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["mean_over_seeds", "spearman"]


def mean_over_seeds(table: pd.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Mean, standard error and seed count of ``values`` per ``keys`` (which include ``step``).

    Returns one row per group with the group keys, ``epoch`` (mean over
    seeds), ``<v>`` (mean, NaN-skipping), ``<v>_se`` (sample standard
    deviation / sqrt(n), 0 for a single seed, NaN with none) and ``<v>_n``
    (number of seeds with a finite value), sorted by step; the order of the
    other keys' first appearance is kept within a step.
    """
    keys = list(keys)
    values = list(values)
    cols = keys + ["epoch"] + [c for v in values for c in (v, f"{v}_se", f"{v}_n")]
    if table.empty:
        return pd.DataFrame(columns=cols)
    g = table.groupby(keys, sort=False, dropna=False)
    out = g[["epoch", *values]].mean()
    std = g[values].std(ddof=1)
    n = g[values].count()
    for v in values:
        se = std[v] / np.sqrt(n[v].where(n[v] > 0))
        se = se.where(n[v] != 1, 0.0)
        out[f"{v}_se"] = se
        out[f"{v}_n"] = n[v]
    out = out.reset_index()
    return out.sort_values("step", kind="stable").reset_index(drop=True)[cols]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    rx = pd.Series(x).rank().to_numpy(dtype=float)
    ry = pd.Series(y).rank().to_numpy(dtype=float)
    rx = rx - rx.mean()
    ry = ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else math.nan
