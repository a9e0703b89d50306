"""The configuration of ``nnphases run``: typed, nested by concern, declared once.

:class:`Config` groups the options by concern (data, model, optimisation,
schedule) and holds the measures' own option objects
(:mod:`nnphases.recording.measures`: each measure declares its options next to its code;
an optional measure is ``None`` when off). Every option is a field declared
with :func:`nnphases.options.option` (type, range, help, command-line name),
checked when the object is built, before any data is loaded; the command line
and the presets use the options' flat names (``--probe-mode`` is
``probe_mode``), so :func:`flat_options` maps each flat name to its one
declaration and :meth:`Config.from_flat` builds a checked configuration from
flat values.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..options import check, describe, option
from ..recording.measures import REGISTRY

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "Leaf",
    "flat_options",
    "read_config",
]


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic"] = option(
        "fashion-mnist", help="the dataset"
    )
    data_root: str | None = option(None, help="folder with the dataset's files")
    holdout: int = option(12000, min=2, max=10**8, help="validation samples held out of the training set")
    resize: int | None = option(None, min=1, max=4096, help="resize images to this size (32 for VGG-11/ResNet-10)")
    train_eval: int = option(
        12000, min=0, max=10**8, help="training samples scored (and probes fitted on) at each measurement (0: none)"
    )
    eval_batch: int = option(2000, min=1, max=10**7, help="evaluation batch size")

    def __post_init__(self) -> None:
        check(self)
        # Said here, before anything loads: these data sets have no default folder, and the generated one reads none.
        if self.dataset in ("mnist", "cifar10", "cifar100") and self.data_root is None:
            raise ValueError(f"dataset {self.dataset!r} needs data_root (--data-root), the folder with its files")
        if self.dataset == "synthetic" and self.data_root is not None:
            raise ValueError(
                f"data_root {self.data_root!r} is not read by dataset 'synthetic' (it is generated); drop it"
            )


@dataclass(frozen=True)
class ModelConfig:
    model: Literal["mlp", "fc_bn", "vgg11", "resnet10"] = option("mlp", help="the architecture")
    depth: int = option(5, min=1, max=1000, help="hidden layers (mlp, fc_bn)")
    width: int = option(80, min=1, max=1 << 20, help="nodes per hidden layer (mlp, fc_bn)")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True)
class OptimConfig:
    loss: Literal["ce", "mse"] = option("ce", help="ce (softmax, cross-entropy) or mse (identity, one-hot)")
    optimizer: Literal["adam", "sgd"] = option("adam", help="the optimiser")
    lr: float = option(1e-3, above=0, max=1e6, help="learning rate")
    momentum: float = option(0.0, min=0, max=0.999, help="SGD's momentum (the source 002 text: none; its code: 0.9)")
    batch: int = option(60, min=1, max=1 << 24, help="training batch size")
    epochs: float = option(200.0, above=0, max=1e6, help="epochs of training (fractions allowed)")

    def __post_init__(self) -> None:
        check(self)
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum {self.momentum} is SGD's; optimizer {self.optimizer!r} takes none")


@dataclass(frozen=True)
class ScheduleConfig:
    schedule: Literal["log", "pow2"] = option("log", help="log (per decade) or pow2 (steps 0, 1, 2, 4, ...)")
    per_decade: int = option(10, min=1, max=1000, help="measurements per decade of training steps")
    first_epoch: float = option(1e-3, above=0, max=1e6, help="epoch of the log grid's first point")

    def __post_init__(self) -> None:
        check(self)


_GROUPS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "schedule": ScheduleConfig}
# Defaults of measures switched on when nothing is said: sample sets and the evaluation statistics.
_CLI_FIELDS = (bool, int, float, str)


@dataclass(frozen=True)
class Leaf:
    """One option as the command line and the presets see it: its flat name, where it lives, its type."""

    name: str  # flat name: probe_mode
    group: str  # "data", ... or "measures.<measure>"
    field: str | None  # the field in its group (None: a measure's on/off switch)
    type: Any
    default: Any
    help: str


def flat_options() -> dict[str, Leaf]:
    """Every option that can be given by flat name (command line, presets), in declaration order."""
    leaves: dict[str, Leaf] = {}

    def add(leaf: Leaf) -> None:
        if leaf.name in leaves:
            raise RuntimeError(f"option name {leaf.name!r} is declared twice ({leaves[leaf.name].group}, {leaf.group})")
        leaves[leaf.name] = leaf

    for group, cls in _GROUPS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            add(Leaf(f.name, group, f.name, hints[f.name], f.default, f.metadata.get("help", "")))
    for name, m in REGISTRY.items():
        if m.switch:
            add(Leaf(m.switch.replace("-", "_"), f"measures.{name}", None, bool, False, m.switch_help))
        hints = typing.get_type_hints(m.Options)
        for f in dataclasses.fields(m.Options):
            if not _cli_type(hints[f.name]):
                continue  # callables and keyword dicts are set from Python, not flat
            flat = (f.metadata.get("flag") or f.name).replace("-", "_")
            add(Leaf(flat, f"measures.{name}", f.name, hints[f.name], f.default, f.metadata.get("help", "")))
    return leaves


def _cli_type(tp: Any) -> bool:
    """Whether a type can be written as one command-line value (scalars, choices, comma lists, optional ones)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return True
    if origin is tuple:
        return _cli_type(typing.get_args(tp)[0])
    if origin is not None and type(None) in typing.get_args(tp):
        return all(_cli_type(a) for a in typing.get_args(tp) if a is not type(None))
    return tp in _CLI_FIELDS


