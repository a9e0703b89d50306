"""Per-node tables only where they pay, compacted tables, compressed counts and ``nnphases bench``.

Node rows read the same (values, dtypes, order) whether nodes.parquet holds them or readers derive them from the
counts, for runs of several layers and widths, per-channel conv runs included. Compaction round-trips every table,
and a compaction killed at any of its durable operations (each rename, fsync and unlink) or failing leaves every
row readable and is finished by running it again. Counts compressed with blosc read back exactly, and checkpoints
written before (plain npz) stay readable. ``nnphases bench --quick --json`` reports every kernel checked against
the reference backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from nnphases.experiments import data

from nnphases import store
from nnphases.store import compaction
from nnphases.store import counts as counts_codec
from nnphases.store.manifest import write_manifest
from nnphases.recording.measures import EvalStats, SampleSets
from nnphases.recording.recorder import Recorder
from nnphases.store.runs import read_table
from nnphases.recording.schedule import Schedule
from nnphases.store import DamagedCheckpoint, MissingCheckpointFile, RunDir

from checkpoints import write_checkpoint

REPO = Path(__file__).resolve().parents[1]
TABLES = ("nodes", "layers", "stats", "probes")
STATS = [{"split": "train", "loss": 0.5, "accuracy": 0.9}, {"split": "val", "loss": 0.75, "accuracy": None}]
PROBE_ROW = dict(layer="l0", mode="fast", train_accuracy=0.5, test_accuracy=0.5, reconstruction_mse=0.1,
                 reconstruction_nmse=0.2, ridge=1.0, features=4, reduction="none", n_train=5, n_test=5,
                 decoder="linear", bn="running")


def counts_for(widths: dict[str, int], sizes: list[int], seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Binomial counts with node fractions spread over 0..1, the first node of each layer dead, the second always
    active."""
    rng = np.random.default_rng(zlib.crc32(repr((widths, sizes, seed)).encode()))
    s = np.array(sizes, dtype=np.int64)
    out = {}
    for name, n in widths.items():
        c = rng.binomial(s[:, None], rng.random(n)[None, :]).astype(np.int64)
        c[:, 0] = 0
        if n > 1:
            c[:, 1] = s
        out[name] = c
    return out, s


def write_run(path: Path, widths: dict[str, int], sizes: list[int], steps=(0, 3, 10), probes: bool = False,
              **options) -> RunDir:
    run = RunDir(path)
    for step in steps:
        counts, s = counts_for(widths, sizes, step)
        write_checkpoint(run, step, step / 10, seed=7, counts=counts, class_sizes=s, stats=STATS,
                             probes=[PROBE_ROW] if probes and step else None, **options)
    run.mark_done()
    return run


def tables(run: RunDir | Path) -> dict[str, pd.DataFrame]:
    return {t: read_table(run.path if isinstance(run, RunDir) else run, t) for t in TABLES}


def assert_same_tables(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    for t in want:
        pd.testing.assert_frame_equal(got[t], want[t], check_exact=True, obj=t)


# -- node rows: stored or derived, the same -------------------------------------------------------------------

# (layers {name: nodes}, class sizes)
LAYOUTS = [
    pytest.param({"fc1": 7, "fc2": 33, "fc3": 5}, [40, 60, 50], id="mlp-three-widths"),
    pytest.param({"features.1": 2048, "features.4": 300, "head": 1}, [100, 0, 120, 90], id="wide-absent-class"),
    pytest.param({"a/b": 70000, "c%d": 65}, [300, 200], id="over-64k-compressed-odd-names"),
    pytest.param({f"l{i}": 3 + i for i in range(9)}, [3] * 10, id="nine-layers-model-order"),
]
# (node_tables, node_table_max_width, layers whose rows nodes.parquet holds: None every one)
MODES = [
    pytest.param("never", 4096, set(), id="never"),
    pytest.param("auto", 40, "narrow", id="auto-40"),
    pytest.param("auto", 4096, "narrow", id="auto-default"),
    pytest.param("always", 1, None, id="always"),
]


@pytest.mark.parametrize("node_tables, width, held", MODES)
@pytest.mark.parametrize("widths, sizes", LAYOUTS)
def test_node_rows_are_the_same_stored_or_derived(tmp_path: Path, widths, sizes, node_tables, width, held) -> None:
    want = tables(write_run(tmp_path / "always", widths, sizes, node_tables="always"))
    run = write_run(tmp_path / "run", widths, sizes, node_tables=node_tables, node_table_max_width=width)
    assert_same_tables(tables(run), want)
    expected = set(widths) if held is None else {n for n, w in widths.items() if w <= width} if held else held
    for step in run.completed_steps():
        ckpt = run.checkpoint_path(step)
        listed = store.read_manifest(ckpt)
        if expected:
            stored = pd.read_parquet(ckpt / "nodes.parquet")
            assert set(stored["layer"]) == expected and "nodes.parquet" in listed
        else:
            assert not (ckpt / "nodes.parquet").exists() and "nodes.parquet" not in listed
        one = want["nodes"][want["nodes"]["step"] == step].reset_index(drop=True)
        pd.testing.assert_frame_equal(run.read_table(step, "nodes"), one, check_exact=True)
        run.verify(step)


def _model(per_channel_net: bool) -> nn.Module:
    torch.manual_seed(0)
    if per_channel_net:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(24, 9), nn.ReLU(), nn.Linear(9, 4))
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5), nn.ReLU(), nn.Linear(5, 4))


