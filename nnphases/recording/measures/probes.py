"""Probes of the chosen ReLU sites: a class read-out and an input decoder, fitted on the training subset at
every measurement and scored on the evaluation set (:mod:`nnphases.probes`).

Across processes every rank feeds its shard to its fast-mode probes; their statistics are sums, added at the
end of each pass (float64 beside the int64 counts), so every rank fits and scores the probe one process would,
up to the order of float64 additions. Paper mode is refused there: its SGD and Adam runs read every training
sample's activations in one process's memory, and gathering them to every rank would move the whole training
subset's activations at every measurement and train the same models world times over."""

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
from ._base import Binding, Measure, Output, Pass, PlanRow

_MODES = {"fast": ("fast",), "paper": ("paper",), "both": ("fast", "paper")}
_UPDATE = {"train": "update_train", "rescore": "score_train", "eval": "update_test"}


@dataclass(frozen=True)
class ProbesOptions:
    layers: tuple[str, ...] | None = option(None, help="ReLU sites to probe (default: every site)", flag="probe-layers")
    mode: Literal["fast", "paper", "both"] = option(
        "fast", help="fast (closed-form ridge), paper (the source's trained probes) or both", flag="probe-mode"
    )
    paper_layers: tuple[str, ...] | None = option(
        None,
        help="with mode both: the sites that also get paper-mode probes (default: every probed site)",
        flag="paper-layers",
    )
    warm_start: bool = option(
        False, help="paper mode: start from the previous measurement's probes", flag="probe-warm-start"
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
    paper: Mapping[str, Any] | None = option(None, help="keywords of PaperProbe (epochs, learning rates, ...)")

    def __post_init__(self) -> None:
        check(self)
        for name in ("fast", "paper"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Mapping):
                raise TypeError(f"probes {name} options must be a dict of keywords, got {v!r}")
        if self.paper_layers is not None and self.mode != "both":
            raise ValueError(f"paper_layers {list(self.paper_layers)!r} need probe_mode 'both', got {self.mode!r}")
        outside = [n for n in self.paper_layers or () if self.layers is not None and n not in self.layers]
        if outside:
            raise ValueError(f"paper_layers: {outside} are not among the probed sites {list(self.layers or ())}")
        # The probes' own checks of their keywords, with placeholder sizes, before any data is seen.
        from ...probes import PaperProbe, RidgeProbe

        if "fast" in _MODES[self.mode]:
            RidgeProbe(1, 2, 1, decoder=self.decoder, **dict(self.fast or {}))
        if "paper" in _MODES[self.mode]:
            PaperProbe((1,), 2, (1,), **dict(self.paper or {}))


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
    ],
)


