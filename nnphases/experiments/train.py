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
import functools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..recording.capture import find_sites
from ..recording.distributed import shard_range, world
from ..recording.measures import REGISTRY, EvalStats, Measure
from ..recording.measures.eval_stats import cross_entropy_per_sample
from ..recording.plan import Plan, bind_measures, make_plan, resume_state_bytes
from ..recording.recorder import Recorder, RecorderOptions
from ..recording.schedule import Schedule
from ..recording.stream import Stream
from ..store import RunDir, atomic_write_bytes
from . import data, models
from .config import Config, read_config
from .estimate import TimeEstimate, time_calls, time_measurement
from .progress import ProgressLines

__all__ = ["Config", "PRESETS", "GRID", "resolve", "grid_configs", "run", "resume", "train_seed", "plan", "estimate"]


def _preset(**flat: Any) -> Config:
    return Config.from_flat(flat)


PRESETS: dict[str, Config] = {
    # A real FashionMNIST run that finishes in minutes on two CPU cores and shows the rise and fall
    # of the activation fraction.
    "demo": _preset(depth=5, width=80, loss="ce", epochs=4, seeds=(0, 1, 2), per_decade=6, train_eval=6000),
    # Source 000's protocol for one cell of its grid (choose --depth 2|5|9, --width 20|80|320, --loss mse|ce).
    "source000": _preset(depth=9, width=320, loss="ce", epochs=200, seeds=(0, 1, 2), per_decade=10),
    # Source 002's protocol as its text states it, shortened for a CPU: FC-BN net on FashionMNIST at 32x32, plain
    # SGD lr 0.002, batch 128, measurements at steps 0, 1, 2, 4, ... with fast probes and the trained probes of
    # the text (the source: 256 epochs, 5 runs; pass --epochs 256 --seeds 0,1,2,3,4).
    "source002": _preset(
        model="fc_bn",
        depth=3,
        width=256,
        loss="ce",
        optimizer="sgd",
        lr=0.002,
        batch=128,
        epochs=2,
        seeds=(0, 1),
        resize=32,
        schedule="pow2",
        probes=True,
        probe_mode="fast+text",
        train_eval=4000,
    ),
    # The text's protocol on the source's conv nets (plain SGD; fast probes, --probe-mode fast+text or fast+code for
    # trained ones, --momentum 0.9 --probe-bn batch for the released code's), shortened for a CPU (one epoch, a
    # 4,000-sample validation and probe test set, probes fitted on 2,000 training samples); on a GPU pass --epochs
    # 256 --seeds 0,1,2,3,4 --holdout 12000 --train-eval 12000.
    "source002-vgg11": _preset(
        model="vgg11",
        loss="ce",
        optimizer="sgd",
        lr=0.002,
        batch=128,
        epochs=1,
        seeds=(0, 1),
        resize=32,
        schedule="pow2",
        probes=True,
        holdout=4000,
        train_eval=2000,
        eval_batch=500,
    ),
    "source002-resnet10": _preset(
        model="resnet10",
        loss="ce",
        optimizer="sgd",
        lr=0.002,
        batch=128,
        epochs=1,
        seeds=(0, 1),
        resize=32,
        schedule="pow2",
        probes=True,
        holdout=4000,
        train_eval=2000,
        eval_batch=500,
    ),
}

# Source 002's protocol as its authors' released code runs it: the text's preset with SGD momentum 0.9 and the code
# protocol's probes beside the fast ones, both read with BatchNorm batch statistics as the released code reads (read
# with running statistics, the fast probes rank the early measurements of the deeper layers the other way:
# docs/probe_protocols.md).
PRESETS["source002-code"] = Config.from_flat(
    {"momentum": 0.9, "probe_mode": "fast+code", "probe_bn": "batch"}, base=PRESETS["source002"]
)

# The source's grid: every cell is a `source000` run in its own folder OUT/<depth>x<width>-<loss>.
GRID = [dict(depth=d, width=w, loss=loss) for d in (2, 5, 9) for w in (20, 80, 320) for loss in ("mse", "ce")]


def grid_configs(overrides: dict[str, Any]) -> dict[str, Config]:
    """The 18 cells of source 000's grid (cell keys override the given depth, width and loss)."""
    return {f"{c['depth']}x{c['width']}-{c['loss']}": resolve("source000", {**overrides, **c}) for c in GRID}