@dataclass(frozen=True)
class Config:
    """Everything that defines a run; written to ``OUT/run.json`` and read back by ``--resume``."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    measures: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _default_measures())
    seeds: tuple[int, ...] = option((0, 1, 2), min=0, max=2**31 - 1, help="comma-separated seeds, e.g. 0,1,2")
    device: str = option("auto", help="auto, cpu, cuda or cuda:<index>")

    def __post_init__(self) -> None:
        check(self)
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {list(self.seeds)}")
        unknown = sorted(set(self.measures) - set(REGISTRY))
        if unknown:
            raise ValueError(f"measures: unknown {unknown}; known: {sorted(REGISTRY)}")
        for name, opts in self.measures.items():
            if opts is not None and not isinstance(opts, REGISTRY[name].Options):
                raise TypeError(
                    f"measures[{name!r}] must be {REGISTRY[name].Options.__name__} or None, got {type(opts).__name__}"
                )
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>, got {self.device!r}")
        if self.measures.get("probes") is not None and self.data.train_eval == 0:
            raise ValueError("probes need training samples: train_eval must be >= 1 (it is 0)")

    # -- flat view -------------------------------------------------------------------------------

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], base: Config | None = None) -> Config:
        """``base`` (default: the defaults) with the flat-named options of ``flat`` set; None values are unset."""
        base = base or cls()
        leaves = flat_options()
        given = {k: v for k, v in flat.items() if v is not None}
        unknown = sorted(set(given) - set(leaves) - {"seeds", "device"})
        if unknown:
            raise ValueError(f"unknown options {unknown}; known: {[*sorted(leaves), 'device', 'seeds']}")
        groups = {g: {} for g in _GROUPS}  # type: dict[str, dict[str, Any]]
        measures = dict(base.measures)
        switched: dict[str, bool] = {}
        fields: dict[str, dict[str, Any]] = {}
        for key, value in given.items():
            if key in ("seeds", "device"):
                continue
            leaf = leaves[key]
            if leaf.group in groups:
                assert leaf.field is not None  # only a measure's on/off switch has no field
                groups[leaf.group][leaf.field] = value
            elif leaf.field is None:
                if not isinstance(value, bool):
                    raise TypeError(f"{key} must be true or false, got {value!r}")
                switched[leaf.group.split(".", 1)[1]] = value
            else:
                fields.setdefault(leaf.group.split(".", 1)[1], {})[leaf.field] = value
        for name, on in switched.items():
            if not on:
                measures[name] = None
            elif measures.get(name) is None:
                measures[name] = REGISTRY[name].Options()
        for name, changes in fields.items():
            current = measures.get(name)
            if current is None:
                switch = REGISTRY[name].switch
                flags = sorted(
                    "--" + k.replace("_", "-")
                    for k, v in given.items()
                    if leaves.get(k) and leaves[k].group == f"measures.{name}" and leaves[k].field
                )
                raise ValueError(f"{', '.join(flags)} set options of the {name} measure, which is off: add --{switch}")
            measures[name] = dataclasses.replace(current, **changes)
        return cls(
            **{g: dataclasses.replace(getattr(base, g), **groups[g]) for g in _GROUPS},
            measures=measures,
            seeds=given.get("seeds", base.seeds),
            device=given.get("device", base.device),
        )

    def flat(self) -> dict[str, Any]:
        """Every flat-named option's value (a measure that is off has its switch false and no options)."""
        out: dict[str, Any] = {}
        for name, leaf in flat_options().items():
            if leaf.group in _GROUPS:
                assert leaf.field is not None  # only a measure's on/off switch has no field
                out[name] = getattr(getattr(self, leaf.group), leaf.field)
                continue
            opts = self.measures.get(leaf.group.split(".", 1)[1])
            if leaf.field is None:
                out[name] = opts is not None
            elif opts is not None:
                out[name] = getattr(opts, leaf.field)
        out["seeds"], out["device"] = list(self.seeds), self.device
        return out

    # -- storage ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = {g: describe(getattr(self, g)) for g in _GROUPS}
        d["measures"] = {name: describe(o) if o is not None else None for name, o in self.measures.items()}
        d["seeds"], d["device"] = list(self.seeds), self.device
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2).encode()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """A configuration from :meth:`to_dict`, or from the flat dict that runs stored before it was nested."""
        if not isinstance(d, Mapping):
            raise TypeError(f"a configuration must be a dict, got {type(d).__name__}")
        if "data" not in d:
            return cls.from_flat(_legacy(d))
        unknown = sorted(set(d) - set(_GROUPS) - {"measures", "seeds", "device"})
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        groups = {g: _group(cls_, d.get(g, {}), g) for g, cls_ in _GROUPS.items()}
        measures = {}
        for name, opts in (d.get("measures") or {}).items():
            if name not in REGISTRY:
                raise ValueError(f"measures: unknown {name!r}; known: {sorted(REGISTRY)}")
            measures[name] = None if opts is None else _group(REGISTRY[name].Options, opts, f"measures.{name}")
        if "measures" in d:  # a measure added since the file was written was not measured: off
            measures.update({name: None for name in REGISTRY if name not in measures})
        return cls(**groups, measures=measures, seeds=tuple(d.get("seeds", (0, 1, 2))), device=d.get("device", "auto"))


def read_config(path: Path) -> Config:
    """The configuration stored in a run's ``run.json`` (or a job's copy of it); ValueError naming the file when
    it is damaged (not JSON, not text, not a configuration)."""
    path = Path(path)
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is damaged (not JSON: {e})") from None
    except (ValueError, TypeError) as e:  # not text (UnicodeDecodeError), or not a configuration
        raise ValueError(f"{path} is damaged ({e})") from None


def _group(cls: type, values: Mapping[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(names)}")
    return cls(**values)


def _default_measures() -> dict[str, Any]:
    return {name: (None if m.switch else m.Options()) for name, m in REGISTRY.items()}


def _legacy(d: Mapping[str, Any]) -> dict[str, Any]:
    """Flat run.json keys written before the configuration was nested, as today's flat names."""
    out = dict(d)
    if out.get("probes") is False:  # probe options were stored even when probes were off
        for key in ("probe_mode", "probe_layers", "probe_warm_start", "paper_layers", "probe_decoder"):
            out.pop(key, None)
    return out
