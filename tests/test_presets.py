"""Presets resolve to runnable configurations; source 002's probe options run end to end and resume exactly."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from nnphases.experiments import train
from nnphases.store import read_table


@pytest.mark.parametrize("preset", list(train.PRESETS))
def test_preset_builds_its_model(preset):
    cfg = train.resolve(preset, {"dataset": "synthetic", "holdout": 600,
                                 "resize": 32 if train.PRESETS[preset].data.resize else None})
    tr, _ = train.load_data(cfg)
    model = train.build_model(cfg, tr)
    assert model(tr.x[:2]).shape == (2, tr.num_classes)


@pytest.mark.parametrize("preset,model,probes,schedule", [
    ("source002", "fc_bn", True, "pow2"),
    ("source002-vgg11", "vgg11", True, "pow2"),
    ("source002-resnet10", "resnet10", True, "pow2"),
])
def test_source002_presets_follow_the_protocol(preset, model, probes, schedule):
    f = train.resolve(preset, {}).flat()
    assert (f["model"], f["probes"], f["schedule"], f["optimizer"], f["lr"], f["batch"], f["resize"]) == \
        (model, probes, schedule, "sgd", 0.002, 128, 32)


def _cfg(**kw) -> train.Config:
    base = dict(dataset="synthetic", holdout=600, model="fc_bn", depth=2, width=16, epochs=1, batch=30, seeds=[0],
                schedule="pow2", probes=True, probe_mode="both", probe_layers=["relu2"], probe_warm_start=True,
                train_eval=300, device="cpu", optimizer="sgd", lr=0.05)
    return train.Config.from_flat({**base, **kw})


class _Stop(Exception):
    pass


def test_paper_probes_warm_start_resume_exactly(tmp_path):
    """A run stopped after a checkpoint and resumed ends with the probe rows of an uninterrupted run: the
    paper probes' warm-start models are part of the resume state."""
    torch.set_num_threads(1)
    cfg = _cfg()
    train.run(cfg, tmp_path / "ref", progress=False)
    ref = read_table(tmp_path / "ref" / "seed-0", "probes")
    assert set(ref["mode"]) == {"fast", "text"} and set(ref["layer"]) == {"relu2"}

    out = tmp_path / "stopped"
    (out).mkdir()
    (out / "run.json").write_bytes(cfg.to_json())

    def stop(step: int) -> None:
        if step == 40:  # between the checkpoints at steps 32 and 64
            raise _Stop

    with pytest.raises(_Stop):
        train.train_seed(cfg, 0, out / "seed-0", on_step=stop)
    train.resume(out, progress=False)
    got = read_table(out / "seed-0", "probes")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref.reset_index(drop=True))


def test_unknown_probe_layer_in_a_run(tmp_path):
    with pytest.raises(ValueError, match=r"no ReLU site named \['relu9'\]; the model's sites: \['relu1', 'relu2'\]"):
        train.run(_cfg(probe_layers=["relu9"]), tmp_path / "bad", progress=False)


@pytest.mark.parametrize("args,message", [
    (["run", "--preset", "nope"], "unknown preset 'nope'; choose from demo"),
    (["run", "--dataset", "synthetic", "--holdout", "600", "--probes", "--probe-mode", "slow", "--no-figures"],
     "--probe-mode must be one of 'fast', 'text', 'code', 'fast+text', 'fast+code', 'text+code', "
     "'fast+text+code', 'paper', 'both'; got 'slow'"),
    (["findings", "/nonexistent-run"], "'/nonexistent-run' does not exist"),
    (["run", "--seeds", "0,x"], "--seeds must be comma-separated integers, got '0,x'"),
    (["run", "--dataset", "synthetic", "--holdout", "600", "--probes", "--probe-decoder", "mlp", "--no-figures"],
     "--probe-decoder must be one of 'linear', 'random-features'; got 'mlp'"),
    (["run", "--batch", "-5"], "--batch must be >= 1, got -5"),
    (["run", "--epochs", "nan"], "--epochs must be a finite number, got nan"),
    (["run", "--train-eval", "-5"], "--train-eval must be >= 0, got -5"),
    (["run", "--resize", "0"], "--resize must be >= 1, got 0"),
    (["run", "--device", "foo"], "--device must be auto, cpu, cuda or cuda:<index>, got 'foo'"),
    (["run", "--probe-mode", "both"], "--probe-mode set options of the probes measure, which is off: add --probes"),
    (["run", "--per-decade", "1000000000"], "--per-decade must be <= 1000, got 1000000000"),
    (["run", "--resume", "/tmp", "--epochs", "3"], "--resume continues a run with its stored options; drop --epochs"),
])
def test_cli_bad_input_is_one_clear_line(tmp_path, args, message):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nnphases.cli", *args, *(["--out", str(tmp_path / "o")]
                        if args[0] == "run" else [])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
