"""The jobs: both sources' protocols as nnphases presets with a few options changed.

A job is a preset (:data:`nnphases.experiments.train.PRESETS`) and the options it changes, by their flat names;
:func:`job_list` resolves each one through :func:`nnphases.experiments.train.resolve`, so an option the
configuration does not have, or a bad value, stops the script at start-up, and the schedule a job is timed with is
the one its preset declares. The options become ``nnphases run`` flags by the rule the command line is derived
with (``--name-with-dashes``, ``--no-`` for a switch off, comma lists).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from .common import log

# Last ReLU sites (paper-mode probes there) when finding them fails; checked with find_sites at start-up.
LAST_SITES = {"fc_bn": "relu3", "vgg11": "features.19", "resnet10": "layer4.0.relu_1"}
RUNS = 16  # processes of the full protocols: 3 x 3 seeds (source 000), 5 (FC-BN), 1 + 1 (VGG-11, ResNet-10)
JOB_NAMES = ("source000-9x320-ce", "source000-9x320-mse", "source000-2x320-mse", "source002-fcbn", "source002-vgg11",
             "source002-resnet10")
FULL_EVAL = {"holdout": 12000, "train_eval": 12000}  # source 002's validation and probe sets


@dataclass
class Job:
    name: str
    group: str  # one archive per group
    preset: str
    args: list[str]  # nnphases run flags besides --preset --out --epochs --seeds --device (and calibration's)
    seeds: list[int]
    target: float  # the protocol's epochs
    minimum: float  # never fewer unless the budget cannot allow it
    calib_epochs: float
    schedule: str = "log"  # "log" (per_decade per decade from first_epoch) or "pow2": the preset's
    per_decade: int = 10
    first_epoch: float = 1e-3
    protocol: str = ""  # one line for the summary


def make_job(name: str, group: str, preset: str, overrides: dict[str, Any], seeds: list[int], target: float,
             minimum: float, calib_epochs: float, protocol: str) -> Job:
    """A job whose options are checked by resolving them against its preset, with the preset's schedule."""
    from nnphases.experiments import train

    cfg = train.resolve(preset, overrides)
    s = cfg.schedule
    return Job(name, group, preset, run_args(overrides), seeds, target, minimum, calib_epochs, schedule=s.schedule,
               per_decade=s.per_decade, first_epoch=s.first_epoch, protocol=protocol)


def run_args(overrides: dict[str, Any]) -> list[str]:
    """Flat options as ``nnphases run`` flags."""
    out: list[str] = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (tuple, list)):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


def without(args: list[str], flag: str) -> list[str]:
    """``args`` without ``flag`` and its value."""
    if flag not in args:
        return list(args)
    i = args.index(flag)
    return args[:i] + args[i + 2:]


def job_list(opts: argparse.Namespace, sites: dict[str, str]) -> list[Job]:
    """The two sources' protocols; ``--smoke`` keeps the list's shape with tiny runs, one seed each."""
    fashion: dict[str, Any] = {"dataset": "fashion-mnist", "data_root": str(opts.data_root)}
    s000_data = {"dataset": "mnist", "data_root": str(opts.mnist_root)} if opts.mnist_root else fashion
    s000_name = "MNIST" if opts.mnist_root else "FashionMNIST"
    specs: list[dict[str, Any]] = []
    for depth, width, loss in ((9, 320, "ce"), (9, 320, "mse"), (2, 320, "mse")):
        specs.append(dict(
            name=f"source000-{depth}x{width}-{loss}", group="source000", preset="source000",
            overrides={**s000_data, "depth": depth, "width": width, "loss": loss}, seeds=[0, 1, 2], target=200,
            minimum=200, calib_epochs=2,
            protocol=f"{depth}x{width} MLP, {loss}, Adam 1e-3, batch 60, {s000_name}, 200 epochs, seeds 0,1,2, "
                     f"10 measurements per decade from 1e-3 epoch"))
    specs.append(dict(
        name="source002-fcbn", group="source002-fcbn", preset="source002",
        overrides={**fashion, **FULL_EVAL, "probe_mode": "both", "paper_layers": (sites["fc_bn"],)},
        seeds=[0, 1, 2, 3, 4], target=256, minimum=256, calib_epochs=1,
        protocol="FC-BN 3x256, FashionMNIST 32x32, SGD lr 0.002, batch 128, 256 epochs, seeds 0-4, steps 0,1,2,4,...; "
                 f"fast probes at every ReLU, paper probes on {sites['fc_bn']}"))
    for model, preset in (("vgg11", "source002-vgg11"), ("resnet10", "source002-resnet10")):
        specs.append(dict(
            name=preset, group="source002-conv", preset=preset,
            overrides={**fashion, **FULL_EVAL, "eval_batch": 1000, "probe_mode": "both",
                       "paper_layers": (sites[model],)},
            seeds=[0], target=256, minimum=32, calib_epochs=0.5,
            protocol=f"{model}, FashionMNIST 32x32, SGD lr 0.002, batch 128, as many of the source's 256 epochs as "
                     f"the budget allows (at least 32), seed 0, steps 0,1,2,4,...; fast probes at every ReLU, paper "
                     f"probes on {sites[model]}"))
    if opts.smoke:
        specs = [_smoke(s) for s in specs]
    return [make_job(**s) for s in specs]


def _smoke(spec: dict[str, Any]) -> dict[str, Any]:
    """Tiny runs, one seed, small evaluation sets (paper probes fitted on 100 samples); the conv nets for one step
    of batch 16 with fast probes on their last site only (a paper probe of a conv layer takes tens of seconds on a
    CPU)."""
    o = dict(spec["overrides"])
    if spec["group"] == "source002-conv":
        site = o.pop("paper_layers")
        o.update(holdout=100, train_eval=100, batch=16, probe_mode="fast", probe_layers=site, eval_batch=100)
    else:
        o.update(holdout=500, train_eval=100)
    target = {"source000": 0.005, "source002-fcbn": 0.005}.get(spec["group"], 0.0003)
    return {**spec, "overrides": o, "seeds": spec["seeds"][:1], "target": target, "minimum": target,
            "calib_epochs": target / 2, "protocol": "smoke: " + spec["protocol"]}


def last_sites() -> dict[str, str]:
    """The last ReLU site of each source-002 model, found as nnphases finds them (the models as train.py builds them:
    one input channel, 32x32, 10 classes); the known names when that fails."""
    try:
        import torch

        from nnphases.experiments import models
        from nnphases.recording import capture

        x = torch.zeros(2, 1, 32, 32)
        found = {"fc_bn": capture.find_sites(models.fc_bn(1024, 3, 256, 10), x),
                 "vgg11": capture.find_sites(models.vgg11(10, 1), x),
                 "resnet10": capture.find_sites(models.resnet10(10, 1), x)}
        return {k: getattr(v[-1], "name", str(v[-1])) for k, v in found.items()}
    except Exception as e:
        log(f"finding the last ReLU sites failed ({type(e).__name__}: {e}); using {LAST_SITES}")
        return dict(LAST_SITES)