def resolve(preset: str, overrides: dict[str, Any]) -> Config:
    """The preset with flat-named ``overrides`` (None values ignored), checked."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join([*PRESETS, 'source000-grid'])}")
    return Config.from_flat(overrides, base=PRESETS[preset])


def _device(cfg: Config) -> torch.device:
    rank, size = world()
    if size > 1 and cfg.device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(cfg.device)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>, got {cfg.device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r}: no CUDA GPU is usable here (use --device cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {cfg.device!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:<index>, got {cfg.device!r}")
    return dev


def load_data(cfg: Config, seed: int = 0) -> tuple[data.Dataset, data.Dataset]:
    """(train, validation): the training set minus a class-stratified holdout of ``cfg.data.holdout`` samples."""
    d = cfg.data
    if d.data_root is not None:
        root = Path(d.data_root)
        if not root.exists():
            raise FileNotFoundError(f"{d.dataset}: data_root (--data-root) {d.data_root!r} does not exist")
        if not root.is_dir():
            raise NotADirectoryError(f"{d.dataset}: data_root (--data-root) {d.data_root!r} is a file, not a folder")

    def given_root() -> str:
        assert d.data_root is not None  # DataConfig refuses these datasets without one
        return d.data_root

    loaders: dict[str, Callable[..., data.Dataset]] = {
        "fashion-mnist": lambda: data.fashion_mnist(d.data_root),
        "mnist": lambda: data.mnist(given_root()),
        "cifar10": lambda: data.cifar10(given_root()),
        "cifar100": lambda: data.cifar100(given_root()),
        "synthetic": lambda: data.synthetic(n=3000, num_classes=10, shape=(1, 8, 8), seed=0),
    }
    full = loaders[d.dataset]()
    if d.holdout >= len(full):
        raise ValueError(f"holdout must be below the dataset's {len(full)} samples, got {d.holdout}")
    if d.resize:
        full = data.resize(full, d.resize)
    train_idx, val_idx = data.stratified_split(full.y, d.holdout, seed=0)  # the same split for every seed
    return full.subset(train_idx), full.subset(val_idx)


def build_model(cfg: Config, ds: data.Dataset) -> nn.Module:
    m = cfg.model
    if m.model == "mlp":
        return models.mlp(
            ds.x[0].numel(),
            m.depth,
            m.width,
            ds.num_classes,
            output="identity" if cfg.optim.loss == "mse" else "softmax",
        )
    if m.model == "fc_bn":
        return models.fc_bn(ds.x[0].numel(), m.depth, m.width, ds.num_classes)
    return models.build(m.model, num_classes=ds.num_classes, in_channels=ds.x.shape[1])


def loss_function(cfg: Config, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if cfg.optim.loss == "ce":
        return nn.functional.cross_entropy
    return _MSE(num_classes)


def per_sample_loss(cfg: Config, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of each sample of a batch (``[batch]``), for measures that keep per-sample values."""
    if cfg.optim.loss == "ce":
        return cross_entropy_per_sample
    return _MSEPerSample(num_classes)


class _MSEPerSample:
    """Squared error against one-hot targets, averaged over the classes of each sample (picklable)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = nn.functional.one_hot(y, self.num_classes).to(logits.dtype)
        return nn.functional.mse_loss(logits, target, reduction="none").mean(dim=1)


class _MSE:
    """Mean squared error against one-hot targets (picklable, named in the run's measures.json)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(logits, nn.functional.one_hot(y, self.num_classes).to(logits.dtype))


def _train_step(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    xb: torch.Tensor,
    yb: torch.Tensor,
    check: Callable[[torch.Tensor], None] | None = None,
) -> None:
    """One optimizer step on a batch (the run's, and the one :func:`estimate` times); ``check`` sees the loss
    before the step changes anything (and may raise)."""
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(xb), yb)
    if check is not None:
        check(loss)
    loss.backward()
    opt.step()


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optim.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=(0.9, 0.999), eps=1e-8)
    return torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def make_schedule(cfg: Config, steps_per_epoch: int) -> Schedule:
    """The run's measurement steps; its last step is the run's last training step."""
    s, epochs = cfg.schedule, cfg.optim.epochs
    if s.schedule == "pow2":
        return Schedule.powers_of_two(epochs, steps_per_epoch)
    return Schedule.log(epochs, steps_per_epoch, per_decade=s.per_decade, first_epoch=s.first_epoch)


