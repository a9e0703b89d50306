"""Sample-set counts: for every node of the chosen ReLU sites and every class, the samples that activate it."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import torch

from ... import kernels
from ...options import check, option
from ...store import RunDir, TableLike, register_table
from ...store.counts import named_layer, node_columns
from ..stream import Batch, accumulator_dtype
from ._base import Binding, Measure, Output, Pass, PlanRow

# The rows cost more than the counts they come from (about 38 bytes a node in Parquet against 11 for 10 classes'
# compressed counts, and most of a checkpoint's host time), and readers derive a missing layer's rows at 1-2x the
# time of reading them (benchmarks/RESULTS.md). So they are written where they are cheap and handy for tools that
# read Parquet directly: fully connected layers (80 to 4,096 nodes in the presets) and per-channel conv sites;
# the per-position maps of conv layers (VGG-11: 2,048 to 65,536 nodes a site) are derived when read.
NODE_TABLE_MAX_WIDTH = 4096

# Stored bytes per node besides its counts: one nodes.parquet row (measured on 9x320 and VGG-11 checkpoints) and
# one layers.parquet share.
NODE_ROW_BYTES = 48


@dataclass(frozen=True)
class SampleSetsOptions:
    per_channel: bool = option(
        False, help="count conv channels (active when any position is) instead of channel-positions"
    )
    sites: tuple[str, ...] | None = option(None, help="ReLU sites to count (default: every site)", flag="count-sites")
    backend: str | None = option(
        None, help="kernel backend (cuda, cupy, cpp, numba, reference; default: the first that works)"
    )
    node_tables: Literal["auto", "always", "never"] = option(
        "auto",
        help="per-node rows in nodes.parquet: auto (layers of at most --node-table-max-width nodes), "
        "always or never; readers derive the rows of the others from the counts",
    )
    node_table_max_width: int = option(
        NODE_TABLE_MAX_WIDTH, min=1, help="widest layer with per-node rows under --node-tables auto"
    )
    compact_tables: bool = option(
        False,
        help="when the run ends, gather each table's per-checkpoint files into one "
        "file (nnphases compact does it later)",
    )

    def __post_init__(self) -> None:
        check(self)
        if self.backend is not None and self.backend not in kernels.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(kernels.BACKENDS)}; got {self.backend!r}")


def nodes_of(shape: tuple[int, ...], per_channel: bool) -> int:
    """Nodes a site of per-sample ``shape`` contributes: every value, or with ``per_channel`` one per channel."""
    return shape[0] if per_channel and len(shape) > 1 else math.prod(shape)


def node_view(z: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``[batch, nodes]`` activations of a site's output: flattened, or per channel the maximum over positions
    (> 0 exactly when the channel is active somewhere, as a ReLU output is >= 0)."""
    if z.dim() == 2:
        return z
    b = z.shape[0]
    if per_channel and z.dim() > 2:
        return z.reshape(b, z.shape[1], math.prod(z.shape[2:])).amax(dim=2)
    return z.reshape(b, math.prod(z.shape[1:]))


LAYERS = register_table(
    "layers",
    [
        ("layer", pa.string()),
        ("nodes", pa.int64()),
        ("f", pa.float64()),
        ("p", pa.float64()),
        ("u", pa.float64()),
        ("dead", pa.int64()),
        ("always_active", pa.int64()),
    ],
    required=True,
)


def layer_rows(counts: dict[str, np.ndarray], class_sizes: np.ndarray) -> pa.Table:
    """The layers table's rows of one checkpoint: every layer's metrics from one
    :func:`~nnphases.kernels.layer_metrics` call over all of them (no per-node arrays are built); an error is
    raised again from the layer it is in, named."""
    try:
        rows = kernels.layer_metrics(list(counts.values()), class_sizes)
    except (ValueError, TypeError):
        for name, c in counts.items():
            named_layer(name, kernels.layer_metrics, c, class_sizes)
        raise
    return pa.table(
        {
            "layer": list(counts),
            "nodes": [r.nodes for r in rows],
            "f": [r.fraction for r in rows],
            "p": [r.predictability for r in rows],
            "u": [r.informativeness for r in rows],
            "dead": [r.dead for r in rows],
            "always_active": [r.always_active for r in rows],
        },
        schema=LAYERS.columns,
    )


def sample_set_tables(
    counts: dict[str, np.ndarray],
    class_sizes: np.ndarray,
    *,
    node_tables: str = "auto",
    node_table_max_width: int = NODE_TABLE_MAX_WIDTH,
) -> dict[str, TableLike]:
    """The tables SampleSets writes from one checkpoint's counts, to be finished by the store (on the writer's
    thread): the layers table, and the nodes table of the layers ``node_tables`` names ("always": every layer,
    "never": none, "auto": those of at most ``node_table_max_width`` nodes; readers derive the others' rows from
    the counts)."""
    tabled = [
        name
        for name, c in counts.items()
        if node_tables == "always" or (node_tables == "auto" and c.shape[1] <= node_table_max_width)
    ]
    # Layer rows first: the metric kernels validate the counts against the class sizes.
    out: dict[str, TableLike] = {"layers": lambda: layer_rows(counts, class_sizes)}
    if tabled:
        out["nodes"] = lambda: node_columns(counts, class_sizes, tabled)
    return out


