"""The run configuration: one declaration per option, from presets to the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.main import get_command

from nnphases.experiments import train
from nnphases.cli import app
from nnphases.experiments.config import Config, flat_options
from nnphases.recording.measures import ProbesOptions


def test_every_option_is_a_command_line_flag():
    params = {p.name for p in get_command(app).commands["run"].params}  # type: ignore[attr-defined]
    assert set(flat_options()) | {"seeds", "device"} <= params
    plan = {p.name for p in get_command(app).commands["plan"].params}  # type: ignore[attr-defined]
    assert set(flat_options()) <= plan


@pytest.mark.parametrize("preset", list(train.PRESETS))
def test_presets_round_trip(preset):
    cfg = train.PRESETS[preset]
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg
    assert Config.from_flat(cfg.flat()) == cfg  # every value a preset sets has a flat name


def test_run_json_written_before_the_nesting_still_resumes():
    old = {"dataset": "fashion-mnist", "data_root": None, "holdout": 12000, "resize": 32, "model": "fc_bn",
           "depth": 3, "width": 256, "loss": "ce", "optimizer": "sgd", "lr": 0.002, "batch": 128, "epochs": 2,
           "seeds": [0, 1], "per_decade": 10, "first_epoch": 0.001, "eval_batch": 2000, "train_eval": 4000,
           "keep_masks": False, "per_channel": False, "probes": True, "probe_mode": "fast", "probe_layers": None,
           "probe_warm_start": False, "paper_layers": None, "probe_decoder": "linear", "schedule": "pow2",
           "device": "auto"}
    # The preset has since added trained probes; the old run keeps its own fast ones.
    assert Config.from_dict(old) == Config.from_flat({"probe_mode": "fast"}, base=train.PRESETS["source002"])


@pytest.mark.parametrize("flat,error,match", [
    ({"batch": 0}, ValueError, "batch must be >= 1, got 0"),
    ({"epochs": float("inf")}, ValueError, "epochs must be a finite number"),
    ({"loss": "l1"}, ValueError, "loss must be one of 'ce', 'mse'; got 'l1'"),
    ({"first_epoch": "0.1"}, TypeError, "first_epoch must be a number, got '0.1'"),
    ({"probe_mode": "paper"}, ValueError, "--probe-mode set options of the probes measure, which is off"),
    ({"probes": True, "train_eval": 0}, ValueError, "probes need training samples: train_eval must be >= 1"),
    ({"seeds": ()}, ValueError, "seeds must name at least one seed"),
    ({"device": "tpu"}, ValueError, "device must be auto, cpu, cuda or cuda:<index>, got 'tpu'"),
    ({"widht": 3}, ValueError, "unknown options \\['widht'\\]"),
])
def test_bad_options(flat, error, match):
    with pytest.raises(error, match=match):
        Config.from_flat(flat)


def test_measure_options_are_typed_objects():
    cfg = train.resolve("source002", {"probe_mode": "both", "paper_layers": ["relu3"]})
    assert cfg.measures["probes"] == ProbesOptions(mode="both", paper_layers=("relu3",))
    assert cfg.measures["masks"] is None


def test_plan_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nnphases.cli", "plan", "--dataset", "synthetic", "--holdout", "600",
                        "--keep-masks", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["measure", "site", "nodes", "device", "per", "ckpt"]
    # The demo's 5x80 MLP on 600 samples: int32 counts of 10 classes, 80 nodes per site; masks of 10 words a row.
    assert lines[1].split() == ["sample_sets", "relu1", "80", "3.1", "KiB", "5.3", "KiB"]
    assert lines[6].split() == ["masks", "relu1", "80", "0", "B", "6.2", "KiB"]  # 10 words of bits a row
    assert lines[-2] == "fits" and lines[-1].startswith("time: about ") and not (tmp_path / "o").exists()


def test_a_configuration_stored_before_a_measure_existed_reads_as_today_s():
    """A run.json written before a measure was added lacks its key: that measure was not measured (off), and the
    configuration equals today's with it off, so that the same options continue the run."""
    from nnphases.experiments.config import Config

    cfg = train.resolve("demo", {})
    assert cfg.measures["records"] is None
    old = cfg.to_dict()
    del old["measures"]["records"]
    assert Config.from_dict(old) == cfg
    on = train.resolve("demo", {"keep_records": True})
    assert on.measures["records"] is not None and Config.from_dict(on.to_dict()) == on