class Probes(Measure):
    """Fast and/or paper-mode probes at every chosen site (``probes`` table: one row per site and mode)."""

    name = "probes"
    Options = ProbesOptions
    tables = (PROBES,)
    order = 30
    switch = "probes"
    switch_help = "fit probes (class read-out, input decoder) at ReLU sites on the training subset"

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self._last_paper: dict[str, dict] = {}  # site -> the previous measurement's paper models (warm start)

    def bind(self, binding: Binding) -> None:
        super().bind(binding)
        o = self.options
        if not binding.has_train:
            raise ValueError("probes need training data: pass train_data (the Recorder's training subset)")
        if binding.world > 1 and "paper" in _MODES[o.mode]:
            raise ValueError(
                f"probe_mode {o.mode!r}: paper-mode probes train on every training sample's activations "
                f"in one process, but {binding.world} processes measure together; use probe_mode 'fast' "
                "(its sums are added across processes) or probe in a run of one process"
            )
        if binding.world > 1 and o.decoder == "random-features":
            raise ValueError(
                f"probe_decoder 'random-features' standardises its features by the first training batch, "
                f"which differs between the {binding.world} processes; use probe_decoder 'linear' or "
                "probe in a run of one process"
            )
        self.sites = binding.check_sites(o.layers, "probe_layers")
        self.modes = _MODES[o.mode]
        self.paper_sites = [
            s for s in self.sites if "paper" in self.modes and (o.paper_layers is None or s in o.paper_layers)
        ]
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
            need = 4 * (n or 0) * per_sample
            if free is not None and need > 0.8 * free:
                raise ValueError(
                    f"paper-mode probes keep the activations of {n} training samples at sites {self.paper_sites} in "
                    f"memory: {need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB is free on {binding.device}; probe "
                    "fewer layers, score fewer training samples or use probe mode 'fast'"
                )
        self._probes: dict[str, list[tuple[str, Any]]] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._sums: list[tuple[Any, dict[str, torch.Tensor]]] = []

    def passes(self) -> dict[Pass, Collection[str]]:
        if not self._fitted:
            return {"train": self.sites}
        need: dict[Pass, Collection[str]] = {"eval": self.sites}
        rescore = [s for s, ps in self._probes.items() if any(not p.scores_in_fit for _, p in ps)]
        if rescore and not self._rescored:
            need["rescore"] = rescore
        return need

    def begin(self, checkpoint: object) -> None:
        from ...probes import PaperProbe, RidgeProbe

        b = self.binding
        assert b is not None
        o = self.options
        input_dim = math.prod(b.input_shape)
        self._probes, self._errors = {}, {}
        self._fitted = self._rescored = False
        for s in self.sites:
            shape = b.sites[s]
            self._probes[s] = []
            if "fast" in self.modes:
                self._probes[s].append(
                    (
                        "fast",
                        RidgeProbe(
                            math.prod(shape),
                            b.num_classes,
                            input_dim,
                            max_features=o.max_features,
                            device=b.device,
                            act_shape=shape,
                            keep_features=self.keep_features,
                            decoder=o.decoder,
                            **dict(o.fast or {}),
                        ),
                    )
                )
            if s in self.paper_sites:
                prev = self._last_paper.get(s) if o.warm_start else None
                self._probes[s].append(
                    (
                        "paper",
                        PaperProbe(
                            shape,
                            b.num_classes,
                            b.input_shape,
                            seed=b.seed,
                            device=b.device,
                            warm_start=prev,
                            **dict(o.paper or {}),
                        ),
                    )
                )

    def update(self, p: Pass, site: str, z: torch.Tensor, batch: Batch) -> None:
        for mode, probe in self._probes.get(site, ()):
            if p == "train" and mode == "fast":
                probe.update_train(z, batch.y, batch.x, start=self._offset + batch.start)
            else:
                getattr(probe, _UPDATE[p])(z, batch.y, batch.x)

    def sums(self, p: Pass) -> dict[str, torch.Tensor]:
        rank, size = world()
        self._sums = [(probe, probe.sums(p, rank, size)) for probes in self._probes.values() for _, probe in probes]
        return {f"{i}/{k}": t for i, (_, d) in enumerate(self._sums) for k, t in d.items()}

    def end_pass(self, p: Pass, class_sizes: np.ndarray, samples: int) -> None:
        for probe, added in self._sums:  # this pass's sums of every rank, before fitting or scoring on them
            probe.load_sums(p, added)
        self._sums = []
        if p == "rescore":
            self._rescored = True
        if p != "train":
            return
        from ...probes import ProbeError

        self._fitted = True
        for site, probes in self._probes.items():
            kept = []
            for mode, probe in probes:
                try:
                    probe.fit()
                except ProbeError as e:  # say so, and store NaN rather than a meaningless number
                    warnings.warn(f"{mode}-mode probe for layer {site!r} cannot be fitted: {e}", stacklevel=2)
                    self._errors[(site, mode)] = str(e)
                    continue
                kept.append((mode, probe))
                if mode == "paper" and self.options.warm_start:
                    self._last_paper[site] = probe.state()
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
            rows.append(PlanRow(self.name, s, math.prod(b.sites[s]), stats, 200 * len(self.modes)))
        return rows

    def state_dict(self) -> dict[str, Any]:
        return {"paper_probes": self._last_paper} if self._last_paper else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._last_paper = dict(state.get("paper_probes", {}))


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
