"""Integrity of stored runs and one writer per run folder.

Every kind of stored file is damaged (truncated, garbage of the same size, deleted, a valid file of the wrong
table or step, impossible counts) with the manifest kept, rewritten over the damage, or absent (checkpoints written
before manifests existed); every reader must name the checkpoint and the file in a one-line DamagedCheckpoint. Real
`nnphases run` runs whose newest checkpoints are damaged are resumed and must end with exactly the results of an
undamaged run. A second process writing the same folder is refused while the first lives and admitted once it is
SIGKILLed.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from test_store import STATS, make_counts, make_masks

from nnphases.experiments import data

from nnphases.store.manifest import write_manifest
from nnphases.recording.recorder import Recorder
from nnphases.recording.schedule import Schedule
from nnphases.store import (DamagedCheckpoint, DamagedCheckpointWarning, MissingCheckpointFile, RunDir, RunLocked,
                            read_table)

from checkpoints import write_checkpoint

REPO = Path(__file__).resolve().parents[1]
PROBE_ROW = dict(layer="net.0", mode="fast", train_accuracy=0.5, test_accuracy=0.5, reconstruction_mse=0.1,
                 reconstruction_nmse=0.2, ridge=1.0, features=4, reduction="none", n_train=5, n_test=5,
                 decoder="linear", bn="running")
CHUNK = "masks.zarr/net.0/c/0/0"


def write_run(path: Path, steps: tuple[int, ...] = (0, 1, 2)) -> RunDir:
    """A run of three checkpoints with every kind of file: counts, the tables, probes, masks and resume states."""
    rng = np.random.default_rng(0)
    counts, sizes = make_counts(rng, [5, 6], {"net.0": 8, "net.2": 3})
    run = RunDir(path)
    run.write_config({"seed": 0})
    for s in steps:
        write_checkpoint(run, s, s / 10, seed=0, counts=counts, class_sizes=sizes, stats=STATS,
                             masks=make_masks(rng, counts, 130), state={"step": s}, probes=[PROBE_ROW])
    return run


# -- damage ---------------------------------------------------------------------------------------


def truncate(ckpt: Path, name: str) -> None:
    p = ckpt / name
    p.write_bytes(p.read_bytes()[:p.stat().st_size // 2])


def garbage(ckpt: Path, name: str) -> None:
    """Random bytes of the same size: only a checksum (or the format's own checks) can tell."""
    p = ckpt / name
    p.write_bytes(np.random.default_rng(p.stat().st_size).integers(0, 256, p.stat().st_size, np.uint8).tobytes())


def delete(ckpt: Path, name: str) -> None:
    (ckpt / name).unlink()


def other_table(ckpt: Path, name: str) -> None:
    """A valid Parquet file of another table in its place."""
    shutil.copyfile(ckpt / ("nodes.parquet" if name == "stats.parquet" else "stats.parquet"), ckpt / name)


def other_step(ckpt: Path, name: str) -> None:
    """The same table of another checkpoint (step 0) in its place."""
    shutil.copyfile(ckpt.parent / "step-000000000000" / name, ckpt / name)


def impossible(ckpt: Path, name: str) -> None:
    """A count above its class size, stored as the writer stores counts."""
    with np.load(ckpt / name) as z:
        arrays = {k: z[k] for k in z.files}
    first = next(k for k in arrays if k.startswith("layer:"))
    c = arrays[first].astype(np.int64)
    c[0, 0] = arrays["class_sizes"][0] + 1
    arrays[first] = c.astype(np.uint16)
    with open(ckpt / name, "wb") as f:
        np.savez(f, **arrays)


def edit_manifest(ckpt: Path, name: str) -> None:
    """Valid JSON, one size changed: the manifest's own checksum tells."""
    body = json.loads((ckpt / name).read_text())
    body["files"]["counts.npz"]["size"] += 1
    (ckpt / name).write_text(json.dumps(body))


def kept(ckpt: Path) -> None:
    """The manifest written with the checkpoint stays: damage after the write."""


def resealed(ckpt: Path) -> None:
    """The manifest rewritten over the damage (a writer's bug): only the structural checks can tell."""
    write_manifest(ckpt, 2)


def legacy(ckpt: Path) -> None:
    """No manifests: a run written before manifests existed (a missing manifest in a run whose older checkpoints
    have one is damage of its own)."""
    for p in ckpt.parent.glob("step-*/manifest.json"):
        p.unlink()


READERS: dict[str, Callable[[RunDir], object]] = {
    "read_counts": lambda run: run.read_counts(2),
    "read_masks": lambda run: run.read_masks(2),
    "read_masks-range": lambda run: run.read_masks(2, "net.0", nodes=slice(0, 2), samples=slice(0, 64)),
    "verify": lambda run: run.verify(2),
    **{f"read_table-{t}": (lambda t: lambda run: read_table(run.path, t))(t)
       for t in ("nodes", "layers", "stats", "probes")},
}

SIZE = r"has \d+ bytes, manifest.json lists \d+"
CRC = r"has crc32 [0-9a-f]{8}, manifest.json lists [0-9a-f]{8}"

# (file, damage, manifest, reader, error, file named, message fragment)
DAMAGE_CASES = [
    ("counts.npz", truncate, kept, "read_counts", DamagedCheckpoint, "counts.npz", SIZE),
    ("counts.npz", garbage, kept, "read_counts", DamagedCheckpoint, "counts.npz", CRC),
    ("counts.npz", delete, kept, "read_counts", MissingCheckpointFile, "counts.npz", "is missing"),
    ("counts.npz", garbage, kept, "verify", DamagedCheckpoint, "counts.npz", CRC),
    ("counts.npz", impossible, resealed, "read_counts", DamagedCheckpoint, "counts.npz",
     r"layer 'net.0': count \[0, 0\] = 6 is outside 0..5 \(its class size\)"),
    ("counts.npz", truncate, legacy, "read_counts", DamagedCheckpoint, "counts.npz", "cannot be read"),
    ("counts.npz", garbage, legacy, "read_counts", DamagedCheckpoint, "counts.npz", "cannot be read"),
    ("counts.npz", impossible, legacy, "read_counts", DamagedCheckpoint, "counts.npz", "is outside 0..5"),
    ("counts.npz", delete, legacy, "read_counts", MissingCheckpointFile, "counts.npz", "is missing"),
    ("nodes.parquet", truncate, kept, "read_table-nodes", DamagedCheckpoint, "nodes.parquet", SIZE),
    ("layers.parquet", garbage, kept, "read_table-layers", DamagedCheckpoint, "layers.parquet", CRC),
    ("stats.parquet", delete, kept, "read_table-stats", MissingCheckpointFile, "stats.parquet", "is missing"),
    ("probes.parquet", garbage, kept, "read_table-probes", DamagedCheckpoint, "probes.parquet", CRC),
    ("probes.parquet", delete, kept, "read_table-probes", MissingCheckpointFile, "probes.parquet",
     "is missing"),  # an optional table, but the manifest lists it
    ("layers.parquet", truncate, kept, "verify", DamagedCheckpoint, "layers.parquet", SIZE),
    ("nodes.parquet", other_table, resealed, "read_table-nodes", DamagedCheckpoint, "nodes.parquet",
     r"lacks the nodes columns \['layer', 'node'"),
    ("layers.parquet", other_step, resealed, "read_table-layers", DamagedCheckpoint, "layers.parquet",
     r"holds rows of step \[0\], not of its checkpoint's step 2"),
    ("nodes.parquet", garbage, legacy, "read_table-nodes", DamagedCheckpoint, "nodes.parquet",
     "is not a readable Parquet file"),
    ("layers.parquet", truncate, legacy, "read_table-layers", DamagedCheckpoint, "layers.parquet",
     "is not a readable Parquet file"),
    ("stats.parquet", other_table, legacy, "read_table-stats", DamagedCheckpoint, "stats.parquet",
     r"lacks the stats columns \['split', 'loss', 'accuracy'\]"),
    ("probes.parquet", other_step, legacy, "read_table-probes", DamagedCheckpoint, "probes.parquet",
     r"holds rows of step \[0\], not of its checkpoint's step 2"),
    ("nodes.parquet", delete, legacy, "verify", MissingCheckpointFile, "nodes.parquet", "is missing"),
    (CHUNK, garbage, kept, "read_masks", DamagedCheckpoint, CHUNK, CRC),
    (CHUNK, truncate, kept, "read_masks-range", DamagedCheckpoint, CHUNK, SIZE),
    (CHUNK, garbage, kept, "read_masks-range", DamagedCheckpoint, "masks.zarr/net.0",
     "cannot be read .ValueError: Stored and computed checksum do not match"),  # a range is not summed; the
    # shard's own checksum (the masks are written as the Masks measure streams them) still tells
    (CHUNK, delete, kept, "read_masks", MissingCheckpointFile, CHUNK, "is missing"),  # zarr would read zeros
    (CHUNK, garbage, kept, "verify", DamagedCheckpoint, CHUNK, CRC),
    ("masks.zarr/zarr.json", garbage, kept, "read_masks-range", DamagedCheckpoint, "masks.zarr/zarr.json", CRC),
    (CHUNK, garbage, legacy, "read_masks", DamagedCheckpoint, "masks.zarr/net.0", "cannot be read"),
    ("masks.zarr/zarr.json", truncate, legacy, "read_masks", DamagedCheckpoint, "masks.zarr/zarr.json",
     "cannot be read"),
    ("manifest.json", truncate, kept, "read_counts", DamagedCheckpoint, "manifest.json", "is not JSON"),
    ("manifest.json", garbage, kept, "read_table-layers", DamagedCheckpoint, "manifest.json", "is not JSON"),
    ("manifest.json", garbage, kept, "read_masks", DamagedCheckpoint, "manifest.json", "is not JSON"),
    ("manifest.json", edit_manifest, kept, "read_counts", DamagedCheckpoint, "manifest.json",
     "does not match its own checksum"),
    ("manifest.json", other_step, kept, "verify", DamagedCheckpoint, "manifest.json",
     "belongs to step 0, not to its folder's step 2"),
]


@pytest.mark.parametrize("name, damage, seal, reader, error, named, fragment", [
    pytest.param(*case, id=f"{case[0].split('/')[-1] if '/c/' not in case[0] else 'chunk'}-{case[1].__name__}-"
                           f"{case[2].__name__}-{case[3]}")
    for case in DAMAGE_CASES
])
def test_readers_name_the_damaged_file(tmp_path: Path, name: str, damage, seal, reader: str, error: type[Exception],
                                       named: str, fragment: str) -> None:
    run = write_run(tmp_path / "run")
    ckpt = run.checkpoint_path(2)
    damage(ckpt, name)
    seal(ckpt)
    with pytest.raises(error) as info:
        READERS[reader](run)
    e = info.value
    msg = str(e)
    assert "\n" not in msg and msg.startswith(f"damaged checkpoint: {ckpt / named} "), msg
    assert (e.checkpoint, e.file) == (ckpt, named)
    assert re.search(fragment, msg), msg
    # The other checkpoints stay readable, and the damage does not spread to other readers' files.
    run.read_counts(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedCheckpointWarning)  # when the damaged file is layers.parquet
        assert len(read_table(run.path, "layers", damaged="skip")) >= 4


def test_read_table_can_skip_damaged_checkpoints_with_a_warning(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    garbage(run.checkpoint_path(1), "layers.parquet")
    with pytest.raises(DamagedCheckpoint, match="step-000000000001/layers.parquet has crc32"):
        read_table(run.path, "layers")
    with pytest.warns(DamagedCheckpointWarning, match="step-000000000001/layers.parquet .*; step 1 left out of"):
        t = read_table(run.path, "layers", damaged="skip")
    assert sorted(set(t["step"])) == [0, 2]
    assert sorted(set(read_table(run.path, "nodes")["step"])) == [0, 1, 2]  # other tables are intact
    with pytest.raises(ValueError, match="damaged must be 'raise' or 'skip', got 'ignore'"):
        read_table(run.path, "layers", damaged="ignore")  # type: ignore[arg-type]


@pytest.mark.parametrize("damage, seal, fragment", [
    pytest.param(truncate, kept, SIZE, id="truncated"),
    pytest.param(garbage, kept, CRC, id="garbage"),
    pytest.param(truncate, legacy, "cannot be loaded .RuntimeError", id="truncated-legacy"),
    pytest.param(garbage, legacy, "cannot be loaded", id="garbage-legacy"),
])
def test_a_damaged_state_falls_back_to_the_older_one(tmp_path: Path, damage, seal, fragment: str) -> None:
    run = write_run(tmp_path / "run")
    assert [s for s in run.completed_steps() if (run.checkpoint_path(s) / "state.pt").exists()] == [1, 2]
    damage(run.checkpoint_path(2), "state.pt")
    seal(run.checkpoint_path(2))
    with pytest.warns(DamagedCheckpointWarning, match=f"step-000000000002/state.pt {fragment}.*older resume state"):
        assert run.latest_state() == (1, {"step": 1})
    damage(run.checkpoint_path(1), "state.pt")
    with pytest.warns(DamagedCheckpointWarning):
        assert run.latest_state() is None  # no intact state left: a resumed run starts over


def test_mark_done_refuses_a_damaged_newest_checkpoint(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    garbage(run.checkpoint_path(2), "nodes.parquet")
    with pytest.raises(DamagedCheckpoint, match="nodes.parquet has crc32 .*; the run is not marked done .resume it "
                                                "to measure step 2 again."):
        run.mark_done()
    assert not run.done
    garbage(run.checkpoint_path(1), "nodes.parquet")  # an older damaged checkpoint does not block the marker
    shutil.rmtree(run.checkpoint_path(2))
    write_run(tmp_path / "run", steps=(3,))
    run.mark_done()
    assert run.done


def test_cleanup_sets_the_damaged_newest_checkpoints_aside(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", steps=(0, 1, 2, 3))
    garbage(run.checkpoint_path(0), "counts.npz")  # before an intact checkpoint: stays, readers refuse it
    truncate(run.checkpoint_path(3), CHUNK)
    (run.checkpoint_path(2) / "manifest.json").unlink()  # lost after step 1's was written: damage too
    impossible(run.checkpoint_path(2), "counts.npz")
    (run.checkpoints / ".tmp-step-000000000004-0badf00d").mkdir()
    with pytest.warns(DamagedCheckpointWarning) as caught:
        removed = run.cleanup()
    texts = [str(w.message) for w in caught]
    assert len(texts) == 2 and "step-000000000003/masks.zarr/net.0/c/0/0 has" in texts[0] \
        and "step 3 will be measured again" in texts[0] and "step-000000000002/manifest.json is missing" in texts[1], \
        texts
    assert [p.name for p in removed] == [".tmp-step-000000000004-0badf00d", "step-000000000003",
                                         "step-000000000002"]
    assert run.completed_steps() == [0, 1]
    aside = sorted(p.name for p in run.checkpoints.iterdir() if p.name.startswith(".damaged-"))
    assert [n[:len(".damaged-step-000000000002")] for n in aside] == [".damaged-step-000000000002",
                                                                     ".damaged-step-000000000003"]
    assert run.latest_state() is None  # the two states were in the checkpoints set aside: a resume starts over
    assert run.cleanup() == []  # step 1 is intact; only the newest checkpoints are verified
    assert sorted(set(read_table(run.path, "nodes")["step"])) == [0, 1]  # hidden folders are never read
    with pytest.raises(DamagedCheckpoint, match="step-000000000000/counts.npz has crc32"):
        run.read_counts(0)


def test_legacy_checkpoints_stay_readable(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    want = {t: read_table(run.path, t) for t in ("nodes", "layers", "stats", "probes")}
    masks = run.read_masks(2)
    for p in run.checkpoints.glob("*/manifest.json"):
        p.unlink()
    for t, df in want.items():
        pd.testing.assert_frame_equal(read_table(run.path, t), df)
    assert all(np.array_equal(run.read_masks(2)[k], masks[k]) for k in masks)
    run.verify(2)
    assert run.latest_state() == (2, {"step": 2})
    run.mark_done()


@pytest.mark.parametrize("deleted,damaged", [((0,), None), ((0, 1), None), ((1,), 1), ((2,), 2), ((1, 2), 1)])
def test_a_lost_manifest_after_an_older_one_is_damage(tmp_path: Path, deleted, damaged) -> None:
    """Checkpoints without manifests are an older version's only when no older checkpoint of the run has one."""
    run = write_run(tmp_path / "run")
    for s in deleted:
        (run.checkpoints / f"step-{s:012d}" / "manifest.json").unlink()
    if damaged is None:
        read_table(run.path, "layers")
        return
    with pytest.raises(DamagedCheckpoint, match=rf"step-{damaged:012d}/manifest.json is missing, but the older "
                       r"checkpoint step-\d+ has one"):
        read_table(run.path, "layers")


def test_a_lost_compacted_manifest_deletes_nothing(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    run.mark_done(compact=True)
    want = read_table(run.path, "layers")
    files = sorted(p.name for p in (run.path / "tables").iterdir())
    (run.path / "tables" / "manifest.json").unlink()
    with pytest.raises(DamagedCheckpoint, match=r"tables/manifest.json is missing, but the rows of step-0+ "
                       r"\(.*layers.parquet.*\) are only in the compacted tables beside it; nothing was deleted"):
        run.cleanup()
    assert sorted(p.name for p in (run.path / "tables").iterdir()) == [f for f in files if f != "manifest.json"]
    assert len(list(run.checkpoints.glob("step-*"))) == 3  # nothing set aside


def test_a_compaction_killed_before_its_manifest_is_cleaned_up(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    want = read_table(run.path, "layers")
    (run.path / "tables").mkdir()
    (run.path / "tables" / "layers.parquet").write_bytes(b"half a compaction")
    assert [p.name for p in run.cleanup()] == ["layers.parquet"]
    pd.testing.assert_frame_equal(read_table(run.path, "layers"), want)


def test_damaged_config_names_the_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    for text, fragment in (("{", "not JSON|Expecting"), ("[1, 2]", "holds a list")):
        (run.path / "config.json").write_text(text)
        with pytest.raises(ValueError, match=f"{run.path / 'config.json'} is damaged .*({fragment})"):
            run.config


def test_plot_and_class_sizes_refuse_a_missing_counts_file(tmp_path: Path) -> None:
    """A missing file stays a FileNotFoundError naming it, for callers that catch that."""
    pytest.importorskip("matplotlib")
    from nnphases.analysis.plot import plot
    from nnphases.store.runs import class_sizes

    run = write_run(tmp_path / "out" / "seed-0")
    delete(run.checkpoint_path(2), "counts.npz")
    with pytest.raises(FileNotFoundError, match="step-000000000002/counts.npz is missing"):
        class_sizes(run.path)
    with pytest.raises(FileNotFoundError, match="step-000000000002/counts.npz is missing"):
        plot(tmp_path / "out", tmp_path / "figures", formats=("png",))
    assert not (tmp_path / "figures").exists()


# -- the command line -------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "NNPHASES_TRACEBACK": "",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnphases.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


@pytest.mark.parametrize("command, name, damage", [
    pytest.param("findings", "layers.parquet", garbage, id="findings-layers"),
    pytest.param("findings", "stats.parquet", other_table, id="findings-stats-wrong-schema"),
    pytest.param("plot", "nodes.parquet", truncate, id="plot-nodes"),
    pytest.param("plot", "counts.npz", impossible, id="plot-counts"),
])
def test_findings_and_plot_refuse_damaged_checkpoints(tmp_path: Path, command: str, name: str, damage) -> None:
    run = write_run(tmp_path / "out" / "seed-0")
    ckpt = run.checkpoint_path(2)
    damage(ckpt, name)
    r = _cli(command, str(tmp_path / "out"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"nnphases {command}: error: damaged checkpoint: {ckpt / name} "), r.stderr


# -- resuming real runs -------------------------------------------------------------------------------

ARGS = ["--dataset", "synthetic", "--holdout", "600", "--epochs", "0.5", "--seeds", "0", "--train-eval", "300",
        "--keep-masks", "--no-figures", "--device", "cpu"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref")
    r = _cli("run", *ARGS, "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def _chunk(ckpt: Path) -> str:
    return next(p for p in sorted(ckpt.glob("masks.zarr/*/c/**/*")) if p.is_file()).relative_to(ckpt).as_posix()


# newest first: the damage done to the newest checkpoints; then how many are set aside
RESUME_CASES = [
    pytest.param([[("counts.npz", garbage)]], 1, id="counts-garbage"),
    pytest.param([[("state.pt", truncate)]], 1, id="state-truncated"),
    pytest.param([[(None, garbage)]], 1, id="mask-chunk-garbage"),
    pytest.param([[("manifest.json", garbage)]], 1, id="manifest-garbage"),
    # Both states gone: the run trains again from the start and measures only the two steps set aside.
    pytest.param([[("nodes.parquet", truncate)], [("counts.npz", impossible)]], 2, id="two-newest"),
    # Written before manifests: a state that does not load is passed over for the older one, nothing set aside.
    pytest.param([[("state.pt", truncate)]], 0, id="legacy-state-truncated"),
]


@pytest.mark.parametrize("damages, set_aside", RESUME_CASES)
def test_resume_continues_from_the_newest_intact_checkpoint(reference_run: Path, tmp_path: Path, damages,
                                                             set_aside: int, request) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    seed = RunDir(out / "seed-0")
    (seed.path / "DONE").unlink()  # as if killed after its last checkpoint, which was then damaged
    steps = seed.completed_steps()
    if "legacy" in request.node.callspec.id:
        for p in seed.checkpoints.glob("*/manifest.json"):
            p.unlink()
    for ckpt_damage, step in zip(damages, reversed(steps)):
        ckpt = seed.checkpoint_path(step)
        for name, damage in ckpt_damage:
            damage(ckpt, name or _chunk(ckpt))
    r = _cli("run", "--resume", str(out), "--no-figures")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "DamagedCheckpointWarning" in r.stderr, r.stderr
    assert seed.done and seed.completed_steps() == steps
    assert len(list(seed.checkpoints.glob(".damaged-step-*"))) == set_aside
    ref = RunDir(reference_run / "seed-0")
    for t in ("nodes", "layers", "stats"):
        pd.testing.assert_frame_equal(read_table(seed.path, t), read_table(ref.path, t))
    for s in steps:
        got, want = seed.read_counts(s)[0], ref.read_counts(s)[0]
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
        got, want = seed.read_masks(s), ref.read_masks(s)
        assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)


@pytest.mark.parametrize("content, fragment", [
    pytest.param(b'{"epochs": ', "not JSON", id="truncated"),
    pytest.param(b"\xff\xfe\x00garbage", "codec can't decode", id="garbage"),
    pytest.param(b'["a list"]', "a configuration must be a dict", id="not-a-config"),
])
def test_a_damaged_run_json_is_named(tmp_path: Path, content: bytes, fragment: str) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_bytes(content)
    for args in (["--resume", str(tmp_path / "run")], [*ARGS, "--out", str(tmp_path / "run")]):
        r = _cli("run", *args, "--no-figures")
        last = r.stderr.splitlines()[-1]  # a new run prints its plan first
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert last.startswith(f"nnphases run: error: {tmp_path / 'run' / 'run.json'} is damaged") and fragment in last


# -- one writer per run folder ---------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys
    from torch import nn
    from nnphases.experiments import data
    from nnphases.recording.recorder import Recorder
    from nnphases.recording.schedule import Schedule

    ds = data.synthetic(n=300, num_classes=4, shape=(1, 4, 4), seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    rec = Recorder(model, (ds.x, ds.y), Schedule((0, 1), 1), sys.argv[1])
    rec.measure(0)
    rec.flush()
    print("ready", flush=True)
    sys.stdin.read()  # holds the Recorder, and its lock, until killed
""")


def _recorder(out: Path, **kw) -> Recorder:
    ds = data.synthetic(n=300, num_classes=4, shape=(1, 4, 4), seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    return Recorder(model, (ds.x, ds.y), Schedule((0, 1), 1), out, **kw)


def _other_process_can_lock(folder: Path) -> bool:
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError: sys.exit(1)")
    return subprocess.run([sys.executable, "-c", code, str(folder / ".lock")], timeout=60).returncode == 0


def test_a_second_writer_is_refused_until_the_first_dies(tmp_path: Path) -> None:
    out = tmp_path / "run"
    err = tmp_path / "holder.err"
    with open(err, "w") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=_env(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready and proc.stdout.readline().strip() == "ready", err.read_text()
        live = out / "checkpoints" / ".tmp-step-000000000001-0000live"  # the writer's work in progress
        live.mkdir()
        with pytest.raises(RunLocked) as info:
            _recorder(out)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(f"run folder {str(out)!r} is being written by another process "
                                                  f"(pid {proc.pid} on host {socket.gethostname()}, since "), msg
        with pytest.raises(RunLocked, match=f"pid {proc.pid}"):
            RunDir(out).cleanup()  # never deletes a live writer's work
        assert live.is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    rec = _recorder(out)  # the kernel released the dead writer's lock
    assert not live.exists() and rec.done_steps == {0}
    assert not _other_process_can_lock(out)
    rec.measure(1)
    rec.close()
    assert RunDir(out).done and _other_process_can_lock(out)


def test_a_refused_recorder_releases_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "run"
    RunDir(out).write_config({"a": 2})
    with pytest.raises(ValueError, match="already holds a different configuration"):
        _recorder(out, config={"a": 1})  # refused after it took the lock
    assert _other_process_can_lock(out)


def test_holds_of_one_process_are_shared(tmp_path: Path) -> None:
    """A Recorder left unclosed (after an error, in a notebook) does not lock its own process out."""
    out = tmp_path / "run"
    first = _recorder(out)
    first.measure(0)
    first.flush()
    second = _recorder(out)
    assert second.done_steps == {0}
    second.measure(1)
    second.close()
    assert not _other_process_can_lock(out)  # the first still holds it
    first._closed = True  # abandoned; dropping it lets go of its hold
    del first
    import gc

    gc.collect()
    assert _other_process_can_lock(out)
    run = RunDir(tmp_path / "plain")
    with run.lock() as a, run.lock() as b:
        assert a.held and b.held and not _other_process_can_lock(run.path)
    assert not a.held and _other_process_can_lock(run.path)
    assert (run.path / ".lock").read_text() == ""  # the holder is erased on release


def test_verify_command_names_each_damaged_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    ok = subprocess.run([sys.executable, "-m", "nnphases.cli", "verify", str(run.path)], capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout == f"{run.path}: 3 of 3 checkpoints intact (not finished)\n"
    garbage(run.checkpoint_path(1), "layers.parquet")
    delete(run.checkpoint_path(2), "stats.parquet")
    bad = subprocess.run([sys.executable, "-m", "nnphases.cli", "verify", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    lines = bad.stdout.splitlines()
    assert bad.returncode == 2 and lines[0] == f"{run.path}: 1 of 3 checkpoints intact (not finished)"
    assert bad.stderr == "2 damaged checkpoints\n"
    assert f"step-000000000001/layers.parquet has crc32" in lines[1]
    assert f"step-000000000002/stats.parquet is missing" in lines[2] and len(lines) == 3
