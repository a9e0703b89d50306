"""Tests of nnphases.store: run directories, atomic checkpoints, tables, and survival of crashes and kills."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nnphases import kernels, store
from nnphases.kernels.metrics import LayerMetrics, node_metrics_np
from nnphases.store import SCHEMAS, RunDir, atomic_write_bytes, read_table
from nnphases.store.masks import MaskWriter

from checkpoints import write_checkpoint

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("counts.npz", "nodes.parquet", "layers.parquet", "stats.parquet")


def make_counts(rng: np.random.Generator, class_sizes: list[int],
                layers: dict[str, int]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Random counts with a dead and an always-active node in every layer of more than two nodes."""
    sizes = np.array(class_sizes, dtype=np.int64)
    counts = {}
    for name, n in layers.items():
        c = rng.integers(0, sizes[:, None] + 1, size=(len(sizes), n), dtype=np.int64)
        if n > 2:
            c[:, 0] = 0
            c[:, 1] = sizes
        counts[name] = c
    return counts, sizes


def make_masks(rng: np.random.Generator, counts: dict[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
    """Bit-packed random masks, uint8 [N, ceil(samples/64)*8], padding bits zero."""
    width = -(-samples // 64) * 64
    out = {}
    for name, c in counts.items():
        bits = np.zeros((c.shape[1], width), dtype=bool)
        bits[:, :samples] = rng.random((c.shape[1], samples)) < 0.5
        out[name] = np.packbits(bits, axis=1, bitorder="little")
    return out


STATS = [{"split": "train", "loss": 0.5, "accuracy": 0.9}, {"split": "val", "loss": 0.75, "accuracy": None}]

# (class sizes, layers {name: nodes}, with masks, stats)
ROUND_TRIP_CASES = [
    pytest.param([4, 6], {"fc": 3}, False, (), id="one-layer-no-stats"),
    pytest.param([50, 60, 70], {"net.0": 20, "net.2": 80, "net.4": 5}, True, STATS, id="mlp-masks-stats"),
    pytest.param([10, 0, 12], {"layers/1": 7, "b%c": 1}, True, STATS[:1], id="absent-class-odd-names"),
    pytest.param([3] * 10, {f"l{i}": 4 for i in range(12)}, False, STATS, id="twelve-layers-model-order"),
]


@pytest.mark.parametrize("class_sizes, layers, with_masks, stats", ROUND_TRIP_CASES)
def test_round_trip(tmp_path: Path, class_sizes: list[int], layers: dict[str, int], with_masks: bool,
                    stats: list[dict]) -> None:
    rng = np.random.default_rng(0)
    counts, sizes = make_counts(rng, class_sizes, layers)
    masks = make_masks(rng, counts, 130) if with_masks else None
    run = RunDir(tmp_path / "run")
    run.write_config({"seed": 3, "layers": list(layers)})
    path = write_checkpoint(run, 12, 0.25, seed=3, counts=counts, class_sizes=sizes, stats=stats, masks=masks)
    assert path == tmp_path / "run" / "checkpoints" / "step-000000000012"
    assert run.completed_steps() == [12]
    assert sorted(p.name for p in path.iterdir()) == sorted(REQUIRED + ("manifest.json",)
                                                            + (("masks.zarr",) if with_masks else ()))
    listed = store.read_manifest(path)
    on_disk = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert sorted(listed) == [n for n in on_disk if n != "manifest.json"]  # masks.zarr's files one by one
    run.verify(12)

    got, got_sizes = run.read_counts(12)
    assert list(got) == list(layers)
    for name in layers:
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], counts[name])
    np.testing.assert_array_equal(got_sizes, sizes)
    assert got_sizes.dtype == np.int64

    got_masks = run.read_masks(12)
    assert list(got_masks) == (list(masks) if masks else [])
    assert run.mask_nodes(12) == ({name: m.shape[0] for name, m in masks.items()} if masks else {})
    for name in got_masks:
        assert got_masks[name].dtype == np.uint8
        np.testing.assert_array_equal(got_masks[name], masks[name])

    for table in ("nodes", "layers", "stats"):
        assert pq.read_schema(path / f"{table}.parquet").remove_metadata() == SCHEMAS[table]

    nodes = read_table(run.path, "nodes")
    layer_rows = read_table(run.path, "layers")
    assert list(layer_rows["layer"]) == list(layers)  # model order, not alphabetical
    assert (nodes["seed"] == 3).all() and (nodes["step"] == 12).all() and (nodes["epoch"] == 0.25).all()
    for name, c in counts.items():
        # What the store computes (the kernels; the NumPy oracle checks them in tests/test_metric_kernels.py).
        nm = kernels.node_metrics(c, sizes)
        rows = nodes[nodes["layer"] == name]
        np.testing.assert_array_equal(rows["node"], np.arange(c.shape[1]))
        for col, want in (("f", nm.fraction), ("p", nm.predictability), ("u", nm.informativeness),
                          ("h_z_given_y", nm.h_z_given_y), ("h_y_given_z", nm.h_y_given_z),
                          ("dead", nm.dead), ("always_active", nm.always_active)):
            np.testing.assert_array_equal(rows[col].to_numpy(), want, err_msg=f"{name} {col}")
        lm = kernels.layer_metrics(c, sizes)
        np.testing.assert_allclose([lm.fraction, lm.predictability, lm.informativeness],
                                   [getattr(LayerMetrics.from_nodes(node_metrics_np(c, sizes)), k)
                                    for k in ("fraction", "predictability", "informativeness")], rtol=0, atol=1e-14)
        row = layer_rows[layer_rows["layer"] == name].iloc[0]
        np.testing.assert_array_equal(
            [row["nodes"], row["f"], row["p"], row["u"], row["dead"], row["always_active"]],
            [lm.nodes, lm.fraction, lm.predictability, lm.informativeness, lm.dead, lm.always_active])

    st = read_table(run.path, "stats")
    assert list(st["split"]) == [s["split"] for s in stats]
    np.testing.assert_array_equal(st["loss"], [s["loss"] for s in stats])
    np.testing.assert_array_equal(st["accuracy"], [np.nan if s["accuracy"] is None else s["accuracy"]
                                                   for s in stats])


def test_completed_steps_ignores_temporaries_and_strays(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    counts, sizes = make_counts(rng, [5, 5], {"a": 4})
    run = RunDir(tmp_path)
    assert run.completed_steps() == []
    for step in (100, 3, 20):
        write_checkpoint(run, step, step / 10, seed=0, counts=counts, class_sizes=sizes)
    ck = tmp_path / "checkpoints"
    (ck / ".tmp-step-000000000200-deadbeef").mkdir()
    (ck / "step-abc").mkdir()
    (ck / "step-000000000300").write_text("a file, not a checkpoint")
    (ck / "notes").mkdir()
    assert run.completed_steps() == [3, 20, 100]
    assert len(read_table(tmp_path, "layers")) == 3


def test_cleanup(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    counts, sizes = make_counts(rng, [5, 5], {"a": 4})
    run = RunDir(tmp_path)
    assert run.cleanup() == []  # nothing written yet: not an error
    run.write_config({"x": 1})
    write_checkpoint(run, 1, 0.1, seed=0, counts=counts, class_sizes=sizes, state={"k": 1})
    ck = tmp_path / "checkpoints"
    leftovers = [ck / ".tmp-step-000000000002-0123abcd", tmp_path / ".tmp-config.json-0badf00d"]
    leftovers[0].mkdir()
    (leftovers[0] / "counts.npz").write_bytes(b"partial")
    leftovers[1].write_text("{")
    assert sorted(run.cleanup()) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert run.completed_steps() == [1] and run.latest_state() == (1, {"k": 1}) and run.config == {"x": 1}
    assert run.cleanup() == []


def test_duplicate_step_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    counts, sizes = make_counts(rng, [5, 5], {"a": 4})
    run = RunDir(tmp_path)
    write_checkpoint(run, 7, 0.7, seed=0, counts=counts, class_sizes=sizes)
    before = (tmp_path / "checkpoints" / "step-000000000007" / "counts.npz").read_bytes()
    with pytest.raises(ValueError, match="step 7 is already a complete checkpoint"):
        write_checkpoint(run, 7, 0.7, seed=0, counts={"a": counts["a"] + 0}, class_sizes=sizes)
    assert (tmp_path / "checkpoints" / "step-000000000007" / "counts.npz").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000000000007"]


def _bad(**over):
    rng = np.random.default_rng(4)
    counts, sizes = make_counts(rng, [5, 5], {"a": 4, "b": 3})
    kw = dict(step=1, epoch=0.1, seed=0, counts=counts, class_sizes=sizes)
    kw.update({k: (v(kw) if callable(v) else v) for k, v in over.items()})
    return kw


@pytest.mark.parametrize("kwargs, error, fragment", [
    pytest.param(_bad(step=-1), ValueError, "step must be >= 0, got -1", id="negative-step"),
    pytest.param(_bad(step=1.0), TypeError, "step must be an integer", id="float-step"),
    pytest.param(_bad(seed=True), TypeError, "seed must be an integer", id="bool-seed"),
    pytest.param(_bad(epoch=float("nan")), ValueError, "epoch must be finite", id="nan-epoch"),
    pytest.param(_bad(counts={}), ValueError, "counts must be a non-empty dict", id="no-layers"),
    pytest.param(_bad(counts=lambda kw: {"a": kw["counts"]["a"].astype(float)}), ValueError,
                 r"counts\['a'\] must be a 2-D integer array", id="float-counts"),
    pytest.param(_bad(counts=lambda kw: {"a": kw["counts"]["a"] + 6}), ValueError,
                 r"layer 'a': counts\[0, 0\] = 6 exceeds class_sizes\[0\] = 5", id="count-above-class-size"),
    pytest.param(_bad(class_sizes=np.array([5, 5, 5])), ValueError, "layer 'a': class_sizes has 3 entries",
                 id="class-sizes-length"),
    pytest.param(_bad(stats=[{"split": "test", "loss": 1, "accuracy": 1}]), ValueError,
                 r"stats\[0\]\['split'\] must be one of \('train', 'val'\), got 'test'", id="unknown-split"),
    pytest.param(_bad(stats=[{"split": "val", "loss": 1}]), ValueError, "stats.0. must have exactly the keys",
                 id="missing-stat"),
    pytest.param(_bad(state=[1, 2]), TypeError, "state must be a dict", id="state-list"),
])
def test_write_checkpoint_validation(tmp_path: Path, kwargs: dict, error: type[Exception], fragment: str) -> None:
    run = RunDir(tmp_path)
    step, epoch = kwargs.pop("step"), kwargs.pop("epoch")
    with pytest.raises(error, match=fragment):
        write_checkpoint(run, step, epoch, **kwargs)
    assert run.completed_steps() == []
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_latest_state_moves_to_newest_checkpoint_and_the_one_before_is_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    counts, sizes = make_counts(rng, [5, 5], {"a": 4})
    run = RunDir(tmp_path)
    assert run.latest_state() is None
    write_checkpoint(run, 0, 0.0, seed=0, counts=counts, class_sizes=sizes)
    assert run.latest_state() is None

    def write(step: int, state: dict | None) -> None:
        write_checkpoint(run, step, step / 10, seed=0, counts=counts, class_sizes=sizes, state=state)

    def holders() -> list[int]:
        return [s for s in run.completed_steps() if (run.checkpoint_path(s) / "state.pt").exists()]

    write(1, {"step": 1, "w": torch.ones(3)})
    assert holders() == [1]
    write(2, None)  # a checkpoint without state keeps the older state
    assert holders() == [1]
    step, state = run.latest_state()
    assert step == 1 and torch.equal(state["w"], torch.ones(3))
    write(4, {"step": 4, "w": torch.full((3,), 4.0), "rng": torch.get_rng_state(), "obj": {"lr": [1e-3]}})
    assert holders() == [1, 4]  # the state before the newest stays: a damaged newest checkpoint can be resumed
    step, state = run.latest_state(map_location="cpu")
    assert step == 4 and state["step"] == 4 and state["obj"] == {"lr": [1e-3]}
    assert torch.equal(state["rng"], torch.get_rng_state())
    write(5, {"step": 5})
    assert holders() == [4, 5]
    assert run.completed_steps() == [0, 1, 2, 4, 5]


def test_read_table_across_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    layers = {"net.10": 3, "net.2": 5}  # alphabetical order differs from model order
    for name, seed in (("run-b", 1), ("run-a", 0)):
        run = RunDir(tmp_path / "sweep" / name)
        run.write_config({"seed": seed})
        for step in (0, 1, 10):
            counts, sizes = make_counts(rng, [8, 9, 7], layers)
            write_checkpoint(run, step, step / 4, seed=seed, counts=counts, class_sizes=sizes,
                                 stats=STATS, masks=make_masks(rng, counts, 24))
        (run.checkpoints / ".tmp-step-000000000100-00000000").mkdir()  # must be ignored
    (tmp_path / "sweep" / "README").write_text("not a run")
    runs = [tmp_path / "sweep" / "run-a", tmp_path / "sweep" / "run-b"]

    for table, per_checkpoint in (("nodes", 8), ("layers", 2), ("stats", 2)):
        df = read_table(tmp_path / "sweep", table)
        assert isinstance(df, pd.DataFrame)
        assert list(df.columns) == SCHEMAS[table].names
        assert len(df) == 2 * 3 * per_checkpoint
        keys = list(zip(df["seed"], df["step"]))
        assert keys == sorted(keys)
        assert df["seed"].dtype == np.int64 and df["step"].dtype == np.int64 and df["epoch"].dtype == np.float64
        pd.testing.assert_frame_equal(df, read_table(runs, table))
        pd.testing.assert_frame_equal(df, read_table([str(r) for r in reversed(runs)], table))
        # Readable by pyarrow and by pandas' own Parquet round trip.
        t = pa.Table.from_pandas(df, preserve_index=False)
        text = "split" if table == "stats" else "layer"
        assert t.num_rows == len(df) and t.schema.field(text).type in (pa.string(), pa.large_string())
        df.to_parquet(tmp_path / f"{table}.parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"{table}.parquet"), df, check_dtype=False)
        assert pq.read_table(tmp_path / f"{table}.parquet").num_rows == len(df)

    nodes = read_table(runs, "nodes")
    first = nodes[(nodes["seed"] == 0) & (nodes["step"] == 0)]
    assert list(first["layer"]) == ["net.10"] * 3 + ["net.2"] * 5  # model order kept within a checkpoint
    assert nodes["dead"].dtype == bool and read_table(runs, "layers")["dead"].dtype == np.int64


@pytest.mark.parametrize("table, runs_fn, error, fragment", [
    pytest.param("edges", lambda p: p, ValueError, "table must be one of nodes, layers, stats, probes; got 'edges'",
                 id="unknown-table"),
    pytest.param("nodes", lambda p: p / "missing", ValueError, "does not exist", id="missing-dir"),
    pytest.param("nodes", lambda p: [p / "empty"], ValueError, "neither a run directory", id="empty-dir"),
])
def test_read_table_errors(tmp_path: Path, table: str, runs_fn, error: type[Exception], fragment: str) -> None:
    (tmp_path / "empty").mkdir()
    RunDir(tmp_path / "r").write_config({})
    with pytest.raises(error, match=fragment):
        read_table(runs_fn(tmp_path), table)


def test_read_table_of_a_run_without_checkpoints(tmp_path: Path) -> None:
    RunDir(tmp_path).write_config({})
    df = read_table(tmp_path, "stats")
    assert len(df) == 0 and list(df.columns) == SCHEMAS["stats"].names


def test_config_done_and_atomic_write(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "a" / "b")
    with pytest.raises(FileNotFoundError):
        run.config
    cfg = {"model": "9x320", "lr": 1e-3, "betas": (0.9, 0.999), "seeds": [0, 1, 2]}
    run.write_config(cfg)
    assert run.config == json.loads(json.dumps(cfg))
    run.write_config(dict(reversed(cfg.items())))  # the same config again: accepted, unchanged
    with pytest.raises(ValueError, match="already holds a different configuration"):
        run.write_config({**cfg, "lr": 1e-2})
    run.write_config({**cfg, "lr": 1e-2}, overwrite=True)
    assert run.config["lr"] == 1e-2
    with pytest.raises(TypeError):
        run.write_config({"bad": object()})
    assert not run.done
    run.mark_done()
    assert run.done and json.loads((run.path / "DONE").read_text()) == {"last_step": None, "checkpoints": 0}

    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        atomic_write_bytes(target, "three")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "x.bin"]


# -- crashes ------------------------------------------------------------------------------

def _raise(*args, **kwargs):
    raise OSError("simulated crash")


# Each case makes one stage of write_checkpoint fail; the run must keep exactly its previous checkpoints.
CRASH_POINTS = [
    pytest.param(lambda mp: mp.setattr(os, "rename", _raise), id="rename"),
    pytest.param(lambda mp: mp.setattr(os, "fsync", _raise), id="fsync"),
    pytest.param(lambda mp: mp.setattr(torch, "save", _raise), id="torch-save"),
    pytest.param(lambda mp: mp.setattr(MaskWriter, "append", _raise), id="masks"),
    pytest.param(lambda mp: mp.setattr(pq, "write_table", _raise), id="parquet"),
    pytest.param(lambda mp: mp.setattr(np, "savez", _raise), id="counts"),
]


@pytest.mark.parametrize("crash", CRASH_POINTS)
def test_crash_mid_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash) -> None:
    rng = np.random.default_rng(7)
    counts, sizes = make_counts(rng, [6, 6], {"a": 5})
    masks = make_masks(rng, counts, 12)
    run = RunDir(tmp_path)
    for step in (0, 1):
        write_checkpoint(run, step, step / 2, seed=0, counts=counts, class_sizes=sizes, masks=masks,
                             state={"step": step})
    with monkeypatch.context() as mp:
        crash(mp)
        with pytest.raises(OSError, match="simulated crash"):
            write_checkpoint(run, 2, 1.0, seed=0, counts=counts, class_sizes=sizes, masks=masks, state={"step": 2})
    assert run.completed_steps() == [0, 1]
    assert run.latest_state() == (1, {"step": 1})
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-000000000000", "step-000000000001"]
    # The run goes on from where it was.
    write_checkpoint(run, 2, 1.0, seed=0, counts=counts, class_sizes=sizes, masks=masks, state={"step": 2})
    assert run.latest_state() == (2, {"step": 2}) and len(read_table(tmp_path, "layers")) == 3


def test_kill_between_rename_and_state_cleanup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    counts, sizes = make_counts(rng, [6, 6], {"a": 5})
    run = RunDir(tmp_path)
    write_checkpoint(run, 0, 0.0, seed=0, counts=counts, class_sizes=sizes, state={"step": 0})
    with monkeypatch.context() as mp:
        mp.setattr(RunDir, "_drop_older_states", _raise)
        with pytest.raises(OSError):
            write_checkpoint(run, 1, 0.5, seed=0, counts=counts, class_sizes=sizes, state={"step": 1})
    # The new checkpoint is complete; the old state merely lingers until the next write.
    assert run.completed_steps() == [0, 1] and run.latest_state() == (1, {"step": 1})
    write_checkpoint(run, 2, 1.0, seed=0, counts=counts, class_sizes=sizes, state={"step": 2})
    assert [s for s in run.completed_steps() if (run.checkpoint_path(s) / "state.pt").exists()] == [1, 2]


# -- real kills -------------------------------------------------------------------------

# A zygote imports the heavy modules once, then forks one writer per round; the test SIGKILLs
# the writer at a random moment. Forking keeps each round at a fraction of a second instead of
# paying torch's import time ten times. Zarr is imported but never used before the fork.
WRITER = textwrap.dedent("""
    import os, sys, traceback
    import numpy as np, torch, zarr  # noqa: F401
    from checkpoints import write_checkpoint
    from nnphases.store import RunDir

    def payload(step):
        rng = np.random.default_rng(step)
        sizes = np.array([40, 30, 50], dtype=np.int64)
        counts = {name: rng.integers(0, sizes[:, None] + 1, size=(3, n), dtype=np.int64)
                  for name, n in (("net.0", 64), ("net.2", 32))}
        masks = {name: rng.integers(0, 256, size=(c.shape[1], 16), dtype=np.uint8) for name, c in counts.items()}
        return counts, sizes, masks

    def write(run, step):
        counts, sizes, masks = payload(step)
        write_checkpoint(run, step, step / 10, seed=7, counts=counts, class_sizes=sizes,
                             stats=[{"split": "train", "loss": 1.0 / (step + 1), "accuracy": 0.5}],
                             masks=masks, state={"step": step, "w": torch.full((8,), float(step))})

    if __name__ == "__main__":
        warm = RunDir(sys.argv[2])
        counts, sizes, _ = payload(0)
        write_checkpoint(warm, 0, 0.0, seed=0, counts=counts, class_sizes=sizes, state={"w": torch.zeros(1)})
        run = RunDir(sys.argv[1])
        print("ready", flush=True)
        for _ in sys.stdin:
            pid = os.fork()
            if pid == 0:
                try:
                    run.cleanup()
                    steps = run.completed_steps()
                    step = steps[-1] + 1 if steps else 0
                    print("started", os.getpid(), flush=True)
                    for step in range(step, step + 10000):
                        write(run, step)
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(1)
            _, status = os.waitpid(pid, 0)
            print("exit", status, flush=True)
""")


def _readline(proc: subprocess.Popen, err: Path, timeout: float = 30.0) -> str:
    # The writer sends one line per event and waits for the test, so nothing sits in the read buffer unseen.
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"writer process did not answer; its stderr:\n{err.read_text()}"
    line = proc.stdout.readline()
    assert line, f"writer process ended; its stderr:\n{err.read_text()}"
    return line.strip()


def _check_consistent(run: RunDir, payload, since: int) -> tuple[int, int]:
    """Every complete checkpoint has all its files, those from ``since`` on the values written.

    Returns the newest step and the number of temporary directories.
    """
    steps = run.completed_steps()
    assert steps == list(range(len(steps))), "no checkpoint lost and none skipped"
    for step in steps:
        d = run.checkpoint_path(step)
        assert all((d / f).is_file() for f in REQUIRED) and (d / "masks.zarr").is_dir()
        if step < since:
            continue  # read back in an earlier round; complete checkpoints are never rewritten
        counts, sizes, masks = payload(step)
        got, got_sizes = run.read_counts(step)
        np.testing.assert_array_equal(got_sizes, sizes)
        assert list(got) == list(counts) and all(np.array_equal(got[k], counts[k]) for k in counts)
        got_masks = run.read_masks(step)
        assert list(got_masks) == list(masks) and all(np.array_equal(got_masks[k], masks[k]) for k in masks)
    for table, rows in (("nodes", 96), ("layers", 2), ("stats", 1)):
        df = read_table(run.path, table)
        assert len(df) == rows * len(steps) and sorted(set(df["step"])) == steps
    holders = [s for s in steps if (run.checkpoint_path(s) / "state.pt").exists()]
    if steps:
        assert holders, "no checkpoint holds resume state"
        # Two states are kept; a kill between a rename and the drop of the oldest leaves three.
        assert holders[-1] == steps[-1] and len(holders) <= 3, holders
        step, state = run.latest_state()
        assert step == steps[-1] and state["step"] == step and torch.equal(state["w"], torch.full((8,), float(step)))
    tmp = [p for p in run.checkpoints.iterdir() if p.name.startswith(".tmp-")] if run.checkpoints.exists() else []
    return (steps[-1] if steps else -1), len(tmp)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    namespace: dict = {}
    exec(compile(WRITER, "writer", "exec"), namespace)  # the same payload() the writer uses, for checking
    payload = namespace["payload"]
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    run = RunDir(tmp_path / "run")
    run.write_config({"seed": 7})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    err = tmp_path / "writer.err"
    with open(err, "w") as err_file:
        proc = subprocess.Popen([sys.executable, str(script), str(run.path), str(tmp_path / "warm")], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        assert _readline(proc, err) == "ready"
        rng = random.Random(20240611)
        newest, interrupted = -1, 0
        for round_ in range(12):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            started, pid = _readline(proc, err).split()
            assert started == "started"
            if round_ % 3:
                # Two rounds in three first wait for a new checkpoint, so the run advances however
                # loaded the machine is; the third kills early (cleanup, the first write).
                deadline = time.monotonic() + 30
                while len(run.completed_steps()) <= newest + 1 and time.monotonic() < deadline:
                    time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.25))
            os.kill(int(pid), signal.SIGKILL)
            # The zygote reports how its child ended: proof that the kill, not an error, stopped it.
            status = int(_readline(proc, err).split()[1])
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, err.read_text()

            last, tmp = _check_consistent(run, payload, since=newest)
            assert last >= newest
            newest = last
            removed = run.cleanup()
            assert len(removed) == tmp and all(p.name.startswith(".tmp-step-") for p in removed)
            assert not [p for p in run.checkpoints.iterdir() if p.name.startswith(".tmp-")]
            interrupted += bool(tmp)
        assert newest >= 7, f"the writer wrote only {newest + 1} checkpoints in 12 rounds"
        # Timing-dependent but all but certain: most of the writer's time is spent inside a checkpoint.
        assert interrupted >= 1, "no kill landed mid-checkpoint"
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()



def test_probes_written_before_the_decoder_column_read_with_nulls(tmp_path):
    """A probes.parquet from before the ``decoder`` column was added reads back with that column null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    counts, sizes = make_counts(rng, [3, 2], {"a": 4})
    row = dict(layer="a", mode="fast", train_accuracy=0.5, test_accuracy=0.5, reconstruction_mse=0.1,
               reconstruction_nmse=0.2, ridge=1.0, features=4, reduction="none", n_train=5, n_test=5, decoder="linear",
               bn="running")
    run = RunDir(tmp_path / "run")
    path = write_checkpoint(run, 1, 0.1, seed=0, counts=counts, class_sizes=sizes, probes=[row])
    (path / "manifest.json").unlink()  # such files were written before manifests too
    old_schema = pa.schema([f for f in SCHEMAS["probes"] if f.name not in ("decoder", "bn")])
    pq.write_table(pq.read_table(path / "probes.parquet").select(old_schema.names), path / "probes.parquet")
    t = read_table(tmp_path / "run", "probes")
    assert list(t.columns) == SCHEMAS["probes"].names
    assert t.decoder.isna().all() and t.bn.isna().all() and list(t.layer) == ["a"]
    assert t.reconstruction_nmse.iloc[0] == 0.2


@pytest.mark.parametrize("damage", [b'{\n  "lr": 0.1,\n  "se', b"\xff\xfe", b"[1, 2]"], ids=["truncated", "not-text", "a-list"])
def test_a_damaged_config_is_named_when_a_run_writes_it_again(tmp_path: Path, damage: bytes) -> None:
    run = RunDir(tmp_path)
    run.write_config({"lr": 0.1, "seed": 0})
    (tmp_path / "config.json").write_bytes(damage)
    with pytest.raises(ValueError, match=f"{tmp_path / 'config.json'} is damaged"):
        run.write_config({"lr": 0.1, "seed": 0})


# The writer lays batches of any size end to end, whatever their padding bits: the stored rows are pack_masks of
# the whole set. Columns of 8 and 16 bytes make batches straddle shard columns; dirty padding must not leak.
@pytest.mark.parametrize("cols", [8, 16, 4096])
@pytest.mark.parametrize("sizes, dirty", [([77, 64, 1, 130, 5], False), ([64, 64, 128], False),
                                          ([77, 3, 200, 63], True), ([0, 65, 0, 7], True)])
def test_mask_writer_lays_batches_end_to_end(tmp_path, cols, sizes, dirty):
    import zarr

    rng = np.random.default_rng(sum(sizes) * cols + dirty)
    nodes = 5
    acts = torch.from_numpy(rng.standard_normal((sum(sizes), nodes)).astype(np.float32))
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="w", zarr_format=3)
    w = MaskWriter(group, "layer", nodes, cols, {"layer": "layer"})
    start = 0
    for n in sizes:
        packed = kernels.pack_masks(acts[start:start + n]).numpy().copy()
        if dirty and n % 64:
            packed.view(np.uint64)[:, -1] |= ~np.uint64((1 << (n % 64)) - 1)  # every padding bit set
        w.append(packed, n)
        start += n
    w.close()
    np.testing.assert_array_equal(group["layer"][:, :], kernels.pack_masks(acts).numpy())
