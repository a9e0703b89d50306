"""Training runs for ``nnphases run``: presets, the training loop, and exact resume.

A run trains one model per seed and measures it with a :class:`Recorder` at the
schedule's steps; each seed writes its own run directory (``OUT/seed-<k>``) and
``OUT/run.json`` holds the resolved configuration. Resume is exact: the data
order of every epoch comes from a generator seeded by (seed, epoch), and each
checkpoint keeps the model, the optimizer and the RNG states, so a run killed
at any moment continues from its last complete checkpoint and ends with the
results of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import data, models
from .recorder import Recorder
from .schedule import Schedule
from .store import RunDir, atomic_write_bytes


@dataclass
class Config:
    """Everything that defines a run; written to ``OUT/run.json`` and read back by ``--resume``."""

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    holdout: int = 12000
    resize: int | None = None
    model: str = "mlp"
    depth: int = 5
    width: int = 80
    loss: str = "ce"  # "ce" (softmax + cross-entropy) or "mse" (identity output, one-hot targets)
    optimizer: str = "adam"
    lr: float = 1e-3
    batch: int = 60
    epochs: float = 200
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    per_decade: int = 10
    first_epoch: float = 1e-3
    eval_batch: int = 2000
    train_eval: int = 12000  # training samples scored at each measurement (0: none)
    keep_masks: bool = False
    per_channel: bool = False
    probes: bool = False  # probes (class read-out, input reconstruction) at every site (or at probe_layers)
    probe_mode: str = "fast"  # "fast" (closed form), "paper" (the source's trained probes) or "both"
    probe_layers: list[str] | None = None  # ReLU site names; None: every site
    probe_warm_start: bool = False  # paper mode: start from the previous measurement's probes
    paper_layers: list[str] | None = None  # probe_mode "both": the sites that also get paper probes (None: all)
    probe_decoder: str = "linear"  # fast mode's decoder: "linear" or "random-features"
    schedule: str = "log"  # "log" (per_decade per decade) or "pow2" (steps 0, 1, 2, 4, ...: source 002)
    device: str = "auto"

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    # A real FashionMNIST run that finishes in minutes on two CPU cores and shows the rise and fall
    # of the activation fraction.
    "demo": dict(depth=5, width=80, loss="ce", epochs=4, seeds=[0, 1, 2], per_decade=6, train_eval=6000),
    # Source 000's protocol for one cell of its grid (choose --depth 2|5|9, --width 20|80|320, --loss mse|ce).
    "source000": dict(depth=9, width=320, loss="ce", epochs=200, seeds=[0, 1, 2], per_decade=10),
    # Source 002's protocol, shortened for a CPU: FC-BN net on FashionMNIST at 32x32, SGD lr 0.002, batch 128,
    # measurements at steps 0, 1, 2, 4, ... with probes (the source: 256 epochs, 5 runs; pass --epochs 256
    # --seeds 0,1,2,3,4 on a GPU).
    "source002": dict(model="fc_bn", depth=3, width=256, loss="ce", optimizer="sgd", lr=0.002, batch=128,
                      epochs=2, seeds=[0, 1], resize=32, schedule="pow2", probes=True, train_eval=4000),
    # The same protocol on the source's conv nets, shortened for a CPU (one epoch, a 4,000-sample validation and
    # probe test set, probes fitted on 2,000 training samples); on a GPU pass --epochs 256 --seeds 0,1,2,3,4
    # --holdout 12000 --train-eval 12000.
    "source002-vgg11": dict(model="vgg11", loss="ce", optimizer="sgd", lr=0.002, batch=128, epochs=1,
                            seeds=[0, 1], resize=32, schedule="pow2", probes=True, holdout=4000, train_eval=2000,
                            eval_batch=500),
    "source002-resnet10": dict(model="resnet10", loss="ce", optimizer="sgd", lr=0.002, batch=128, epochs=1,
                               seeds=[0, 1], resize=32, schedule="pow2", probes=True, holdout=4000,
                               train_eval=2000, eval_batch=500),
}


# The source's grid: every cell is a `source000` run in its own folder OUT/<depth>x<width>-<loss>.
GRID = [dict(depth=d, width=w, loss=loss) for d in (2, 5, 9) for w in (20, 80, 320) for loss in ("mse", "ce")]


def grid_configs(overrides: dict[str, Any]) -> dict[str, Config]:
    """The 18 cells of source 000's grid (cell keys override the given depth, width and loss)."""
    return {f"{c['depth']}x{c['width']}-{c['loss']}": resolve("source000", {**overrides, **c}) for c in GRID}


def resolve(preset: str, overrides: dict[str, Any]) -> Config:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    merged = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return Config.from_dict(merged)


def _device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def load_data(cfg: Config, seed: int = 0) -> tuple[data.Dataset, data.Dataset]:
    """(train, validation): the training set minus a class-stratified holdout of ``cfg.holdout`` samples."""
    loaders: dict[str, Callable[..., data.Dataset]] = {
        "fashion-mnist": lambda: data.fashion_mnist(cfg.data_root),
        "mnist": lambda: data.mnist(cfg.data_root),
        "cifar10": lambda: data.cifar10(cfg.data_root),
        "cifar100": lambda: data.cifar100(cfg.data_root),
        "synthetic": lambda: data.synthetic(n=3000, num_classes=10, shape=(1, 8, 8), seed=0),
    }
    if cfg.dataset not in loaders:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose from {', '.join(loaders)}")
    full = loaders[cfg.dataset]()
    if cfg.resize:
        full = data.resize(full, cfg.resize)
    train_idx, val_idx = data.stratified_split(full.y, cfg.holdout, seed=0)  # the same split for every seed
    return full.subset(train_idx), full.subset(val_idx)


