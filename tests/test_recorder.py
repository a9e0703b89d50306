"""The Recorder's core path: counts equal class_counts over the whole set, masks round-trip to pack_masks of the
whole set, streamed data give bit-identical checkpoints, and every misuse is a clear error before anything is
written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnphases.experiments import data, train

from nnphases import kernels
from nnphases.recording.measures import EvalStats, Masks, Probes, SampleSets
from nnphases.recording.measures import eval_stats
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule
from nnphases.store import RunDir, read_table

SEED = 20261202  # fixed: a failing case replays in any process


def _set(n: int = 1001, classes: int = 4, shape=(1, 4, 4), seed: int = SEED):
    ds = data.synthetic(n=n, num_classes=classes, shape=shape, seed=seed % 1000)
    return ds.x, ds.y


def _mlp(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, classes))


def _conv(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, classes))


def _acts(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every ReLU site's output over the whole set, by the capture's names."""
    from nnphases.recording.capture import SiteTap

    out: dict[str, list[torch.Tensor]] = {}
    tap = SiteTap(model, lambda n, z: out.setdefault(n, []).append(z.clone()))
    model.eval()
    with torch.no_grad(), tap:
        tap(x)
    return {k: torch.cat(v) for k, v in out.items()}


def _tables(run: Path) -> dict[str, pd.DataFrame]:
    return {t: read_table(run, t) for t in ("nodes", "layers", "stats")}


# -- counts and masks against the kernels over the whole set -------------------------------------

@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("batch", [64, 100, 37, 5000])
def test_counts_and_masks_equal_the_kernels_over_the_whole_set(tmp_path, per_channel, batch):
    x, y = _set()
    model = _conv()
    rec = Recorder(model, (x, y), Schedule((0,), 1), tmp_path / "run",
                   [SampleSets(per_channel=per_channel), EvalStats(), Masks(per_channel=per_channel, buffer_mib=1)],
                   options=RecorderOptions(batch_size=batch, background_writes=False))
    rec.measure(0)
    rec.close()
    run = RunDir(tmp_path / "run")
    counts, sizes = run.read_counts(0)
    assert sizes.tolist() == torch.bincount(y, minlength=4).tolist()
    for site, z in _acts(model, x).items():
        flat = z.reshape(z.shape[0], z.shape[1], -1).amax(2) if per_channel and z.dim() > 2 else z.flatten(1)
        np.testing.assert_array_equal(counts[site], kernels.class_counts(flat, y, 4).numpy())
        packed = kernels.pack_masks(flat).numpy()
        np.testing.assert_array_equal(run.read_masks(0)[site], packed)
        np.testing.assert_array_equal(run.read_masks(0, site, nodes=slice(1, 3)), packed[1:3])
        for a, b in ((0, 1001), (3, 77), (64, 130), (500, 1001)):
            np.testing.assert_array_equal(run.read_masks(0, site, samples=slice(a, b)),
                                          kernels.pack_masks(flat[a:b]).numpy())


def test_masks_memory_is_one_buffer_per_site(tmp_path):
    """The writer's column buffer is sized by buffer_mib, not by the number of samples."""
    x, y = _set(n=3000)
    rec = Recorder(_mlp(), (x, y), Schedule((0,), 1), tmp_path / "run", [SampleSets(), Masks(buffer_mib=1)],
                   options=RecorderOptions(batch_size=500))
    masks = next(m for m in rec.measures if isinstance(m, Masks))
    assert masks.cols * sum(masks.nodes.values()) <= 1 << 20
    rec.measure(0)
    rec.close()
    assert RunDir(tmp_path / "run").read_masks(0)["2"].shape == (32, 376)


