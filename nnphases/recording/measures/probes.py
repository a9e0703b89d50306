"""Probes of the chosen ReLU sites: a class read-out and an input decoder, fitted on the training subset at
every measurement and scored on the evaluation set (:mod:`nnphases.probes`).

Three modes, any of them together: ``fast`` (closed-form ridge), and the trained probes of source 002 by its
text (``text``; ``paper`` is its older name) or by its authors' released code (``code``). Each probe reads its
activations with BatchNorm layers normalising by their running statistics (the network as it predicts: a sample's
activations do not depend on the batch it comes in) or by batch statistics (as the released code reads them, in
batches of ``bn_batch``); option ``bn`` chooses, and its default ``auto`` takes batch statistics for the ``code``
probes only. The ``probes`` table says in its ``bn`` column how each row was read (``none``: the model has no
BatchNorm layer).

Across processes every rank feeds its shard to its fast-mode probes; their statistics are sums, added at the
end of each pass (float64 beside the int64 counts), so every rank fits and scores the probe one process would,
up to the order of float64 additions. The trained probes are refused there: their SGD and Adam runs read every
training sample's activations in one process's memory, and gathering them to every rank would move the whole
training subset's activations at every measurement and train the same models world times over. Batch statistics
are refused there too: they would be those of each process's batches, which depend on the number of processes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch

from ...options import check, option
from ...store import register_table
from ..distributed import reduce_device, shard_range, world
from ..stream import Batch
from ._base import Binding, Measure, Output, Pass, PlanRow, base_pass, batch_statistics

ModeChoice = Literal["fast", "text", "code", "fast+text", "fast+code", "text+code", "fast+text+code", "paper", "both"]
# "paper" and "both" are the names the text protocol had before the code protocol existed (older run folders).
_ALIASES = {"paper": "text", "both": "fast+text"}
_TRAINED = ("text", "code")
_UPDATE = {"train": "update_train", "rescore": "score_train", "eval": "update_test"}


def modes_of(choice: str) -> tuple[str, ...]:
    """The probe modes of a ``mode`` option value, in the order fast, text, code."""
    parts = set(_ALIASES.get(choice, choice).split("+"))
    return tuple(m for m in ("fast", "text", "code") if m in parts)


@dataclass(frozen=True)
class ProbesOptions:
    layers: tuple[str, ...] | None = option(None, help="ReLU sites to probe (default: every site)", flag="probe-layers")
    mode: ModeChoice = option(
        "fast",
        help="fast (closed-form ridge), text (the trained probes as source 002's text states them), code (as its "
        "authors' released code trains them), or several joined by + (paper: text; both: fast+text)",
        flag="probe-mode",
    )
    paper_layers: tuple[str, ...] | None = option(
        None,
        help="with fast and trained probes: the sites that also get the trained ones (default: every probed site)",
        flag="paper-layers",
    )
    bn: Literal["auto", "running", "batch"] = option(
        "auto",
        help="BatchNorm while the probes read activations: running statistics, batch statistics (as the released "
        "code reads), or auto (batch for the code probes, running for the others)",
        flag="probe-bn",
    )
    bn_batch: int = option(
        128, min=2, max=1 << 24, help="samples per batch when reading with batch statistics", flag="probe-bn-batch"
    )
    warm_start: bool = option(
        False, help="trained probes: start from the previous measurement's probes", flag="probe-warm-start"
    )
    max_features: int = option(
        2048, min=1, help="fast mode's feature cap (wider sites are pooled or projected)", flag="probe-features"
    )
    decoder: Literal["linear", "random-features"] = option(
        "linear",
        help="fast mode's decoder: linear (the source's theory) or random-features (closed form)",
        flag="probe-decoder",
    )
    fast: Mapping[str, Any] | None = option(None, help="more keywords of RidgeProbe (e.g. decoder_width)")
    paper: Mapping[str, Any] | None = option(
        None, help="keywords of PaperProbe for the trained probes (epochs, learning rates, ...)"
    )

    def __post_init__(self) -> None:
        check(self)
        for name in ("fast", "paper"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Mapping):
                raise TypeError(f"probes {name} options must be a dict of keywords, got {v!r}")
        if "protocol" in (self.paper or {}):
            raise ValueError(
                "probes paper options: the protocol is chosen by probe_mode (text or code), not by 'protocol'"
            )
        modes = modes_of(self.mode)
        if self.paper_layers is not None and not ("fast" in modes and len(modes) > 1):
            raise ValueError(
                f"paper_layers {list(self.paper_layers)!r} need fast and trained probes (e.g. probe_mode "
                f"'fast+code'), got {self.mode!r}"
            )
        outside = [n for n in self.paper_layers or () if self.layers is not None and n not in self.layers]
        if outside:
            raise ValueError(f"paper_layers: {outside} are not among the probed sites {list(self.layers or ())}")
        # The probes' own checks of their keywords, with placeholder sizes, before any data is seen.
        from ...probes import PaperProbe, RidgeProbe

        if "fast" in modes:
            RidgeProbe(1, 2, 1, decoder=self.decoder, **dict(self.fast or {}))
        kw = dict(self.paper or {})
        if kw.get("decoder") in ("auto", "conv", "cladec"):
            kw["decoder"] = "dense"  # these depend on the sites' shapes, checked when the probes are built
        for m in modes:
            if m in _TRAINED:
                PaperProbe((1,), 2, (1,), protocol=m, **kw)

    @property
    def modes(self) -> tuple[str, ...]:
        return modes_of(self.mode)

    def reading(self, mode: str, batch_norm: bool) -> str:
        """How probes of ``mode`` read: ``running`` or ``batch`` statistics, ``none`` without BatchNorm layers."""
        if not batch_norm:
            return "none"
        if self.bn != "auto":
            return self.bn
        return "batch" if mode == "code" else "running"


PROBES = register_table(
    "probes",
    [
        ("layer", pa.string()),
        ("mode", pa.string()),
        ("train_accuracy", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("reconstruction_mse", pa.float64()),
        ("reconstruction_nmse", pa.float64()),
        ("ridge", pa.float64()),
        ("features", pa.int64()),
        ("reduction", pa.string()),
        ("n_train", pa.int64()),
        ("n_test", pa.int64()),
        ("decoder", pa.string()),
        ("bn", pa.string()),
    ],
)


class Probes(Measure):
    """Fast and/or trained probes at every chosen site (``probes`` table: one row per site and mode)."""

    name = "probes"
    Options = ProbesOptions
    tables = (PROBES,)
    order = 30
    switch = "probes"
    switch_help = "fit probes (class read-out, input decoder) at ReLU sites on the training subset"

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._last_paper: dict[str, dict] = {}  # "mode/site" -> the previous measurement's trained models

    def bind(self, binding: Binding) -> None:
        super().bind(binding)
        o = self.options
        if not binding.has_train:
            raise ValueError("probes need training data: pass train_data (the Recorder's training subset)")
        self.modes = o.modes
        trained = [m for m in self.modes if m in _TRAINED]
        if binding.world > 1 and trained:
            raise ValueError(
                f"probe_mode {o.mode!r}: trained probes train on every training sample's activations "
                f"in one process, but {binding.world} processes measure together; use probe_mode 'fast' "
                "(its sums are added across processes) or probe in a run of one process"
            )
        self.readings = {m: o.reading(m, binding.batch_norm) for m in self.modes}
        if binding.world > 1 and "batch" in self.readings.values():
            raise ValueError(
                f"probe_bn {o.bn!r}: batch statistics would be those of each of the {binding.world} processes' "
                "batches; use probe_bn 'running' or probe in a run of one process"
            )
        if binding.world > 1 and o.decoder == "random-features":
            raise ValueError(
                f"probe_decoder 'random-features' standardises its features by the first training batch, "
                f"which differs between the {binding.world} processes; use probe_decoder 'linear' or "
                "probe in a run of one process"
            )
        self.sites = binding.check_sites(o.layers, "probe_layers")
        self.paper_sites = [s for s in self.sites if trained and (o.paper_layers is None or s in o.paper_layers)]
        outside = [n for n in o.paper_layers or () if n not in self.sites]
        if outside:
            raise ValueError(f"paper_layers: {outside} are not among the probed sites {self.sites}")
        n = binding.train_samples
        free = binding.free_memory
        rank = world()[0] if binding.world > 1 else 0
        # The holdout takes samples by their index in the whole training subset: this rank's shard starts at its
        # contiguous share (tensors, UnpaddedSampler); a stream of unknown length splits each shard on its own.
        self._offset = shard_range(n, rank, binding.world)[0] if n is not None else 0
        # Fast probes keep their reduced training features to score the train accuracy without a second pass
        # over the training subset, when those take at most a quarter of the free memory.
        share = -(-(n or 0) // binding.world)
        kept = 8 * share * sum(min(math.prod(binding.sites[s]), o.max_features) + 1 for s in self.sites)
        self.keep_features = n is not None and free is not None and kept <= free // 4
        if binding.world > 1:  # every rank must run the same passes: keep features only if all of them can
            self.keep_features = _everywhere(self.keep_features)
        if self.paper_sites:
            per_sample = sum(math.prod(binding.sites[s]) + math.prod(binding.input_shape) for s in self.paper_sites)
            need = 4 * (n or 0) * per_sample * len(trained)
            if free is not None and need > 0.8 * free:
                raise ValueError(
                    f"trained probes keep the activations of {n} training samples at sites {self.paper_sites} in "
                    f"memory: {need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB is free on {binding.device}; probe "
                    "fewer layers, score fewer training samples or use probe mode 'fast'"
                )
            from ...probes import PaperProbe

            kw = dict(o.paper or {})
            for s in self.paper_sites:  # the decoders' shape checks, before any data pass
                for m in trained:
                    PaperProbe(binding.sites[s], binding.num_classes, binding.input_shape, protocol=m, **kw)
        self._probes: dict[str, list[tuple[str, Any]]] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._sums: list[tuple[Any, dict[str, torch.Tensor]]] = []

    def batch_statistics_size(self) -> int | None:
        return self.options.bn_batch

    def _pass(self, base: str, reading: str) -> Pass:
        return base if reading != "batch" else f"{base}:batch-stats"  # type: ignore[return-value]

    def _reading(self, p: Pass) -> str:
        """The readings of the probes a pass feeds (batch-stats passes: ``batch``; plain ones: the others)."""
        return "batch" if batch_statistics(p) else "plain"

    def _group(self, mode: str) -> str:
        return "batch" if self.readings[mode] == "batch" else "plain"

    def passes(self) -> dict[Pass, Collection[str]]:
        # Probes read by batch statistics have passes of their own: they fit and score independently of the others.
        need: dict[Pass, Collection[str]] = {}
        for group in ("plain", "batch"):
            reading = "batch" if group == "batch" else "running"
            if group not in self._fitted:
                sites = [s for s in self.sites if any(self._group(m) == group for m in self._modes_at(s))]
                if sites:
                    need[self._pass("train", reading)] = sites
                continue
            live = {s: [(m, p) for m, p in ps if self._group(m) == group] for s, ps in self._probes.items()}
            if any(live.values()):
                need[self._pass("eval", reading)] = [s for s, ps in live.items() if ps]
            rescore = [s for s, ps in live.items() if any(not p.scores_in_fit for _, p in ps)]
            if rescore and group not in self._rescored:
                need[self._pass("rescore", reading)] = rescore
        return need

    def _modes_at(self, site: str) -> list[str]:
        return [m for m in self.modes if m == "fast" or site in self.paper_sites]

    def begin(self, checkpoint: object) -> None:
        from ...probes import PaperProbe, RidgeProbe

        b = self.binding
        assert b is not None
        o = self.options
        input_dim = math.prod(b.input_shape)
        self._probes, self._errors = {}, {}
        self._fitted: set[str] = set()
        self._rescored: set[str] = set()
        for s in self.sites:
            shape = b.sites[s]
            self._probes[s] = []
            for mode in self._modes_at(s):
                if mode == "fast":
                    probe: Any = RidgeProbe(
                        math.prod(shape),
                        b.num_classes,
                        input_dim,
                        max_features=o.max_features,
                        device=b.device,
                        act_shape=shape,
                        keep_features=self.keep_features,
                        decoder=o.decoder,
                        **dict(o.fast or {}),
                    )
                else:
                    prev = self._last_paper.get(f"{mode}/{s}") if o.warm_start else None
                    probe = PaperProbe(
                        shape,
                        b.num_classes,
                        b.input_shape,
                        protocol=mode,
                        seed=b.seed,
                        device=b.device,
                        warm_start=prev,
                        **dict(o.paper or {}),
                    )
                self._probes[s].append((mode, probe))

    def _fed(self, p: Pass) -> list[tuple[str, str, Any]]:
        group = self._reading(p)
        return [(s, m, probe) for s, ps in self._probes.items() for m, probe in ps if self._group(m) == group]

    def update(self, p: Pass, site: str, z: torch.Tensor, batch: Batch) -> None:
        base, group = base_pass(p), self._reading(p)
        for mode, probe in self._probes.get(site, ()):
            if self._group(mode) != group:
                continue
            if base == "train" and mode == "fast":
                probe.update_train(z, batch.y, batch.x, start=self._offset + batch.start)
            else:
                getattr(probe, _UPDATE[base])(z, batch.y, batch.x)

    def sums(self, p: Pass) -> dict[str, torch.Tensor]:
        rank, size = world()
        base = base_pass(p)
        self._sums = [(probe, probe.sums(base, rank, size)) for _, _, probe in self._fed(p)]
        return {f"{i}/{k}": t for i, (_, d) in enumerate(self._sums) for k, t in d.items()}

    def end_pass(self, p: Pass, class_sizes: np.ndarray, samples: int) -> None:
        base = base_pass(p)
        for probe, added in self._sums:  # this pass's sums of every rank, before fitting or scoring on them
            probe.load_sums(base, added)
        self._sums = []
        group = self._reading(p)
        if base == "rescore":
            self._rescored.add(group)
        if base != "train":
            return
        from ...probes import ProbeError

        self._fitted.add(group)
        for site, probes in self._probes.items():
            kept = []
            for mode, probe in probes:
                if self._group(mode) != group:
                    kept.append((mode, probe))
                    continue
                try:
                    probe.fit()
                except ProbeError as e:  # say so, and store NaN rather than a meaningless number
                    warnings.warn(f"{mode}-mode probe for layer {site!r} cannot be fitted: {e}", stacklevel=2)
                    self._errors[(site, mode)] = str(e)
                    continue
                kept.append((mode, probe))
                if mode in _TRAINED and self.options.warm_start:
                    self._last_paper[f"{mode}/{site}"] = probe.state()
            self._probes[site] = kept

    def compute(self) -> Output:
        rows = []
        for site, probes in self._probes.items():
            for mode, probe in probes:
                r = probe.result()
                rows.append(
                    {
                        "layer": site,
                        "mode": mode,
                        **{
                            k: _num(r.get(k))
                            for k in (
                                "train_accuracy",
                                "test_accuracy",
                                "reconstruction_mse",
                                "reconstruction_nmse",
                                "ridge",
                            )
                        },
                        "features": int(r["features"]),
                        "reduction": str(r["reduction"]),
                        "n_train": int(r["n_train"]),
                        "n_test": int(r["n_test"]),
                        "decoder": str(r["decoder"]),
                        "bn": self.readings[mode],
                    }
                )
        nan = float("nan")
        for (site, mode), err in self._errors.items():
            rows.append(
                {
                    "layer": site,
                    "mode": mode,
                    "train_accuracy": nan,
                    "test_accuracy": nan,
                    "reconstruction_mse": nan,
                    "reconstruction_nmse": nan,
                    "ridge": nan,
                    "features": 0,
                    "reduction": "failed: " + err[:200],
                    "n_train": 0,
                    "n_test": 0,
                    "decoder": "",
                    "bn": self.readings[mode],
                }
            )
        self._probes = {}
        return Output(tables={"probes": rows})

    def plan(self, num_classes: int, eval_samples: int | None) -> list[PlanRow]:
        b = self.binding
        assert b is not None
        rows = []
        for s in self.sites:
            f = min(math.prod(b.sites[s]), self.options.max_features) + 1
            stats = 8 * 2 * f * (f + num_classes + math.prod(b.input_shape)) if "fast" in self.modes else 0
            rows.append(PlanRow(self.name, s, math.prod(b.sites[s]), stats, 200 * len(self._modes_at(s))))
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"paper_probes": self._last_paper} if self._last_paper else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        # Older resume states key the text protocol's models by site alone.
        self._last_paper = {(k if "/" in k else f"text/{k}"): v for k, v in state.get("paper_probes", {}).items()}


def _everywhere(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (one all_reduce of one int, when the probes are bound)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64, device=reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _num(v: Any) -> float:
    """A probe result as a float; None (undefined, e.g. constant test inputs) becomes NaN."""
    return float("nan") if v is None else float(v)


MEASURE = Probes
