"""Measures: one kind of measurement each, composed by the :class:`~nnphases.recording.recorder.Recorder`.

Built in: :class:`SampleSets` (per-class counts, node and layer metrics),
:class:`EvalStats` (loss and accuracy), :class:`Masks` (bit-packed masks
streamed to storage), :class:`Records` (each sample's correctness and loss)
and :class:`Probes` (class read-out and input decoder). A
new kind of measurement is a new module in this package defining a
:class:`Measure` subclass and ``MEASURE = ThatClass``: it is found here
(:data:`REGISTRY`), and its options reach ``nnphases run``'s configuration and
command line without editing the Recorder or the CLI.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import PASSES, Binding, Measure, Output, Pass, PlanRow, base_pass, batch_statistics
from .eval_stats import EvalStats, EvalStatsOptions
from .masks import Masks, MasksOptions
from .probes import Probes, ProbesOptions
from .records import Records, RecordsOptions
from .sample_sets import SampleSets, SampleSetsOptions

__all__ = [
    "Measure",
    "Binding",
    "Output",
    "Pass",
    "PASSES",
    "base_pass",
    "batch_statistics",
    "PlanRow",
    "REGISTRY",
    "SampleSets",
    "SampleSetsOptions",
    "EvalStats",
    "EvalStatsOptions",
    "Masks",
    "MasksOptions",
    "Probes",
    "ProbesOptions",
    "Records",
    "RecordsOptions",
    "default_measures",
]


def _discover() -> dict[str, type[Measure]]:
    found: dict[str, type[Measure]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        cls = getattr(importlib.import_module(f"{__name__}.{info.name}"), "MEASURE", None)
        if cls is not None:
            found[cls.name] = cls
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


REGISTRY: dict[str, type[Measure]] = _discover()


def default_measures() -> list[Measure]:
    """What a Recorder measures when not told: sample-set counts and the evaluation loss and accuracy."""
    return [SampleSets(), EvalStats()]