def _record(out: Path, conv: bool, **options) -> Path:
    ds = data.synthetic(n=403, num_classes=4, shape=(1, 4, 4), seed=3)
    rec = Recorder(_model(conv), (ds.x, ds.y), Schedule((0, 2, 5), 1), out,
                   measures=[SampleSets(**options), EvalStats()])
    rec.measure(0)
    rec.measure(2)
    rec.close()
    return out


@pytest.mark.parametrize("conv, per_channel", [
    pytest.param(False, False, id="mlp"), pytest.param(True, True, id="conv-per-channel"),
    pytest.param(True, False, id="conv-per-position")])
@pytest.mark.parametrize("options", [
    pytest.param({"node_tables": "never"}, id="never"),
    pytest.param({"node_tables": "auto", "node_table_max_width": 10}, id="auto-10"),
    pytest.param({"node_tables": "never", "compact_tables": True}, id="never-compacted-at-close"),
])
def test_recorded_runs_read_the_same_with_or_without_node_tables(tmp_path: Path, conv, per_channel,
                                                                 options) -> None:
    want = tables(_record(tmp_path / "always", conv, per_channel=per_channel, node_tables="always"))
    out = _record(tmp_path / "run", conv, per_channel=per_channel, **options)
    assert_same_tables(tables(out), want)
    compacted = (out / "tables" / "manifest.json").is_file()
    assert compacted == options.get("compact_tables", False)
    if compacted:
        assert not list(out.glob("checkpoints/*/*.parquet"))  # every table moved into tables/
    assert RunDir(out).done


def test_node_table_options_are_checked(tmp_path: Path) -> None:
    counts, sizes = counts_for({"a": 3}, [2, 2], 0)
    # The options are SampleSets' (write_checkpoint takes finished tables): checked when the tables are made.
    for kw, error, text in (({"node_tables": "some"}, ValueError, "node_tables must be one of 'auto', 'always', 'never'"),
                            ({"node_table_max_width": 0}, ValueError, "node_table_max_width must be >= 1, got 0"),
                            ({"compact_tables": 1}, TypeError, "compact_tables must be true or false")):
        with pytest.raises(error, match=text):
            write_checkpoint(RunDir(tmp_path), 0, 0, seed=0, counts=counts, class_sizes=sizes, **kw)
    assert not (tmp_path / "checkpoints").exists() or not RunDir(tmp_path).completed_steps()
    with pytest.raises(ValueError, match="node_tables must be one of 'auto', 'always', 'never'; got 'x'"):
        SampleSets(node_tables="x")
    with pytest.raises(ValueError, match="node_table_max_width must be >= 1, got 0"):
        SampleSets(node_table_max_width=0)


