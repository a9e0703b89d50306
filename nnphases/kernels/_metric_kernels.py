"""The public metric kernels (re-exported by :mod:`nnphases.kernels`): sample-set
metrics of one layer from its per-class counts, on the backend the caller picks."""

from __future__ import annotations

from typing import Any

from ..metrics import LayerMetrics, NodeMetrics
from ..metrics import _validate as _validate_counts
from . import _arrays, _validate
from ._dispatch import select

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray


def _metric_inputs(counts: Array, class_sizes: Array) -> tuple[Any, Any]:
    """Host copies of GPU tables, then nnphases.metrics' checks (shapes, integer dtypes, ranges)."""
    return _validate_counts(_arrays.to_numpy(_arrays.describe(counts, "counts").obj),
                            _arrays.to_numpy(_arrays.describe(class_sizes, "class_sizes").obj))


def node_metrics(counts: Array, class_sizes: Array, *, backend: str | None = None,
                 threads: int | None = None) -> NodeMetrics:
    """Per-node sample-set metrics (float64; see :mod:`nnphases.metrics`) from ``counts`` int ``[C, N]``
    and ``class_sizes`` int ``[C]``. Computed on the host (the table is small next to the activations);
    the fields are read-only NumPy arrays. The native backends do the arithmetic of
    :func:`nnphases.metrics.node_metrics_np` in the same order in one pass: fractions and flags are
    identical, the entropies, ``p`` and ``u`` within ``8 * eps * max(1, log C)`` (only the logarithms can
    differ; tests/test_metric_kernels.py), NaN on the same nodes. ``threads`` as in :func:`class_counts`."""
    n, sizes = _metric_inputs(counts, class_sizes)
    threads = _validate.threads_value(threads)
    return select("node_metrics", "cpu", backend)[1](n, sizes, threads=threads)


def layer_metrics(counts: Array, class_sizes: Array, *, backend: str | None = None,
                  threads: int | None = None) -> LayerMetrics:
    """Layer means of :func:`node_metrics` with the spec's exclusions (dead nodes out of ``f``; dead and
    always-active nodes out of ``p`` and ``u``); the native backends compute them in the same pass without
    building per-node arrays, with compensated sums."""
    n, sizes = _metric_inputs(counts, class_sizes)
    threads = _validate.threads_value(threads)
    return select("layer_metrics", "cpu", backend)[1](n, sizes, threads=threads)