# -- streams ------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_is_bit_identical_to_tensors(tmp_path, workers):
    x, y = _set()
    xt, yt = _set(n=600, seed=SEED + 1)
    runs = {}
    for name, ev, tr in (("tensors", (x, y), (xt, yt)),
                         ("loader", DataLoader(TensorDataset(x, y), batch_size=128, num_workers=workers,
                                               pin_memory=False),
                          DataLoader(TensorDataset(xt, yt), batch_size=100, num_workers=workers))):
        rec = Recorder(_mlp(), ev, Schedule((0, 1), 1), tmp_path / name,
                       [SampleSets(), EvalStats(), Masks(), Probes(layers=("4",))], train_data=tr,
                       options=RecorderOptions(batch_size=128 if name == "tensors" else 1000))
        rec.measure(0)
        rec.close()
        runs[name] = tmp_path / name
    a, b = RunDir(runs["tensors"]), RunDir(runs["loader"])
    ca, sa = a.read_counts(0)
    cb, sb = b.read_counts(0)
    assert sa.tolist() == sb.tolist() and ca.keys() == cb.keys()
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k])
    for k, v in a.read_masks(0).items():
        np.testing.assert_array_equal(v, b.read_masks(0)[k])
    for t in ("nodes", "layers", "stats"):
        pd.testing.assert_frame_equal(read_table(runs["tensors"], t), read_table(runs["loader"], t))
    # Probe statistics are float sums in another batch order: equal within rounding, same sample counts.
    pa_, pb = read_table(runs["tensors"], "probes"), read_table(runs["loader"], "probes")
    assert pa_.n_train.tolist() == pb.n_train.tolist() == [600] and pa_.n_test.tolist() == [1001]
    np.testing.assert_allclose(pa_.test_accuracy, pb.test_accuracy, atol=2e-3)


def test_class_sizes_are_counted_from_a_stream(tmp_path):
    x, y = _set()
    batches = [(x[s:s + 300], y[s:s + 300]) for s in range(0, 1001, 300)]
    rec = Recorder(_mlp(), batches, Schedule((0,), 1), tmp_path / "run")
    assert rec.class_sizes is None and rec.plan.eval_samples is None
    rec.measure(0)
    rec.close()
    assert RunDir(tmp_path / "run").read_counts(0)[1].tolist() == torch.bincount(y, minlength=4).tolist()


@pytest.mark.parametrize("change,match", [
    ("shape", r"eval_data batch 0: samples have shape \(1, 4, 5\), the first batch's have \(1, 4, 4\)"),
    ("label", r"eval_data batch 0 labels must lie in \[0, 4\), got a label 7"),
    ("fewer", r"eval_data changed: this pass read class sizes .*the evaluation data must be the same samples"),
    ("float", r"eval_data batch 0 labels must be integers, got dtype torch.float32"),
])
def test_a_changed_stream_stops_without_a_partial_checkpoint(tmp_path, change, match):
    x, y = _set()
    batches = [(x[:500], y[:500]), (x[500:], y[500:])]
    rec = Recorder(_mlp(), batches, Schedule((0, 1), 1), tmp_path / "run")
    rec.measure(0)
    if change == "shape":
        batches[0] = (torch.zeros(500, 1, 4, 5), y[:500])
    elif change == "label":
        batches[0] = (x[:500], torch.full((500,), 7))
    elif change == "fewer":
        batches.pop()
    else:
        batches[0] = (x[:500], y[:500].float())
    with pytest.raises((ValueError, TypeError), match=match):
        rec.measure(1)
    run = RunDir(tmp_path / "run")
    assert run.completed_steps() == [0]
    assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".tmp-")]


def test_shuffling_loader_with_masks_is_refused(tmp_path):
    x, y = _set()
    loader = DataLoader(TensorDataset(x, y), batch_size=100, shuffle=True)
    with pytest.raises(ValueError, match="eval_data shuffles.*storing masks.*shuffle=False"):
        Recorder(_mlp(), loader, Schedule((0,), 1), tmp_path / "run", [SampleSets(), Masks()])
    Recorder(_mlp(), loader, Schedule((0,), 1), tmp_path / "ok")  # counts are sums: order does not matter


def test_a_generator_is_refused(tmp_path):
    x, y = _set()
    with pytest.raises(TypeError, match="eval_data is an iterator"):
        Recorder(_mlp(), ((x[s:s + 100], y[s:s + 100]) for s in range(0, 1001, 100)), Schedule((0,), 1), tmp_path)


# -- the four failures of the landed Recorder ---------------------------------------------------