def measures_for(cfg: Config, num_classes: int) -> list[Measure]:
    """The configured measures, in the registry's order; the loss is the training loss."""
    out: list[Measure] = []
    for name, opts in cfg.measures.items():
        if opts is None:
            continue
        if name == EvalStats.name:
            opts = EvalStats.Options(loss_fn=loss_function(cfg, num_classes))
        elif "loss_fn" in {f.name for f in dataclasses.fields(opts)}:  # per-sample values of the training loss
            opts = dataclasses.replace(opts, loss_fn=per_sample_loss(cfg, num_classes))
        out.append(REGISTRY[name](opts))
    return out


def _train_subset(cfg: Config, seed: int, train: data.Dataset) -> torch.Tensor:
    """The training samples the measures see (probes, the train loss): a seeded subset of ``train_eval``."""
    return _epoch_order(seed, -1, len(train))[: cfg.data.train_eval]


def _recorder(
    cfg: Config, seed: int, out: Path, model: nn.Module, train: data.Dataset, val: data.Dataset, **extra: Any
) -> tuple[Recorder, Schedule, int]:
    steps_per_epoch = math.ceil(len(train) / cfg.optim.batch)
    schedule = make_schedule(cfg, steps_per_epoch)
    sub = _train_subset(cfg, seed, train)
    config = {**cfg.to_dict(), "seed": seed, "steps_per_epoch": steps_per_epoch, "total_steps": schedule.last}
    rec = Recorder(
        model,
        (val.x, val.y),
        schedule,
        out,
        measures_for(cfg, train.num_classes),
        train_data=(train.x[sub], train.y[sub]) if cfg.data.train_eval else None,
        num_classes=train.num_classes,
        seed=seed,
        config=config,
        options=RecorderOptions(batch_size=cfg.data.eval_batch, **extra),
    )
    return rec, schedule, steps_per_epoch


_SEED_KEYS = ("seed", "steps_per_epoch", "total_steps")


def _upgrade_seed_config(out: Path, cfg: Config) -> None:
    """Rewrites a seed's ``config.json`` written by an older nnphases when it holds this configuration.

    Options added since are absent from such a file; read back through :class:`Config` they take their
    defaults (as ``run.json`` does on resume), so a file that then equals ``cfg`` describes the same run and is
    brought up to date (its seed, steps per epoch and total steps kept). Anything else is left for the Recorder,
    which refuses a different configuration."""
    path = out / "config.json"
    if not path.is_file():
        return
    rundir = RunDir(out)
    try:
        stored = rundir.config
        upgraded = Config.from_dict({k: v for k, v in stored.items() if k not in _SEED_KEYS}).to_dict()
    except (ValueError, TypeError):
        return  # damaged or foreign: the Recorder names it
    now = json.loads(json.dumps(cfg.to_dict()))  # as the file would hold it: tuples become lists
    if json.loads(json.dumps(upgraded)) == now and {k: v for k, v in stored.items() if k not in _SEED_KEYS} != now:
        rundir.write_config({**now, **{k: stored[k] for k in _SEED_KEYS if k in stored}}, overwrite=True)


Datasets = tuple[data.Dataset, data.Dataset]  # (train, validation) as load_data returns them