class SampleSets(Measure):
    """Per-class counts of active samples at every chosen site, summed over the evaluation pass in place
    (int32 counters for sets under 2^31 samples, int64 beyond), stored as ``counts.npz`` with their layer metrics
    (``layers`` table) and the node metrics of the layers ``node_tables`` names (``nodes`` table; readers derive
    the others' from the counts)."""

    name = "sample_sets"
    Options = SampleSetsOptions
    order = 0
    tables = (LAYERS,)

    def bind(self, binding: Binding) -> None:
        super().bind(binding)
        self.sites = binding.check_sites(self.options.sites, "count_sites")
        binding.check_backend(self.options.backend, "class_counts", "backend")
        self.nodes = {s: nodes_of(binding.sites[s], self.options.per_channel) for s in self.sites}
        self._acc: dict[str, torch.Tensor] = {}
        self._counters: dict[str, kernels.ClassCounts] = {}
        self._labels_of: Batch | None = None
        self._checked: kernels.CheckedLabels | torch.Tensor | None = None

    def passes(self) -> dict[Pass, Collection[str]]:
        return {"eval": self.sites}

    def begin(self, checkpoint: object) -> None:
        b = self.binding
        assert b is not None
        dtype = accumulator_dtype(b.eval_samples)
        self._acc = {s: torch.zeros((b.num_classes, n), dtype=dtype, device=b.device) for s, n in self.nodes.items()}
        # Labels were checked on the host and a NaN or inf in any ReLU output reaches the logits, which the
        # Recorder checks once per pass: the kernel's own checks would cost a GPU synchronisation per site and
        # batch. The counters validate the tables and options once, not on each of the pass's many calls.
        self._counters = {
            s: kernels.ClassCounts(
                a, b.num_classes, backend=self.options.backend, check_finite=False, check_labels=False
            )
            for s, a in self._acc.items()
        }

    def _labels(self, batch: Batch) -> kernels.CheckedLabels | torch.Tensor:
        """The batch's labels, on the host checked once for all the sites that count them."""
        if self._labels_of is not batch or self._checked is None:
            assert self.binding is not None
            y = batch.y
            self._labels_of = batch
            self._checked = kernels.CheckedLabels(y, self.binding.num_classes) if y.device.type == "cpu" else y
        return self._checked

    def update(self, p: Pass, site: str, z: torch.Tensor, batch: Batch) -> None:
        self._counters[site].add(node_view(z, self.options.per_channel), self._labels(batch))

    def update_and_pack(self, p: Pass, site: str, z: torch.Tensor, batch: Batch) -> torch.Tensor:
        """:meth:`update` that also returns the site's packed masks (``pack_masks`` of the same nodes) from the
        same read of ``z``: the Recorder calls it instead of :meth:`update` and Masks' own packing when both
        measure a CPU site with the same node view and backend."""
        assert self.binding is not None
        _, packed = kernels.count_and_pack(
            node_view(z, self.options.per_channel),
            self._labels(batch),
            self.binding.num_classes,
            out=self._acc[site],
            backend=self.options.backend,
            check_finite=False,
        )
        return packed

    def sums(self, p: Pass) -> dict[str, torch.Tensor]:
        return {f"counts:{s}": a for s, a in self._acc.items()} if p == "eval" else {}

    def end_pass(self, p: Pass, class_sizes: np.ndarray, samples: int) -> None:
        self._class_sizes = class_sizes

    def compute(self) -> Output:
        counts = {s: a.cpu().numpy() for s, a in self._acc.items()}  # int32 or int64, as accumulated
        self._acc, self._counters = {}, {}
        self._labels_of = self._checked = None
        o = self.options
        return Output(
            tables=sample_set_tables(
                counts, self._class_sizes, node_tables=o.node_tables, node_table_max_width=o.node_table_max_width
            ),
            counts=counts,
            class_sizes=self._class_sizes,
        )

    def finish(self, run: RunDir) -> None:
        if self.options.compact_tables:
            run.compact()

    def plan(self, num_classes: int, eval_samples: int | None) -> list[PlanRow]:
        width = torch.tensor([], dtype=accumulator_dtype(eval_samples)).element_size()
        stored = (
            1
            if eval_samples is not None and eval_samples < 256
            else (2 if eval_samples is not None and eval_samples < 65536 else 4)
        )
        return [
            PlanRow(
                self.name,
                s,
                n,
                num_classes * n * width,
                num_classes * n * stored + n * NODE_ROW_BYTES * self._tabled(n),
            )
            for s, n in self.nodes.items()
        ]

    def _tabled(self, nodes: int) -> bool:
        o = self.options
        return o.node_tables == "always" or (o.node_tables == "auto" and nodes <= o.node_table_max_width)


MEASURE = SampleSets