def test_per_channel_counts_with_probes_on_a_conv_model(tmp_path):
    x, y = _set()
    rec = Recorder(_conv(), (x, y), Schedule((0,), 1), tmp_path / "run",
                   [SampleSets(per_channel=True), EvalStats(), Probes()], train_data=_set(n=300, seed=SEED + 2))
    rec.measure(0)
    rec.close()
    counts, _ = RunDir(tmp_path / "run").read_counts(0)
    assert counts["1"].shape == (4, 4) and counts["5"].shape == (4, 12)
    p = read_table(tmp_path / "run", "probes")
    assert p.layer.tolist() == ["1", "5"] and (p.n_train == 300).all() and p.features.tolist() == [64, 12]


def test_probes_at_a_site_that_is_not_counted(tmp_path):
    x, y = _set()
    rec = Recorder(_mlp(), (x, y), Schedule((0,), 1), tmp_path / "run",
                   [SampleSets(sites=("2",)), Probes(layers=("4",))], train_data=_set(n=300, seed=SEED + 2))
    rec.measure(0)
    rec.close()
    assert list(RunDir(tmp_path / "run").read_counts(0)[0]) == ["2"]
    p = read_table(tmp_path / "run", "probes")
    assert p.layer.tolist() == ["4"] and p.n_train.tolist() == [300] and np.isfinite(p.test_accuracy).all()


def test_a_repeated_step_is_a_no_op(tmp_path):
    x, y = _set()
    rec = Recorder(_mlp(), (x, y), Schedule((0, 1), 1), tmp_path / "run")
    assert [rec.maybe_measure(s) for s in (0, 0, 1, 1, 1)] == [True, False, True, False, False]
    rec.close()
    assert RunDir(tmp_path / "run").completed_steps() == [0, 1]


def test_half_epoch_run_reaches_its_last_scheduled_step(tmp_path):
    # synthetic: 3000 samples, 600 held out, batch 96: 25 steps per epoch; half an epoch is 12.5 steps.
    cfg = train.Config.from_flat(dict(dataset="synthetic", holdout=600, batch=96, epochs=0.5, seeds=(0,),
                                      train_eval=0, device="cpu", depth=2, width=8))
    train.run(cfg, tmp_path / "r", progress=False)
    run = RunDir(tmp_path / "r" / "seed-0")
    assert run.done and run.completed_steps()[-1] == 13 == json.loads((run.path / "config.json").read_text())[
        "total_steps"]


# -- misuse --------------------------------------------------------------------------------------

@pytest.mark.parametrize("step,error", [(5.0, TypeError), ("5", TypeError), (-1, ValueError), (True, TypeError)])
def test_a_step_must_be_an_integer(tmp_path, step, error):
    rec = Recorder(_mlp(), _set(), Schedule((0, 5), 1), tmp_path / "run")
    with pytest.raises(error, match="step must be"):
        rec.maybe_measure(step)


def test_after_close(tmp_path):
    rec = Recorder(_mlp(), _set(), Schedule((0, 1), 1), tmp_path / "run")
    rec.measure(0)
    rec.close()
    rec.close()  # a second close does nothing
    for call in (lambda: rec.measure(1), lambda: rec.maybe_measure(1)):
        with pytest.raises(RuntimeError, match="this Recorder is closed"):
            call()
    assert RunDir(tmp_path / "run").completed_steps() == [0]


def test_a_folder_belongs_to_one_setup(tmp_path):
    x, y = _set()
    out = tmp_path / "run"
    rec = Recorder(_mlp(), (x, y), Schedule((0, 1), 1), out)
    rec.measure(0)
    rec.flush()
    with pytest.raises(ValueError, match="holds measurements of another setup \\(measures differ\\)"):
        Recorder(_mlp(), (x, y), Schedule((0, 1), 1), out, [SampleSets(per_channel=True), EvalStats()])
    with pytest.raises(ValueError, match="was measured on another evaluation set"):
        Recorder(_mlp(), (x[:900], y[:900]), Schedule((0, 1), 1), out)
    rec.close()
    with pytest.raises(ValueError, match="holds a finished run.*delete that folder to start over"):
        Recorder(_mlp(), (x, y), Schedule((0, 1), 1), out)
    shutil.rmtree(out)
    Recorder(_mlp(), (x, y), Schedule((0, 1), 1), out)  # starting over