def train_seed(
    cfg: Config,
    seed: int,
    out: Path,
    *,
    progress: bool = False,
    on_step: Callable[[int], None] | None = None,
    datasets: Callable[[], Datasets] | None = None,
) -> Path:
    """Trains and measures one seed into ``out``; continues from its newest intact checkpoint if any.

    Damaged checkpoints at the end of the run are set aside first (``checkpoints/.damaged-step-*``, by the
    Recorder's :meth:`~nnphases.store.RunDir.cleanup`, with a warning naming the file), the state is restored
    from the newest intact ``state.pt`` (the two newest are kept), and the steps set aside are measured again,
    so the results equal an undamaged run's. A run already marked done is left as it is. ``datasets``: where the
    data come from when the run needs them (default: :func:`load_data`), so that the seeds of a run share one load.
    """
    run = RunDir(out)
    _upgrade_seed_config(out, cfg)  # a finished run too: reading several runs together compares their configs
    if run.done:
        return out
    dev = _device(cfg)  # before loading data: a missing GPU is said at once
    train, val = datasets() if datasets is not None else load_data(cfg, seed)
    torch.manual_seed(seed)
    model = build_model(cfg, train).to(dev)
    rank, size = world()
    # Data-parallel under torchrun: every rank takes its share of each global batch (the same seeded order
    # everywhere) and DDP averages the gradients; the Recorder measures the unwrapped model on unpadded shards.
    net = (
        model
        if size == 1
        else nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    )
    opt = _optimizer(cfg, model)
    loss_fn = loss_function(cfg, train.num_classes)
    # This loop is seeded and restores every state it resumes from: started over (every resume state lost), it
    # measures the folder's own checkpoints again, so a restart into them is a replay, never a second run.
    rec, schedule, steps_per_epoch = _recorder(cfg, seed, out, net, train, val, replay=True)
    total = schedule.last  # the last training step is the schedule's, never computed twice

    def state() -> dict:
        return {
            "step": step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

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
    # Without a terminal (a log file, Slurm, CI): one line per measurement instead of a bar.
    lines = ProgressLines(seed, total, step, cfg.optim.epochs) if progress and bar is None else None
    stats = next((m for m in rec.measures if isinstance(m, EvalStats)), None)
    model.train()
    batch = cfg.optim.batch

    def finite(loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {float(loss)} at step {step + 1} (seed {seed}); the run "
                f"diverged. Checkpoints up to the last measurement in {out} are intact"
            )

    try:
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            order = _epoch_order(seed, epoch, len(train))
            idx = order[offset * batch : (offset + 1) * batch]
            if size > 1:
                idx = idx[slice(*shard_range(len(idx), rank, size))]
            _train_step(net, opt, loss_fn, train.x[idx].to(dev), train.y[idx].to(dev), finite)
            step += 1
            if rec.maybe_measure(step, state) and lines is not None:
                lines.measured(step, schedule.epoch(step), stats.latest if stats is not None else {})
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


def plan(cfg: Config, out: Path, datasets: Datasets | None = None) -> Plan:
    """The memory and disk plan of one seed of ``cfg`` written to ``out``: the configured measures bound to the
    first seed's model, with the schedule's checkpoints and the free memory and disk; nothing is trained or
    written. ``datasets``: the data when already loaded (by :func:`run`)."""
    dev = _device(cfg)
    train, val = datasets if datasets is not None else load_data(cfg)
    seed = cfg.seeds[0]
    torch.manual_seed(seed)
    model = build_model(cfg, train).to(dev)
    schedule = make_schedule(cfg, math.ceil(len(train) / cfg.optim.batch))
    measures = measures_for(cfg, train.num_classes)
    rank, size = world()
    # Streams as the Recorder makes them, so each measure is bound to the shard sizes it will see.
    shard = (rank, size)
    evals = Stream((val.x, val.y), "eval_data", cfg.data.eval_batch, shard)
    sub = _train_subset(cfg, seed, train)
    trains = (
        Stream((train.x[sub], train.y[sub]), "train_data", cfg.data.eval_batch, shard) if cfg.data.train_eval else None
    )
    sites = {s.name: tuple(s.shape) for s in find_sites(model, evals.example().to(dev))}
    bind_measures(
        measures,
        sites,
        num_classes=train.num_classes,
        input_shape=tuple(val.x.shape[1:]),
        device=dev,
        eval_samples=evals.samples,
        train_samples=trains.samples if trains is not None else None,
        has_train=trains is not None,
        seed=seed,
        world=size,
    )
    return make_plan(
        measures,
        num_classes=train.num_classes,
        eval_samples=len(val),
        checkpoints=len(schedule.steps),
        device=dev,
        state_bytes=resume_state_bytes(model),
        out=Path(out) / f"seed-{seed}",
    )


def estimate(cfg: Config, datasets: Datasets | None = None, *, budget_s: float = 1.0) -> TimeEstimate:
    """One seed's time, from a short timed calibration here (:mod:`.estimate`): training steps of ``cfg``'s model,
    optimizer and batch for about ``budget_s``, and one measurement of its measures on a slice of the evaluation
    data, scaled. It trains a model of its own in a temporary folder and restores every random state."""
    dev = _device(cfg)
    train, val = datasets if datasets is not None else load_data(cfg)
    steps_per_epoch = math.ceil(len(train) / cfg.optim.batch)
    schedule = make_schedule(cfg, steps_per_epoch)
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    seed = cfg.seeds[0]
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        model = build_model(cfg, train).to(dev)
        opt = _optimizer(cfg, model)
        loss_fn = loss_function(cfg, train.num_classes)
        order, batch = _epoch_order(seed, 0, len(train)), min(cfg.optim.batch, len(train))

        def step(i: int) -> None:
            idx = order[(i % steps_per_epoch) * batch :][:batch]
            _train_step(model, opt, loss_fn, train.x[idx].to(dev), train.y[idx].to(dev))

        model.train()
        step_s, timed = time_calls(step, sync, budget_s=budget_s)
        # The slice holds at least one evaluation batch, so the per-batch costs are those of the run.
        n_val = min(len(val), max(cfg.data.eval_batch, 1000))
        sub = _train_subset(cfg, seed, train)
        n_train = min(len(sub), n_val) if cfg.data.train_eval else 0
        with tempfile.TemporaryDirectory(prefix="nnphases-estimate-") as tmp:
            rec = Recorder(
                model,
                (val.x[:n_val], val.y[:n_val]),
                Schedule((0, 1), 1),
                Path(tmp) / "run",
                measures_for(cfg, train.num_classes),
                train_data=(train.x[sub[:n_train]], train.y[sub[:n_train]]) if n_train else None,
                num_classes=train.num_classes,
                options=RecorderOptions(batch_size=cfg.data.eval_batch, check_plan=False),
            )
            measured = time_measurement(rec, sync)
    samples = len(val) + (len(sub) if n_train else 0)
    return TimeEstimate(
        steps=schedule.last,
        checkpoints=len(schedule.steps),
        step_s=step_s,
        steps_timed=timed,
        measure_s=measured * samples / (n_val + n_train),
        measured_samples=n_val + n_train,
        samples=samples,
        device=str(dev),
    )


def _progress(total: int, initial: int, desc: str, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False)


def run(
    cfg: Config,
    out: Path,
    *,
    progress: bool = True,
    on_plan: Callable[[Plan, TimeEstimate | None], None] | None = None,
) -> list[Path]:
    """All seeds of a configuration into ``out/seed-<k>``; an existing ``out`` must hold the same config. A new run
    (no ``run.json`` yet) is planned first (:func:`plan`) and refused with ValueError when it cannot fit, before
    anything is written; ``on_plan`` is given the plan and the estimated time (:func:`estimate`; None under
    torchrun); a continued one is checked by each seed's Recorder against the
    checkpoints it has left. The data are loaded once, for every seed. Under torchrun (``WORLD_SIZE`` > 1) every
    process trains data-parallel and measures its shard; rank 0 writes."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {str(out)!r} exists and is not a folder")
    datasets = functools.cache(lambda: load_data(cfg))
    with _process_group(cfg):
        rank, size = world()
        cfg_path = out / "run.json"
        new = not cfg_path.exists()
        if size > 1:  # every rank has looked before rank 0 writes: all plan (binding may be collective) or none
            torch.distributed.barrier()
        if not new:
            stored = read_config(cfg_path)
            if stored != cfg:
                was, now = stored.flat(), cfg.flat()
                diff = [
                    f"--{k.replace('_', '-')} {was.get(k)} there, {now.get(k)} here"
                    for k in now
                    if was.get(k) != now.get(k)
                ]
                raise ValueError(
                    f"{out} holds a run with other options ({'; '.join(diff) or 'its stored configuration differs'}); "
                    f"continue it as it is with --resume {out}, or choose another --out"
                )
        else:
            p = plan(cfg, out, datasets())
            if p.problems():
                raise ValueError(p.verdict())
            if on_plan is not None:
                # Timing under torchrun would need every rank's measurement at once: not estimated there.
                on_plan(p, estimate(cfg, datasets()) if size == 1 else None)
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(cfg_path, cfg.to_json())
        if size > 1:
            torch.distributed.barrier()
        return [
            train_seed(cfg, s, out / f"seed-{s}", progress=progress and rank == 0, datasets=datasets) for s in cfg.seeds
        ]


class _process_group:
    """Joins the torchrun world when launched by torchrun (and no process group exists yet): NCCL on GPUs, gloo on
    the CPU; leaves it at the end."""

    def __init__(self, cfg: Config) -> None:
        self.cfg, self.owned = cfg, False

    def __enter__(self) -> None:
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            gpu = self.cfg.device in ("auto", "cuda") and torch.cuda.is_available()
            if gpu:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
            dist.init_process_group("nccl" if gpu else "gloo")
            self.owned = True

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def resume(out: Path, *, progress: bool = True) -> list[Path]:
    """Continues every seed of the run in ``out`` from its last complete checkpoint."""
    cfg_path = Path(out) / "run.json"
    if not cfg_path.exists():
        cells = sorted(c.parent for c in Path(out).glob("*/run.json"))  # a grid: one run per cell
        if not cells:
            raise FileNotFoundError(f"{out} has no run.json: not a folder made by nnphases run")
        return [p for cell in cells for p in resume(cell, progress=progress)]
    return run(read_config(cfg_path), Path(out), progress=progress)
