"""nnphases: how every layer of a PyTorch model learns, phase by phase.

The documented public face. The kernels are imported at once (importing never fails for a missing extension,
Numba or CuPy: their backends load on first use and say why one is unavailable, ``nnphases backends``); the
recording, storage and analysis names load on first use, so ``import nnphases`` stays light.

The package's folders are its layers, each importing only those below it: ``kernels`` (and ``probes``),
``store``, then ``recording`` and ``analysis``, then ``integrations`` and ``experiments``, then the command
line (``cli``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .kernels import (
    class_counts,
    coactivation,
    layer_metrics,
    mask_overlap,
    node_metrics,
    pack_masks,
    packed_class_counts,
    sample_popcounts,
)

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports them on first use
    from .analysis.findings import findings as findings
    from .analysis.plot import plot as plot
    from .recording.measures import EvalStats as EvalStats
    from .recording.measures import EvalStatsOptions as EvalStatsOptions
    from .recording.measures import Masks as Masks
    from .recording.measures import MasksOptions as MasksOptions
    from .recording.measures import Measure as Measure
    from .recording.measures import Probes as Probes
    from .recording.measures import ProbesOptions as ProbesOptions
    from .recording.measures import SampleSets as SampleSets
    from .recording.measures import SampleSetsOptions as SampleSetsOptions
    from .recording.recorder import Recorder as Recorder
    from .recording.recorder import RecorderOptions as RecorderOptions
    from .recording.schedule import Schedule as Schedule
    from .store import RunDir as RunDir
    from .store import read_table as read_table
    from .store import run_dirs as run_dirs

__version__ = "0.1.0"

_LAZY = {
    "Recorder": "recording.recorder",
    "RecorderOptions": "recording.recorder",
    "Schedule": "recording.schedule",
    **dict.fromkeys(
        (
            "Measure",
            "SampleSets",
            "SampleSetsOptions",
            "EvalStats",
            "EvalStatsOptions",
            "Masks",
            "MasksOptions",
            "Probes",
            "ProbesOptions",
        ),
        "recording.measures",
    ),
    "RunDir": "store",
    "read_table": "store",
    "run_dirs": "store",
    "findings": "analysis.findings",
    "plot": "analysis.plot",
}

__all__ = [
    "class_counts",
    "pack_masks",
    "packed_class_counts",
    "mask_overlap",
    "sample_popcounts",
    "coactivation",
    "node_metrics",
    "layer_metrics",
    *_LAZY,
    "__version__",
]


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'nnphases' has no attribute {name!r}")
    if not where.startswith("recording"):
        # The built-in measures declare their tables' columns: readers then conform every file to them (an old
        # file lacking a column added later reads with nulls there).
        importlib.import_module(".recording.measures", __name__)
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
