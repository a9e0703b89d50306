"""Tests of nnphases.store.runs: which folders are runs, reading tables across runs and seeds, seed means, class sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nnphases import store
from nnphases.analysis.statistics import mean_over_seeds
from nnphases.store.runs import class_sizes, layer_order, read_table, run_dirs
from nnphases.store import SCHEMAS, RunDir

from checkpoints import write_checkpoint


def make_layout(root: Path, entries: list[str]) -> None:
    """Create ``entries`` under ``root``: a name ending in "/" is a folder, any other a small file."""
    for entry in entries:
        p = root / entry
        if entry.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("{}")


SEEDS = ["OUT/config.json", "OUT/seed-0/config.json", "OUT/seed-0/checkpoints/step-000000000000/",
         "OUT/seed-1/config.json", "OUT/seed-1/checkpoints/", "OUT/figures/heatmap_f.png", "OUT/README"]
GRID = ["G/run.json", "G/lr-0.1/seed-0/checkpoints/", "G/lr-0.1/seed-1/checkpoints/",
        "G/lr-0.01/seed-0/checkpoints/", "G/figures/"]

# (layout, the runs argument (paths relative to tmp_path), expected runs relative to tmp_path or (error, fragment))
LAYOUTS = [
    pytest.param(["run/checkpoints/step-000000000001/"], "run", ["run"], id="single-run"),
    pytest.param(["run/config.json"], "run", ["run"], id="run-without-checkpoints-yet"),
    pytest.param(["run/checkpoints/", "run/nested/checkpoints/"], "run", ["run"], id="nothing-below-a-run"),
    pytest.param(SEEDS, "OUT", ["OUT/seed-0", "OUT/seed-1"], id="seed-folder-with-own-config"),
    pytest.param(["OUT/seed-0/config.json", "OUT/seed-1/checkpoints/"], "OUT", ["OUT/seed-0", "OUT/seed-1"],
                 id="seed-just-started"),
    pytest.param(["OUT/.tmp-x/checkpoints/", "OUT/seed-0/checkpoints/"], "OUT", ["OUT/seed-0"],
                 id="hidden-folders-skipped"),
    pytest.param(GRID, "G", ["G/lr-0.01/seed-0", "G/lr-0.1/seed-0", "G/lr-0.1/seed-1"], id="grid-of-cells"),
    pytest.param(GRID, "G/lr-0.1", ["G/lr-0.1/seed-0", "G/lr-0.1/seed-1"], id="one-cell"),
    pytest.param(SEEDS, ["OUT/seed-1", "OUT/seed-0"], ["OUT/seed-1", "OUT/seed-0"], id="list-in-given-order"),
    pytest.param(SEEDS + GRID + ["solo/checkpoints/"], ["G/lr-0.01", "solo", "OUT", "G"],
                 ["G/lr-0.01/seed-0", "solo", "OUT/seed-0", "OUT/seed-1", "G/lr-0.1/seed-0", "G/lr-0.1/seed-1"],
                 id="mixture-each-run-once"),
    pytest.param(SEEDS, ("OUT/seed-0", "OUT/figures/../seed-0"), ["OUT/seed-0"], id="same-run-twice"),
    pytest.param(["deep/a/b/seed-0/checkpoints/"], "deep", (ValueError, "'{tmp}/deep' is neither a run directory"),
                 id="three-levels-down"),
    pytest.param([], "missing", (ValueError, "runs: '{tmp}/missing' does not exist"), id="nonexistent"),
    pytest.param(SEEDS, ["OUT", "OUT/nope"], (ValueError, "'{tmp}/OUT/nope' does not exist"),
                 id="nonexistent-in-list"),
    pytest.param(["file.txt"], "file.txt", (ValueError, "runs: '{tmp}/file.txt' is a file, not a run directory"),
                 id="a-file"),
    pytest.param(["empty/"], "empty", (ValueError, "runs: '{tmp}/empty' is neither a run directory"),
                 id="empty-folder"),
    pytest.param(["OUT/figures/a.png", "OUT/README"], "OUT", (ValueError, "'{tmp}/OUT' is neither a run directory"),
                 id="folder-without-runs"),
    pytest.param([], [], (ValueError, "runs must name at least one path"), id="empty-list"),
    pytest.param([], 5, (TypeError, "runs must be a path or a list of paths, got 5"), id="not-a-path"),
    pytest.param([], [5], (TypeError, r"runs\[0\] must be a path, got 5"), id="not-a-path-in-list"),
]


def _absolute(tmp_path: Path, runs: object) -> object:
    if isinstance(runs, str):
        return tmp_path / runs
    if isinstance(runs, (list, tuple)):
        return [tmp_path / r if isinstance(r, str) else r for r in runs]
    return runs


@pytest.mark.parametrize("layout, runs, expected", LAYOUTS)
def test_run_dirs(tmp_path: Path, layout: list[str], runs: object, expected: object) -> None:
    make_layout(tmp_path, layout)
    runs = _absolute(tmp_path, runs)
    if isinstance(expected, tuple):
        error, fragment = expected
        with pytest.raises(error) as info:
            run_dirs(runs)  # type: ignore[arg-type]
        if "{tmp}" in fragment:
            assert fragment.format(tmp=tmp_path) in str(info.value)
        else:
            info.match(fragment)
        assert "\n" not in str(info.value)
        return
    found = run_dirs(runs)  # type: ignore[arg-type]
    assert [p.relative_to(tmp_path).as_posix() for p in found] == expected
    assert run_dirs(found) == found, "discovered runs give themselves back"


# -- tables across runs -------------------------------------------------------------------------


def write_run(path: Path, seed: int, steps: tuple[int, ...], sizes: tuple[int, ...] = (3, 5),
              layers: dict[str, int] | None = None) -> RunDir:
    """A real run directory written by RunDir, with counts of every node equal to half its class."""
    run = RunDir(path)
    run.write_config({"seed": seed})
    layers = layers or {"net.4": 2, "net.1": 3}   # model order differs from alphabetical order
    c = np.array(sizes, dtype=np.int64)
    for step in steps:
        counts = {name: np.repeat((c // 2)[:, None], n, axis=1) for name, n in layers.items()}
        write_checkpoint(run, step, step / 10, seed=seed, counts=counts, class_sizes=c,
                             stats=[{"split": "val", "loss": 1.0 / (1 + step + seed), "accuracy": 0.5}])
    return run


def test_read_table_over_a_grid(tmp_path: Path) -> None:
    for cell, seeds in (("lr-0.1", (1, 0)), ("lr-0.01", (2,))):
        for s in seeds:
            write_run(tmp_path / "G" / cell / f"seed-{s}", s, (0, 10, 100))
    (tmp_path / "G" / "figures").mkdir()
    layers = read_table(tmp_path / "G", "layers")
    assert list(layers.columns) == SCHEMAS["layers"].names
    assert list(zip(layers["seed"], layers["step"], layers["layer"]))[:4] == [
        (0, 0, "net.4"), (0, 0, "net.1"), (0, 10, "net.4"), (0, 10, "net.1")]
    assert len(layers) == 3 * 3 * 2 and layer_order(layers) == ["net.4", "net.1"]
    # The same rows from the seed folders listed one by one, in any order, and through nnphases.store.
    seeds = sorted((tmp_path / "G").glob("*/seed-*"), reverse=True)
    pd.testing.assert_frame_equal(read_table(seeds, "layers"), layers)
    pd.testing.assert_frame_equal(store.read_table(tmp_path / "G", "layers"), layers)
    assert read_table(tmp_path / "G", "probes").empty


@pytest.mark.parametrize("table, runs, error, fragment", [
    pytest.param("edges", "G", ValueError, "table must be one of nodes, layers, stats, probes; got 'edges'",
                 id="unknown-table"),
    pytest.param(None, "G", ValueError, "table must be one of .*; got None", id="table-none"),
    pytest.param("layers", "nope", ValueError, "does not exist", id="missing-runs"),
])
def test_read_table_errors(tmp_path: Path, table: object, runs: str, error: type[Exception], fragment: str) -> None:
    write_run(tmp_path / "G" / "seed-0", 0, (0,))
    with pytest.raises(error, match=fragment):
        read_table(tmp_path / runs, table)  # type: ignore[arg-type]


def test_mean_over_seeds_and_layer_order() -> None:
    t = pd.DataFrame({"seed": [0, 0, 1, 1, 2], "step": [5, 0, 5, 0, 5], "epoch": [0.5, 0.0, 0.5, 0.0, 0.5],
                      "layer": ["b", "b", "b", "b", "b"], "f": [0.2, 0.1, 0.4, np.nan, 0.6]})
    m = mean_over_seeds(t, ["step", "layer"], ["f"])
    assert list(m.columns) == ["step", "layer", "epoch", "f", "f_se", "f_n"]
    assert list(m["step"]) == [0, 5] and list(m["f_n"]) == [1, 3]
    assert m["f"].tolist() == pytest.approx([0.1, 0.4])
    assert m["f_se"].tolist() == pytest.approx([0.0, 0.2 / np.sqrt(3)])
    assert mean_over_seeds(t.iloc[:0], ["step"], ["f"]).empty
    assert layer_order(pd.DataFrame({"layer": ["x", "a", "x", "b"]})) == ["x", "a", "b"]
    assert layer_order(pd.DataFrame()) == []


# -- class sizes --------------------------------------------------------------------------------


def test_class_sizes_from_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", 0, (0, 3), sizes=(4, 6))
    write_run(tmp_path / "run", 0, (7,), sizes=(4, 6, 2))
    (run.checkpoints / ".tmp-step-000000000009-00000000").mkdir()   # an interrupted write does not count
    sizes = class_sizes(tmp_path / "run")
    assert sizes.dtype == np.int64 and sizes.tolist() == [4, 6, 2]


@pytest.mark.parametrize("layout, run, error, fragment", [
    pytest.param(["run/config.json"], "run", ValueError, "run: '{tmp}/run' has no complete checkpoint",
                 id="no-checkpoint"),
    pytest.param(["run/checkpoints/.tmp-step-000000000001-ab/"], "run", ValueError, "has no complete checkpoint",
                 id="only-interrupted"),
    pytest.param([], "missing", ValueError, "run: '{tmp}/missing' is not a folder", id="nonexistent"),
    pytest.param(["run/checkpoints/step-000000000001/"], "run", FileNotFoundError, "counts.npz",
                 id="no-counts-file"),
])
def test_class_sizes_errors(tmp_path: Path, layout: list[str], run: str, error: type[Exception],
                            fragment: str) -> None:
    make_layout(tmp_path, layout)
    with pytest.raises(error) as info:
        class_sizes(tmp_path / run)
    assert fragment.format(tmp=tmp_path) in str(info.value)


def test_findings_and_plot_refuse_to_pool_two_setups(tmp_path: Path) -> None:
    from nnphases.analysis.findings import findings
    from nnphases.analysis.plot import plot
    from nnphases.store.runs import one_setup

    for cell, width in (("width=20", 20), ("width=40", 40)):
        for s in (0, 1):
            run = write_run(tmp_path / "G" / cell / f"seed-{s}", s, (0, 10, 100))
            run.write_config({"seed": s, "seeds": [s], "model": {"width": width, "depth": 2}}, overwrite=True)
    assert len(one_setup(tmp_path / "G" / "width=20")) == 2  # the seeds of one setup pool
    message = r"runs: the folders hold 2 setups \(e.g. .*width=20/seed-0 and .*width=40/seed-0 differ in model.width\)"
    for call in (findings, plot):
        with pytest.raises(ValueError, match=message):
            call(tmp_path / "G")
    with pytest.raises(ValueError) as info:  # two setups that differ in value: no word of older folders
        one_setup(tmp_path / "G")
    assert "--resume" not in str(info.value)


def test_a_setup_written_before_an_option_existed_is_named_with_the_way_out(tmp_path: Path) -> None:
    from nnphases.store.runs import one_setup

    for s, optim in ((0, {"lr": 0.001}), (1, {"lr": 0.001, "momentum": 0.0})):
        run = write_run(tmp_path / f"seed-{s}", s, (0, 10))
        run.write_config({"seed": s, "optim": optim}, overwrite=True)
    with pytest.raises(ValueError, match=r"differ in optim\.momentum\).*older nnphases.*`nnphases run --resume`"):
        one_setup(tmp_path)


def test_export_writes_one_tidy_file_per_table_before_and_after_compaction(tmp_path: Path) -> None:
    import subprocess
    import sys

    for s in (0, 1):
        write_run(tmp_path / "R" / f"seed-{s}", s, (0, 10, 100)).mark_done()

    def export(out: Path) -> dict[str, pd.DataFrame]:
        done = subprocess.run([sys.executable, "-m", "nnphases.cli", "export", str(tmp_path / "R"), "--out", str(out),
                               "--tables", "layers,stats,nodes"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return {t: pd.read_parquet(out / f"{t}.parquet") for t in ("layers", "stats", "nodes")}

    before = export(tmp_path / "before")
    for t, frame in before.items():
        assert sorted(set(frame["run"])) == ["seed-0", "seed-1"]
        want = read_table(tmp_path / "R", t)
        pd.testing.assert_frame_equal(frame.drop(columns="run"), want, check_dtype=False)
    for s in (0, 1):
        RunDir(tmp_path / "R" / f"seed-{s}").compact()
    after = export(tmp_path / "after")
    for t in before:
        pd.testing.assert_frame_equal(after[t], before[t])
    bad = subprocess.run([sys.executable, "-m", "nnphases.cli", "export", str(tmp_path / "R"), "--out",
                          str(tmp_path / "x"), "--tables", "nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--tables 'nope': the runs hold the tables" in bad.stderr
