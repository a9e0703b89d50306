"""TensorBoard and W&B loggers: what a recorded run's checkpoints become, read back from the services' own files.

One small recorded run (sample sets, loss and accuracy on both splits, fast
probes; three checkpoints) is logged live (checkpoint by checkpoint, as the
callbacks do) or replayed with :func:`log_run`, then read back: TensorBoard's
event files with its ``EventAccumulator``, W&B's offline run folder by reading
the records of its ``.wandb`` file. Each service's tests skip when it is not
installed (``pip install -e ".[test]"`` installs both).
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from nnphases.integrations.loggers import LoggerOptions, f_heatmap, log_run, read_checkpoint
from nnphases.recording.measures import EvalStats, Probes, SampleSets
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.store.runs import read_table
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir

STEPS = (0, 3, 8)
STEPS_PER_EPOCH = 4
LAYER_METRICS = ("f", "p", "u", "dead", "always_active")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of a 2-hidden-layer MLP (the second layer wider than the heatmap's 256 columns)."""
    out = tmp_path_factory.mktemp("loggers") / "run"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 300), nn.ReLU(), nn.Linear(300, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(120, 6, generator=g), torch.arange(120) % 3
    rec = Recorder(model, (x[:60], y[:60]), Schedule(STEPS, STEPS_PER_EPOCH), out,
                   [SampleSets(), EvalStats(), Probes(mode="fast")], train_data=(x[60:], y[60:]),
                   options=RecorderOptions(background_writes=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(STEPS[-1] + 1):
        if step:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        rec.maybe_measure(step)
    rec.close()
    return out


def _expected(run: Path, prefix: str = "nnphases/") -> dict[str, dict[int, float]]:
    """Every scalar a logger should log, from the run's tables: name -> {step: value}."""
    out: dict[str, dict[int, float]] = {}

    def put(name: str, step: int, value: float) -> None:
        if math.isfinite(value):
            out.setdefault(prefix + name, {})[int(step)] = float(value)

    for r in read_table(run, "layers").itertuples():
        for m in LAYER_METRICS:
            put(f"{m}/{r.layer}", r.step, getattr(r, m))
        put("epoch", r.step, r.epoch)
    for r in read_table(run, "stats").itertuples():
        put(f"loss/{r.split}", r.step, r.loss)
        put(f"accuracy/{r.split}", r.step, r.accuracy)
    for r in read_table(run, "probes").itertuples():
        put(f"probe_test_accuracy/{r.layer}/{r.mode}", r.step, r.test_accuracy)
        put(f"probe_reconstruction_nmse/{r.layer}/{r.mode}", r.step, r.reconstruction_nmse)
    return out


def test_read_checkpoint_is_per_layer(run: Path) -> None:
    expect = _expected(run)
    layers = read_table(run, "layers")["layer"].unique().tolist()
    assert len(layers) == 2
    # Every kind of curve is there, none per node.
    names = {k.split("/")[1] for k in expect}
    assert {"f", "p", "u", "dead", "always_active", "loss", "accuracy", "probe_test_accuracy",
            "probe_reconstruction_nmse", "epoch"} <= names
    assert {k.rsplit("/", 1)[-1] for k in expect if k.startswith("nnphases/f/")} == set(layers)
    assert {"nnphases/loss/val", "nnphases/loss/train"} <= set(expect)
    for step in STEPS:
        c = read_checkpoint(run, step)
        assert c.step == step and c.epoch == step / STEPS_PER_EPOCH
        assert c.scalars == {k: v[step] for k, v in expect.items() if step in v and k != "nnphases/epoch"}
        assert c.heatmap is not None and c.heatmap.dtype == np.uint8 and c.heatmap.shape[2] == 3
        assert 50 < c.heatmap.shape[0] < 400 and 200 < c.heatmap.shape[1] < 600
    assert read_checkpoint(run, 0, LoggerOptions(heatmaps=False)).heatmap is None
    assert set(read_checkpoint(run, 0, LoggerOptions(prefix="x.")).scalars) == {
        "x." + k[len("nnphases/"):] for k, v in expect.items() if 0 in v and k != "nnphases/epoch"}


@pytest.mark.parametrize("nodes, width, expect", [
    ([0.0, 1.0, 0.5, 0.5], 2, [0.5, 0.5]),             # wider than the image: means of equal blocks
    ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 4, [0.1, 0.4, 0.7, 1.0]),  # node i in column i * 4 // 6
    ([0.25, 0.75], 4, [0.25, 0.25, 0.75, 0.75]),       # narrower: each node stretched
    ([0.3], 3, [0.3, 0.3, 0.3]),
    ([0.1, 0.2, 0.3], 3, [0.1, 0.2, 0.3]),
], ids=["halve", "uneven-blocks", "stretch", "one-node", "same"])
def test_heatmap_columns(nodes: list[float], width: int, expect: list[float]) -> None:
    from nnphases.integrations.loggers import _columns

    np.testing.assert_allclose(_columns(np.array(nodes), width), expect)


def test_heatmap_is_small_whatever_the_width() -> None:
    import pandas as pd

    nodes = pd.DataFrame({"layer": ["a"] * 5000 + ["b"] * 3, "node": list(range(5000)) + [0, 1, 2],
                          "f": np.linspace(0, 1, 5003)})
    img = f_heatmap(nodes, width=256, title="t")
    assert img.shape[2] == 3 and img.shape[0] * img.shape[1] < 200_000


@pytest.mark.parametrize("how", ["live", "replay"])
def test_tensorboard_holds_the_curves_and_images(run: Path, tmp_path: Path, how: str) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nnphases.integrations.loggers import TensorBoardLogger

    if how == "live":
        lg = TensorBoardLogger(tmp_path / "tb")
        for step in RunDir(run).completed_steps():
            lg.log_checkpoint(run, step)
        lg.close()
    else:
        assert log_run(run, tensorboard=tmp_path / "tb") == list(STEPS)
    ea = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    expect = _expected(run)
    assert set(ea.Tags()["scalars"]) == set(expect)
    for tag, values in expect.items():
        got = {e.step: e.value for e in ea.Scalars(tag)}  # global_step is the training step
        assert got.keys() == values.keys(), tag
        np.testing.assert_allclose([got[s] for s in values], list(values.values()), rtol=1e-6, err_msg=tag)
    assert ea.Tags()["images"] == ["nnphases/f_heatmap"]
    images = ea.Images("nnphases/f_heatmap")
    assert [i.step for i in images] == list(STEPS)
    assert all(i.encoded_image_string[:4] == b"\x89PNG" and i.width > 100 for i in images)


def _wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B ``.wandb`` file: a 7-byte header (``:W&B``, magic, version), then LevelDB log
    framing (32 KiB blocks; each chunk: crc32c, length, type full/first/middle/last) around protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, record = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        record = chunk if kind in (1, 2) else record + chunk
        if kind in (1, 4):
            r = wandb_internal_pb2.Record()
            r.ParseFromString(record)
            yield r


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B in offline mode, every file it writes under tmp_path; its service stopped afterwards."""
    wandb = pytest.importorskip("wandb")
    for var, value in [("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off"),
                       ("WANDB_DISABLE_GIT", "true"), ("WANDB_DISABLE_CODE", "true")]:
        monkeypatch.setenv(var, value)
    # XDG_CACHE_HOME: W&B's service writes its debug log there, not under WANDB_CACHE_DIR.
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR",
                "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    yield tmp_path / "wb"
    wandb.teardown()


@pytest.mark.parametrize("how", ["logger", "replay"])
def test_wandb_offline_holds_the_curves_and_images(run: Path, offline_wandb: Path, how: str) -> None:
    init = {"dir": str(offline_wandb), "project": "nnphases-test", "mode": "offline"}
    offline_wandb.mkdir()
    if how == "logger":
        from nnphases.integrations.loggers import WandbLogger

        lg = WandbLogger(init=init)
        for step in RunDir(run).completed_steps():
            lg.log_checkpoint(run, step)
        lg.close()
    else:
        log_run(run, wandb=init)
    # finish() returns before W&B's service has written everything; its shutdown waits for the file.
    import wandb

    wandb.teardown()
    (folder,) = (offline_wandb / "wandb").glob("offline-run-*")
    (records_file,) = folder.glob("run-*.wandb")
    history, metrics = [], []
    for r in _wandb_records(records_file):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            history.append({"/".join(i.nested_key) if i.nested_key else i.key: i.value_json for i in r.history.item})
        elif kind == "metric":
            metrics.append(r.metric)
    # Every nnphases key is plotted against the epoch.
    assert any(m.glob_name == "nnphases/*" and m.step_metric == "nnphases/epoch" for m in metrics)
    assert [float(h["nnphases/epoch"]) for h in history] == [s / STEPS_PER_EPOCH for s in STEPS]
    assert [int(h["nnphases/step"]) for h in history] == list(STEPS)
    expect = _expected(run)
    for i, step in enumerate(STEPS):
        logged = {k: float(v) for k, v in history[i].items() if k.startswith("nnphases/")
                  and not k.startswith(("nnphases/f_heatmap", "nnphases/step"))}
        assert logged.keys() == {k for k, v in expect.items() if step in v}
        for k, v in logged.items():
            assert math.isclose(v, expect[k][step], rel_tol=1e-9), (k, step)
        assert history[i]["nnphases/f_heatmap/_type"] == '"image-file"'
    assert len(list((folder / "files" / "media" / "images").rglob("f_heatmap_*.png"))) == len(STEPS)


def test_live_logging_through_a_callback(tmp_path: Path) -> None:
    """The callback feeds a TensorBoardLogger each checkpoint once written: the event file holds the schedule."""
    pl = pytest.importorskip("lightning.pytorch")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.data import DataLoader, TensorDataset

    from nnphases.integrations.callbacks import CallbackOptions
    from nnphases.integrations.callbacks.lightning import NnphasesCallback
    from nnphases.integrations.loggers import TensorBoardLogger

    class Mlp(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x, y = torch.randn(48, 6), torch.arange(48) % 3
    cb = NnphasesCallback(tmp_path / "run", (x, y), loggers=[TensorBoardLogger(tmp_path / "tb")],
                          options=CallbackOptions(per_decade=3))
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, callbacks=[cb],
                         default_root_dir=tmp_path, accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Mlp(), DataLoader(TensorDataset(x, y), batch_size=4))
    assert cb.schedule is not None and cb.schedule == Schedule.log(2, 12, per_decade=3)
    ea = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("nnphases/f/net.1")] == list(cb.schedule.steps)
    assert [e.value for e in ea.Scalars("nnphases/epoch")] == pytest.approx(cb.schedule.epochs())
    assert [i.step for i in ea.Images("nnphases/f_heatmap")] == list(cb.schedule.steps)


@pytest.mark.parametrize("call, error, match", [
    (lambda run, tmp: log_run(run), ValueError, "needs tensorboard= .* or wandb="),
    (lambda run, tmp: log_run(run, wandb=False), ValueError, "needs tensorboard="),
    (lambda run, tmp: log_run(3, tensorboard=tmp), TypeError, "run must be a path, got 3"),
    (lambda run, tmp: log_run(tmp, tensorboard=tmp / "tb"), ValueError, "holds no complete checkpoint"),
    (lambda run, tmp: read_checkpoint(run, 5), ValueError, "step 5 has no complete checkpoint"),
    (lambda run, tmp: read_checkpoint(run, -1), ValueError, "step must be >= 0, got -1"),
    (lambda run, tmp: LoggerOptions(prefix=""), TypeError, "prefix must be a non-empty string"),
    (lambda run, tmp: LoggerOptions(heatmap_width=0), ValueError, "heatmap_width must be >= 1, got 0"),
], ids=["no-logger", "wandb-false", "run-type", "empty-folder", "no-step", "negative-step", "prefix", "width"])
def test_bad_arguments(run: Path, tmp_path: Path, call: Callable[[Path, Path], Any], error: type[Exception],
                       match: str) -> None:
    with pytest.raises(error, match=match):
        call(run, tmp_path)


@pytest.mark.parametrize("hidden, make, extra", [
    ("torch.utils.tensorboard",
     lambda tmp: __import__("nnphases.integrations.loggers").integrations.loggers.TensorBoardLogger(tmp),
     "tensorboard"),
    ("wandb", lambda tmp: __import__("nnphases.integrations.loggers").integrations.loggers.WandbLogger(), "wandb"),
], ids=["tensorboard", "wandb"])
def test_missing_service_says_what_to_install(hidden: str, make: Callable[[Path], Any], extra: str,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)  # import of it raises ImportError
    with pytest.raises(ImportError, match=rf"pip install 'nnphases\[{extra}\]'"):
        make(tmp_path)