def test_a_layer_missing_from_the_counts_is_damage(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"a": 5, "b": 80}, [10, 10], steps=(0,), node_tables="auto",
                    node_table_max_width=10)
    ckpt = run.checkpoint_path(0)
    with np.load(ckpt / "counts.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "layer:b"}
    with open(ckpt / "counts.npz", "wb") as f:
        np.savez(f, **arrays)
    write_manifest(ckpt, 0)
    with pytest.raises(DamagedCheckpoint, match="counts.npz has no layer 'b' of 80 nodes .layers.parquet lists it."):
        read_table(run.path, "nodes")


# -- compaction -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node_tables", ["always", "auto", "never"])
def test_compaction_round_trip(tmp_path: Path, node_tables: str) -> None:
    run = write_run(tmp_path / "run", {"fc": 12, "conv": 5000, "head": 3}, [30, 40, 50], steps=(0, 1, 5, 9),
                    probes=True, node_tables=node_tables)
    want = tables(run)
    files = run.compact()
    held = {"always": ("nodes", "layers", "stats", "probes"), "auto": ("nodes", "layers", "stats", "probes"),
            "never": ("layers", "stats", "probes")}[node_tables]
    assert sorted(p.name.split("-")[0] for p in files) == sorted(held)
    assert_same_tables(tables(run), want)
    for step in run.completed_steps():
        run.verify(step)
        assert not list(run.checkpoint_path(step).glob("*.parquet"))
        for t in TABLES:
            one = want[t][want[t]["step"] == step].reset_index(drop=True)
            pd.testing.assert_frame_equal(run.read_table(step, t), one, check_exact=True)
    body = store.read_compacted(run.path)
    for p in files:  # the run-level manifest lists every compacted file with its size and crc32
        assert body["files"][p.name] == {"size": p.stat().st_size, "crc32": f"{zlib.crc32(p.read_bytes()):08x}"}
    assert body["tables"]["stats"]["row_groups"] == {"0": 0, "1": 1, "5": 2, "9": 3}
    assert body["tables"]["probes"]["row_groups"] == {"0": None, "1": 0, "5": 1, "9": 2}
    assert run.compact() == files  # compacted already: nothing is rewritten
    assert sorted(p.name for p in (run.path / "tables").iterdir()) == sorted([p.name for p in files]
                                                                              + ["manifest.json"])


def test_compaction_needs_a_finished_run_and_the_lock(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    counts, sizes = counts_for({"a": 4}, [3, 3], 0)
    write_checkpoint(run, 0, 0, seed=0, counts=counts, class_sizes=sizes, stats=STATS)
    with pytest.raises(ValueError, match="is not finished .it has no DONE marker.; compact it once it ends"):
        run.compact()
    r = subprocess.run([sys.executable, "-m", "nnphases.cli", "compact", str(run.path)], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nnphases compact: error: run " in r.stderr, r.stderr
    run.mark_done()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from nnphases.store import RunDir; "
                               "lock = RunDir(sys.argv[1]).lock(); print('held', flush=True); time.sleep(60)",
                               str(run.path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(store.RunLocked, match=f"pid {holder.pid}"):
            run.compact()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    r = subprocess.run([sys.executable, "-m", "nnphases.cli", "compact", str(tmp_path)], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0 and "layers-" in r.stdout and "stats-" in r.stdout, r.stderr
    assert store.read_compacted(run.path) is not None


def _damage(path: Path) -> None:
    b = bytearray(path.read_bytes())
    b[len(b) // 2] ^= 0xFF
    path.write_bytes(bytes(b))


def test_damaged_compacted_files_are_named(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"fc": 12, "head": 3}, [30, 40], steps=(0, 1), node_tables="always")
    files = {p.name.split("-")[0]: p for p in run.compact()}
    _damage(files["layers"])
    with pytest.raises(DamagedCheckpoint, match=r"tables/layers-\w+\.parquet has crc32 "):
        read_table(run.path, "layers")
    with pytest.warns(store.DamagedCheckpointWarning, match=r"layers-.*; step \d left out of the layers table"):
        assert read_table(run.path, "layers", damaged="skip").empty
    assert len(read_table(run.path, "stats")) == 4  # other tables are intact
    with pytest.raises(DamagedCheckpoint, match=r"tables/layers-\w+\.parquet has crc32 "):
        run.verify(1)
    files["nodes"].unlink()
    with pytest.raises(MissingCheckpointFile, match=r"tables/nodes-\w+\.parquet is missing"):
        run.read_table(0, "nodes")
    (run.path / "tables" / "manifest.json").write_text("{}")
    with pytest.raises(DamagedCheckpoint, match="tables/manifest.json is not a format-1 manifest"):
        read_table(run.path, "stats")


def test_a_checkpoint_measured_again_is_not_read_from_old_compacted_rows(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"fc": 6}, [5, 5], steps=(0, 1), node_tables="always")
    run.compact()
    # Replace step 1 by another measurement of the same step (as a resumed run would after setting it aside).
    (run.path / "DONE").unlink()
    shutil.rmtree(run.checkpoint_path(1))
    counts, sizes = counts_for({"fc": 6}, [5, 5], 99)
    write_checkpoint(run, 1, 0.1, seed=7, counts=counts, class_sizes=sizes, stats=STATS[:1], node_tables="always")
    assert list(read_table(run.path, "stats")["split"]) == ["train", "val", "train"]
    assert len(run.read_table(1, "stats")) == 1


def test_a_failed_read_back_commits_nothing(tmp_path: Path, monkeypatch) -> None:
    run = write_run(tmp_path / "run", {"fc": 6}, [5, 5], steps=(0, 1), node_tables="always")
    want = tables(run)
    monkeypatch.setattr(compaction, "same_rows", lambda a, b: False)
    with pytest.raises(DamagedCheckpoint, match="does not read back as the nodes rows of step 0"):
        run.compact()
    assert store.read_compacted(run.path) is None and not list((run.path / "tables").iterdir())
    assert_same_tables(tables(run), want)


def test_a_failed_manifest_write_commits_nothing(tmp_path: Path, monkeypatch) -> None:
    run = write_run(tmp_path / "run", {"fc": 6}, [5, 5], steps=(0, 1), node_tables="always")
    want = tables(run)

    def full(path, data):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(compaction, "atomic_write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        run.compact()
    assert not list((run.path / "tables").iterdir())
    assert_same_tables(tables(run), want)


_KILLED_AT = textwrap.dedent(r"""
    import os, sys
    from nnphases.store import RunDir

    stop, calls = int(sys.argv[2]), 0

    def dies_at_call(fn):
        def call(*args, **kwargs):
            global calls
            calls += 1
            if calls == stop:
                os._exit(17)  # as SIGKILL: no handler, no cleanup
            return fn(*args, **kwargs)
        return call

    for name in ("rename", "replace", "fsync", "unlink"):
        setattr(os, name, dies_at_call(getattr(os, name)))
    RunDir(sys.argv[1]).compact()
""")


def test_a_compaction_killed_at_any_durable_step_loses_nothing(tmp_path: Path) -> None:
    """Killed at each rename, fsync and unlink in turn (each time from the same uncompacted run); after each kill
    every table reads as before and every checkpoint verifies, and compacting again finishes the work."""
    template = write_run(tmp_path / "template", {"fc": 9, "conv": 300}, [20, 30], steps=(0, 4), probes=True,
                         node_tables="auto", node_table_max_width=10)
    want = tables(template)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = 0
    for stop in range(1, 200):
        path = tmp_path / f"run-{stop}"
        shutil.copytree(template.path, path)
        run = RunDir(path)
        done = subprocess.run([sys.executable, "-c", _KILLED_AT, str(path), str(stop)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 17), done.stderr[-2000:]
        assert_same_tables(tables(run), want)
        for step in run.completed_steps():
            run.verify(step)
        run.compact()
        assert_same_tables(tables(run), want)
        assert not list(path.glob("checkpoints/*/*.parquet")) and not list(path.glob("tables/.tmp-*"))
        assert len(list((path / "tables").iterdir())) == 5  # nodes, layers, stats, probes and the manifest
        shutil.rmtree(path)
        if done.returncode == 0:
            break
        kills += 1
    assert kills >= 15, kills  # every rename, fsync and unlink of a compaction was a kill point


# -- counts: compressed, and older plain ones ------------------------------------------------------------------

# (layers {name: nodes}, class sizes): uint8, uint16 and uint32 counts, compressed from 64 KiB of counts on
COUNT_CASES = [
    pytest.param({"small": 10, "big": 70000}, [200, 100], id="uint8"),
    pytest.param({"big": 9000, "small": 3}, [5000, 4000, 3000, 6000], id="uint16"),
    pytest.param({"wide": 20000}, [70000, 80000], id="uint32"),
    pytest.param({"dead": 40000}, [0, 7], id="zeros-and-absent-class"),
]


@pytest.mark.parametrize("widths, sizes", COUNT_CASES)
def test_compressed_counts_round_trip_exactly(tmp_path: Path, widths, sizes) -> None:
    counts, s = counts_for(widths, sizes, 1)
    if "dead" in widths:
        counts["dead"][:] = 0
    run = RunDir(tmp_path)
    ckpt = write_checkpoint(run, 0, 0, seed=0, counts=counts, class_sizes=s, node_tables="never")
    with np.load(ckpt / "counts.npz") as z:
        keys = list(z.files)
    for name, c in counts.items():
        narrow = counts_codec.narrow(c)
        big = narrow.nbytes >= 1 << 16
        assert ((counts_codec.BLOSC_KEY + name) in keys) == big and ((counts_codec.LAYER_KEY + name) in keys) != big
    got, got_sizes = run.read_counts(0)
    assert list(got) == list(counts)
    for name in counts:
        assert got[name].dtype == np.int64
        np.testing.assert_array_equal(got[name], counts[name])
    np.testing.assert_array_equal(got_sizes, s)


def test_plain_counts_of_older_checkpoints_stay_readable(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", {"a": 40000, "b": 7}, [300, 200], steps=(0,), node_tables="always")
    want = tables(run)
    counts, sizes = counts_for({"a": 40000, "b": 7}, [300, 200], 0)
    ckpt = run.checkpoint_path(0)
    with open(ckpt / "counts.npz", "wb") as f:  # as the store wrote counts before they were compressed
        np.savez(f, **{"layer:a": counts["a"].astype(np.uint16), "layer:b": counts["b"].astype(np.uint16)},
                 class_sizes=sizes)
    (ckpt / "nodes.parquet").unlink()  # and rows to derive from them
    write_manifest(ckpt, 0)
    got, _ = run.read_counts(0)
    assert all(np.array_equal(got[k], counts[k]) for k in counts)
    assert_same_tables(tables(run), want)


@pytest.mark.parametrize("edit, fragment", [
    pytest.param(lambda a: a.update({"blosc:a": a["blosc:a"][:-9]}), "layer 'a' cannot be decompressed",
                 id="truncated-frame"),
    pytest.param(lambda a: a.update({"blosc_layers": np.array(json.dumps({"a": {"dtype": "uint16",
                                                                                 "shape": [2, 9]}}))}),
                 r"layer 'a' decompresses to \d+ bytes, not uint16 \[2, 9\]", id="wrong-shape"),
    pytest.param(lambda a: a.pop("blosc_layers"), "layer 'a': blosc_layers gives no valid dtype and shape",
                 id="no-layout"),
])
def test_damaged_compressed_counts_are_named(tmp_path: Path, edit, fragment: str) -> None:
    run = write_run(tmp_path / "run", {"a": 40000}, [300, 200], steps=(0,))
    ckpt = run.checkpoint_path(0)
    with np.load(ckpt / "counts.npz") as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    with open(ckpt / "counts.npz", "wb") as f:
        np.savez(f, **arrays)
    write_manifest(ckpt, 0)  # only the structural checks can tell
    with pytest.raises(DamagedCheckpoint, match=f"counts.npz {fragment}"):
        run.read_counts(0)


# -- nnphases bench ----------------------------------------------------------------------------------------------


def test_bench_quick_json_checks_every_kernel_against_the_reference() -> None:
    r = subprocess.run([sys.executable, "-m", "nnphases.cli", "bench", "--quick", "--json"], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert set(report) >= {"machine", "quick", "backends", "bandwidth", "rows", "skipped", "ok"}
    assert report["ok"] is True and report["quick"] is True
    assert set(report["machine"]) >= {"cpu", "cores", "gpu", "torch"}
    fields = {"kernel", "backend", "device", "shape", "elements", "bytes", "seconds", "elements_per_s",
              "bytes_per_s", "of_bandwidth", "check"}
    available = {b["name"] for b in report["backends"] if b["available"]}
    assert "reference" in available
    for row in report["rows"]:
        assert set(row) == fields and row["check"] == "ok", row
        assert row["seconds"] > 0 and row["elements_per_s"] == pytest.approx(row["elements"] / row["seconds"])
    ran = {(row["kernel"], row["backend"]) for row in report["rows"]}
    skipped = {(s["kernel"], s["backend"]) for s in report["skipped"]}
    for kernel in ("class_counts", "pack_masks", "packed_class_counts", "node_metrics", "layer_metrics"):
        for b in report["backends"]:
            if b["available"] and b["device"] in ("cpu", "any"):
                assert (kernel, b["name"]) in ran | skipped, (kernel, b["name"])
        assert (kernel, "reference") in ran
    if "cpu" in report["bandwidth"]:
        cpu_rows = [row for row in report["rows"] if row["device"] == "cpu"]
        assert all(row["of_bandwidth"] is not None and row["of_bandwidth"] > 0 for row in cpu_rows)