def build_model(cfg: Config, ds: data.Dataset) -> nn.Module:
    if cfg.model == "mlp":
        return models.mlp(ds.x[0].numel(), cfg.depth, cfg.width, ds.num_classes,
                          output="identity" if cfg.loss == "mse" else "softmax")
    if cfg.model == "fc_bn":
        return models.fc_bn(ds.x[0].numel(), cfg.depth, cfg.width, ds.num_classes)
    return models.build(cfg.model, num_classes=ds.num_classes, in_channels=ds.x.shape[1])


def loss_function(cfg: Config, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if cfg.loss == "ce":
        return nn.functional.cross_entropy
    if cfg.loss == "mse":
        return lambda logits, y: nn.functional.mse_loss(logits, nn.functional.one_hot(y, num_classes).to(logits.dtype))
    raise ValueError(f"loss must be 'ce' or 'mse', got {cfg.loss!r}")


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def train_seed(cfg: Config, seed: int, out: Path, *, progress: bool = False,
               on_step: Callable[[int], None] | None = None) -> Path:
    """Trains and measures one seed into ``out``; continues from its last complete checkpoint if any."""
    run = RunDir(out)
    if run.done:
        return out
    train, val = load_data(cfg, seed)
    dev = _device(cfg)
    torch.manual_seed(seed)
    model = build_model(cfg, train).to(dev)
    opt = _optimizer(cfg, model)
    loss_fn = loss_function(cfg, train.num_classes)
    steps_per_epoch = math.ceil(len(train) / cfg.batch)
    total = max(1, round(cfg.epochs * steps_per_epoch))
    if cfg.schedule not in ("log", "pow2"):
        raise ValueError(f"schedule must be 'log' or 'pow2', got {cfg.schedule!r}")
    schedule = Schedule.powers_of_two(cfg.epochs, steps_per_epoch) if cfg.schedule == "pow2" else \
        Schedule.log(cfg.epochs, steps_per_epoch, per_decade=cfg.per_decade, first_epoch=cfg.first_epoch)
    sub = _epoch_order(seed, -1, len(train))[:cfg.train_eval]
    rec = Recorder(model, val.x, val.y, train.num_classes, schedule, out, seed=seed, batch_size=cfg.eval_batch,
                   loss_fn=loss_fn, train_eval=(train.x[sub], train.y[sub]) if cfg.train_eval else None,
                   keep_masks=cfg.keep_masks, per_channel=cfg.per_channel,
                   probes=(cfg.probe_layers or True) if cfg.probes else False, probe_mode=cfg.probe_mode,
                   probe_warm_start=cfg.probe_warm_start, paper_layers=cfg.paper_layers,
                   fast_options={"decoder": cfg.probe_decoder},
                   config={**dataclasses.asdict(cfg), "seed": seed, "steps_per_epoch": steps_per_epoch,
                           "total_steps": total})

    def state() -> dict:
        return {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    step = 0
    saved = run.latest_state()
    if saved is not None:
        step, st = saved
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["torch_rng"])
        if "recorder" in st:
            rec.load_state_dict(st["recorder"])
        if st.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(st["cuda_rng"])
    else:
        rec.maybe_measure(0, state)
    bar = _progress(total, step, f"seed {seed}", progress)
    model.train()
    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            order = _epoch_order(seed, epoch, len(train))
            idx = order[offset * cfg.batch:(offset + 1) * cfg.batch]
            xb, yb = train.x[idx].to(dev), train.y[idx].to(dev)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {float(loss)} at step {step + 1} (seed {seed}); the run "
                                         f"diverged. Checkpoints up to the last measurement in {out} are intact")
            loss.backward()
            opt.step()
            step += 1
            rec.maybe_measure(step, state)
            if on_step:
                on_step(step)
            if bar is not None:
                bar.update(1)
    except BaseException:
        rec.flush()  # a checkpoint being written in the background completes before the error propagates
        raise
    finally:
        if bar is not None:
            bar.close()
    rec.close()
    return out


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False)


def run(cfg: Config, out: Path, *, progress: bool = True) -> list[Path]:
    """All seeds of a configuration into ``out/seed-<k>``; an existing ``out`` must hold the same config."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "run.json"
    if cfg_path.exists():
        old = Config.from_dict(json.loads(cfg_path.read_text()))
        if old != cfg:
            raise ValueError(f"{out} holds a run with another configuration; use --resume {out} or another --out")
    else:
        atomic_write_bytes(cfg_path, cfg.to_json())
    return [train_seed(cfg, s, out / f"seed-{s}", progress=progress) for s in cfg.seeds]


def resume(out: Path, *, progress: bool = True) -> list[Path]:
    """Continues every seed of the run in ``out`` from its last complete checkpoint."""
    cfg_path = Path(out) / "run.json"
    if not cfg_path.exists():
        cells = sorted(c.parent for c in Path(out).glob("*/run.json"))  # a grid: one run per cell
        if not cells:
            raise FileNotFoundError(f"{out} has no run.json: not a folder made by nnphases run")
        return [p for cell in cells for p in resume(cell, progress=progress)]
    return run(Config.from_dict(json.loads(cfg_path.read_text())), Path(out), progress=progress)