def test_a_replaced_submodule_is_measured(tmp_path):
    x, y = _set()
    model = _mlp()
    rec = Recorder(model, (x, y), Schedule((0, 1), 1), tmp_path / "run", options=RecorderOptions(batch_size=250))
    rec.measure(0)
    torch.manual_seed(5)
    model[5] = nn.Linear(16, 4)  # a new head
    rec.measure(1)
    rec.close()
    with torch.no_grad():
        model.eval()
        want = float(nn.functional.cross_entropy(model(x), y))
    got = read_table(tmp_path / "run", "stats").query("step == 1").loss.item()
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("labels,ok", [
    (lambda y: y.numpy(), True),
    (lambda y: y.tolist(), True),
    (lambda y: y.to(torch.int32), True),
    (lambda y: nn.functional.one_hot(y, 4), "1-D class indices, got shape \\(1001, 4\\) \\(one-hot"),
    (lambda y: y.float() + 0.7, "labels must be integers, got dtype torch.float32"),
    (lambda y: y[:-1], "y has 1000 labels but x has 1001 samples"),
])
def test_label_forms(tmp_path, labels, ok):
    x, y = _set()
    if ok is True:
        rec = Recorder(_mlp(), (x, labels(y)), Schedule((0,), 1), tmp_path / "run")
        assert rec.class_sizes.tolist() == torch.bincount(y, minlength=4).tolist()
    else:
        with pytest.raises((TypeError, ValueError), match=ok):
            Recorder(_mlp(), (x, labels(y)), Schedule((0,), 1), tmp_path / "run")


class _Tuple(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _mlp()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), x


@pytest.mark.parametrize("make,match", [
    (lambda t: Recorder(_mlp(), _set(), Schedule((0,), 1), t, options=RecorderOptions(batch_size=2.0)),
     "batch_size must be an integer, got 2.0"),
    (lambda t: Recorder(_Tuple(), _set(), Schedule((0,), 1), t), "model\\(x\\) must return logits.*returns tuple"),
    (lambda t: Recorder(_mlp(), (_set()[0].double(), _set()[1]), Schedule((0,), 1), t),
     "eval_data: x has dtype torch.float64 but the model computes in torch.float32"),
    (lambda t: Recorder(_mlp(), _set(), Schedule((0,), 1), t, num_classes=10),
     "num_classes is 10 but the model's output has 4 columns"),
    (lambda t: Recorder(_mlp(), _set(), Schedule((0,), 1), t, [EvalStats()]), "measures must include SampleSets"),
    (lambda t: Recorder(_mlp(), _set(), Schedule((0,), 1), t, [SampleSets(), SampleSets()]),
     "given more than once"),
    (lambda t: Recorder(_mlp(), _set(), Schedule((0,), 1), t, [SampleSets(sites=("9",))]),
     "count_sites: no ReLU site named \\['9'\\]"),
    (lambda t: Recorder(_mlp(), _set(), Schedule((0,), 1), t, [SampleSets(backend="gpu")]),
     "backend must be one of"),
    (lambda t: Recorder(_mlp(), _set(), (0, 1), t), "schedule must be a nnphases.recording.schedule.Schedule"),
    (lambda t: Recorder(_mlp(), "data", Schedule((0,), 1), t), "eval_data must be an \\(x, y\\) pair"),
])
def test_misuse_is_one_clear_error_before_anything_is_written(tmp_path, make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        make(tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- writing and the plan -----------------------------------------------------------------------

def test_background_and_synchronous_writes_give_identical_checkpoints(tmp_path):
    x, y = _set()
    for name, bg in (("bg", True), ("sync", False)):
        rec = Recorder(_mlp(), (x, y), Schedule((0, 1, 2), 1), tmp_path / name, [SampleSets(), EvalStats(), Masks()],
                       options=RecorderOptions(background_writes=bg))
        for s in (0, 1, 2):
            rec.maybe_measure(s)
        rec.close()
    a, b = RunDir(tmp_path / "bg"), RunDir(tmp_path / "sync")
    assert a.completed_steps() == b.completed_steps() == [0, 1, 2]
    for s in a.completed_steps():
        for f in ("counts.npz", "nodes.parquet", "layers.parquet", "stats.parquet"):
            assert (a.checkpoint_path(s) / f).read_bytes() == (b.checkpoint_path(s) / f).read_bytes(), (s, f)
    for k, v in a.read_masks(2).items():
        np.testing.assert_array_equal(v, b.read_masks(2)[k])


def test_the_plan_refuses_what_cannot_fit(tmp_path, monkeypatch):
    from nnphases.recording import plan

    x, y = _set()
    rec = Recorder(_mlp(), (x, y), Schedule(tuple(range(100)), 1), tmp_path / "ok", [SampleSets(), Masks()])
    p = rec.plan
    assert p.checkpoints == 100 and p.eval_samples == 1001
    # int32 counters: 4 classes x (32 + 16) nodes x 4 bytes; masks: 48 rows of 16 words.
    assert p.device_bytes == 4 * 48 * 4 and sum(r.disk_bytes for r in p.rows if r.measure == "masks") == 48 * 128
    assert "per checkpoint x 100 checkpoints" in str(p)
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(ValueError, match="100 checkpoints of .* but 1000 B is free.*keep no masks") as caught:
        Recorder(_mlp(), (x, y), Schedule(tuple(range(100)), 1), tmp_path / "disk", [SampleSets(), Masks()])
    assert f"free on the disk of {tmp_path / 'disk'};" in str(caught.value)  # the folder is named
    monkeypatch.setattr(plan, "free_memory", lambda device: 100)
    with pytest.raises(ValueError, match="while measuring but 100 B is free; count per channel"):
        Recorder(_mlp(), (x, y), Schedule((0,), 1), tmp_path / "mem")


def test_a_setup_stored_before_an_option_existed_is_the_same_setup(tmp_path):
    x, y = _set()
    out = tmp_path / "run"
    rec = Recorder(_mlp(), (x, y), Schedule((0, 1), 1), out)
    rec.measure(0)
    rec.flush()
    path = out / "measures.json"
    setup = json.loads(path.read_text())
    del setup["measures"]["sample_sets"]["node_tables"]  # as a run begun before the option was added
    path.write_text(json.dumps(setup))
    del rec  # its folder lock is held per process: a new Recorder here may take the folder over
    Recorder(_mlp(), (x, y), Schedule((0, 1), 1), out)
    with pytest.raises(ValueError, match="another setup"):
        Recorder(_mlp(), (x, y), Schedule((0, 1), 1), out, [SampleSets(node_tables="never"), EvalStats()])


# -- loss and accuracy --------------------------------------------------------------------------

@pytest.mark.parametrize("buffer", [7, 64, 1 << 16])
@pytest.mark.parametrize("batch, mean_loss", [(64, False), (37, False), (5000, False), (37, True)])
def test_loss_sums_do_not_depend_on_how_losses_are_buffered(tmp_path, monkeypatch, buffer, batch, mean_loss):
    """The stats table's loss is the fixed-point sum of the per-sample losses (or of batch means x size), the
    same bits whether they are summed a batch at a time or held in a buffer of any size (smaller than a batch
    too), and the accuracy is the share of correct samples."""
    monkeypatch.setattr(eval_stats, "_BUFFER", buffer)
    x, y = _set()
    model = _conv()
    per_sample = eval_stats.cross_entropy_per_sample
    loss_fn = (lambda z, t: per_sample(z, t).mean()) if mean_loss else None
    rec = Recorder(model, (x, y), Schedule((0,), 1), tmp_path / "run", [SampleSets(), EvalStats(loss_fn=loss_fn)],
                   options=RecorderOptions(batch_size=batch, background_writes=False))
    rec.measure(0)
    rec.close()
    with torch.no_grad():
        logits = torch.cat([model(x[s:s + batch]) for s in range(0, len(y), batch)])
    if mean_loss:
        values = torch.stack([per_sample(logits[s:s + batch], y[s:s + batch]).mean().double() * len(y[s:s + batch])
                              for s in range(0, len(y), batch)])
    else:
        values = per_sample(logits, y).double()
    units = torch.floor(values)
    fixed = int(units.sum()) * 2**32 + int(torch.floor((values - units) * 2**32).to(torch.int64).sum())
    row = read_table(tmp_path / "run", "stats").query("split == 'val'").iloc[0]
    assert row["loss"] == fixed / 2**32 / len(y)
    assert row["accuracy"] == int((logits.argmax(1) == y).sum()) / len(y)
