"""scripts/protocols.py: the smoke pipeline end to end (calibrate, plan, run, findings, figures, archives, summary,
a second invocation that skips what is finished), its bad-argument table, --pack-data, and the planning arithmetic
that the GPU run relies on."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "protocols.py"
DATA = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist, as in the README's test command

spec = importlib.util.spec_from_file_location("protocols", SCRIPT)
protocols = importlib.util.module_from_spec(spec)
sys.modules["protocols"] = protocols
spec.loader.exec_module(protocols)

GROUPS = {"source000": ["source000-9x320-ce", "source000-9x320-mse", "source000-2x320-mse"],
          "source002-fcbn": ["source002-fcbn"], "source002-conv": ["source002-vgg11", "source002-resnet10"]}
LARGE = ("nodes.parquet", "counts.npz", "state.pt", "masks.zarr")


def _script(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.time()
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    return out, time.time() - t0


def _checkpoint_times(out: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (out / "runs").rglob("*.parquet")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("protocols") / "smoke"
    # The budget is a ceiling (smoke runs have fixed tiny lengths); a generous one keeps a loaded machine from
    # cutting them. On the idle 2-core machine the smoke run takes about a minute.
    result, seconds = _script("--smoke", "--out", str(out), "--budget-minutes", "8", "--data-root", str(DATA))
    print(f"smoke run: {seconds:.0f} s")
    return {"out": out, "pack": out / "packed", "result": result, "seconds": seconds,
            "times": _checkpoint_times(out)}


def test_smoke_runs_every_job(smoke: dict) -> None:
    r = smoke["result"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((smoke["pack"] / "summary.json").read_text())
    assert summary["mode"] == "smoke" and summary["invocations"][-1]["status"] == "complete"
    assert [row["job"] for row in summary["runs"]] == [j for g in GROUPS.values() for j in g]
    for row in summary["runs"]:
        assert row["cut"] == [] and row["failures"] == [], row
        assert row["calibration"]["step"] > 0 and row["epochs_planned"] == row["epochs_target"] > 0
        (seed,) = row["seeds"]
        assert seed["status"] == "finished" and seed["done"] and seed["wall_s"] > 0, seed
        assert 0 < seed["epoch"] <= 2 * row["epochs_planned"] and seed["checkpoints"] >= 2
        assert re.search(r"^(holds|does not hold)", row["findings"], re.M), row["findings"]
        assert row["figures"] == (8 if row["group"] != "source000" else 6)
        if row["group"] != "source000":
            assert "probe phases" in row["findings"]
    md = (smoke["pack"] / "summary.md").read_text()
    for job in summary["runs"]:
        assert f"## {job['job']}" in md
    assert "status: complete" in md and "Findings:" in md


def test_smoke_archives_hold_the_small_files_only(smoke: dict) -> None:
    pack = smoke["pack"]
    assert sorted(p.name for p in pack.iterdir()) == sorted(
        [f"{g}.tar.gz" for g in GROUPS] + ["summary.md", "summary.json", "protocols.log"])
    for group, jobs in GROUPS.items():
        with tarfile.open(pack / f"{group}.tar.gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, m in members.items():
                assert not any(x in name for x in LARGE), name
                assert m.size < 1 << 20, (name, m.size)
            for job in jobs:
                figures = ["curves", "heatmap_f", "layers_fpu"] + (["probes"] if group != "source000" else [])
                for fig in figures:
                    for ext in ("png", "svg"):
                        assert f"runs/{job}/figures/{fig}.{ext}" in members
                assert f"runs/{job}/findings.txt" in members
                assert f"runs/{job}/s0/run.json" in members and f"runs/{job}/s0/seed-0/DONE" in members
                assert f"runs/{job}/s0/seed-0/config.json" in members
                assert f"logs/{job}/train-s0.log" in members
                tables = ["layers", "stats"] + (["probes"] if group != "source000" else [])
                for table in tables:
                    found = [n for n in members if n.startswith(f"runs/{job}/s0/seed-0/checkpoints/step-")
                             and n.endswith(f"/{table}.parquet")]
                    assert len(found) >= 2, (job, table)
            # The tables in the archive are readable Parquet with rows.
            import pyarrow.parquet as pq

            name = next(n for n in members if n.endswith("layers.parquet"))
            table = pq.read_table(io.BytesIO(tar.extractfile(name).read()))
            assert table.num_rows > 0 and "f" in table.column_names


def test_second_invocation_skips_finished_runs(smoke: dict) -> None:
    assert smoke["result"].returncode == 0
    out = smoke["out"]
    archive_time = (smoke["pack"] / "source000.tar.gz").stat().st_mtime
    result, seconds = _script("--smoke", "--out", str(out), timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert seconds < 30, seconds  # no training, no calibration, no figures: it only repacks
    assert result.stdout.count("finished earlier, skipped") == 6, result.stdout
    assert "calibration" not in result.stdout
    assert _checkpoint_times(out) == smoke["times"]  # nothing was rewritten
    state = json.loads((out / "protocols-state.json").read_text())
    assert all(t["attempts"] == 1 for t in state["tasks"].values()), state["tasks"]
    summary = json.loads((smoke["pack"] / "summary.json").read_text())
    assert len(summary["invocations"]) == 2 and summary["invocations"][-1]["status"] == "complete"
    assert (smoke["pack"] / "source000.tar.gz").stat().st_mtime >= archive_time


@pytest.mark.parametrize("argv, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--smoke", "--bogus", "3"], "unrecognized arguments: --bogus 3"),
    (["--jobs", "0"], "argument --jobs: must be a positive integer, got '0'"),
    (["--jobs", "two"], "argument --jobs: must be a positive integer, got 'two'"),
    (["--budget-minutes", "-1"], "argument --budget-minutes: must be a positive number, got '-1'"),
    (["--budget-minutes", "nan"], "argument --budget-minutes: must be a positive number, got 'nan'"),
    (["--budget-minutes", "inf"], "argument --budget-minutes: must be a positive number, got 'inf'"),
    (["--pack-every", "-5"], "argument --pack-every: must be a number of seconds >= 0, got '-5'"),
    (["--device", "gpu"], "argument --device: invalid choice: 'gpu'"),
    (["--data-root", "/no/such/folder"], "--data-root: '/no/such/folder' holds no FashionMNIST IDX files"),
    (["--mnist-root", "/no/such/mnist"], "--mnist-root: '/no/such/mnist' holds no MNIST IDX files"),
    (["--only", "source003"], "--only: unknown job 'source003'"),
    (["--only", ","], "--only: unknown job ''"),
    (["--smoke", "--device", "cuda"], "--device: 'cuda' with --smoke"),
    (["--jobs"], "argument --jobs: expected one argument"),
    (["--budget"], "unrecognized arguments: --budget"),  # no abbreviations
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    if "--data-root" not in argv:
        argv = argv + ["--data-root", str(DATA)]
    assert protocols.main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("protocols.py: error: ") and message in err, err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_bad_argument_exit_status_from_the_shell(tmp_path: Path) -> None:
    result, _ = _script("--budget-minutes", "soon", "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2
    assert result.stderr == "protocols.py: error: argument --budget-minutes: must be a positive number, got 'soon'\n"
    assert result.stdout == ""


def test_smoke_state_is_not_mixed_with_a_full_run(smoke: dict, capsys: pytest.CaptureFixture) -> None:
    assert protocols.main(["--out", str(smoke["out"]), "--data-root", str(DATA), "--pack-dir",
                           str(smoke["out"] / "other")]) == 2
    assert "holds a smoke protocols run; use another --out" in capsys.readouterr().err


def test_pack_data_copies_the_idx_files(tmp_path: Path) -> None:
    assert protocols.main(["--pack-data", str(tmp_path / "data"), "--data-root", str(DATA)]) == 0
    copied = sorted(p.name for p in (tmp_path / "data" / "fashion-mnist").iterdir())
    assert copied == sorted(p.name for p in DATA.iterdir() if "idx" in p.name)
    for name in copied:
        assert (tmp_path / "data" / "fashion-mnist" / name).read_bytes() == (DATA / name).read_bytes()
    opts = protocols.parse_args(["--data-root", str(tmp_path / "data" / "fashion-mnist")])
    assert opts.data_root == tmp_path / "data" / "fashion-mnist"


def _job(schedule: str = "log", target: float = 200, minimum: float = 200) -> "protocols.Job":
    return protocols.Job("j", "g", "p", [], [0, 1, 2], target, minimum, 1, schedule=schedule)


@pytest.mark.parametrize("schedule, last, spe, per_decade, first", [
    ("log", 160_000, 800, 10, 1e-3), ("log", 1600, 800, 1, 1e-3), ("log", 5, 992, 10, 1e-3),
    ("pow2", 96_000, 375, 10, 1e-3), ("pow2", 1, 375, 10, 1e-3), ("log", 12, 3744, 10, 1e-3),
])
def test_measurement_count_matches_nnphases_schedule(schedule: str, last: int, spe: int, per_decade: int,
                                                     first: float) -> None:
    from nnphases.recording.schedule import Schedule

    job = _job(schedule)
    job.per_decade, job.first_epoch = per_decade, first
    expected = Schedule.powers_of_two(last / spe, spe) if schedule == "pow2" else \
        Schedule.log(last / spe, spe, per_decade=per_decade, first_epoch=first)
    assert protocols.schedule_steps(job, last, spe) == len(expected.steps)


def test_fit_run_recovers_measurement_and_step_times(tmp_path: Path) -> None:
    # A fabricated calibration run: checkpoints written 2 s (a measurement) + 0.01 s per step apart.
    run = tmp_path / "seed-0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"steps_per_epoch": 800}))
    t = 1000.0 + 5.0  # start-up 5 s
    prev = 0
    for step in (0, 1, 10, 100, 1000, 1600):
        t += 2.0 + 0.01 * (step - prev) if step else 0.0
        d = run / "checkpoints" / f"step-{step:012d}"
        d.mkdir()
        (d / "layers.parquet").write_bytes(b"")
        os.utime(d / "layers.parquet", (t, t))
        prev = step
    fit = protocols.fit_run(run, 1000.0, t + 1.0, 2)
    assert fit.startup == pytest.approx(5.0) and fit.tail == pytest.approx(1.0)
    assert fit.measure == pytest.approx(2.0) and fit.step == pytest.approx(0.01)
    assert fit.steps_per_epoch == 800


def test_plan_keeps_the_protocols_lengths_or_says_what_it_cut() -> None:
    fit = protocols.Fit(startup=10, measure=0.5, step=0.001, tail=1, steps_per_epoch=800)
    s000 = _job("log", 200, 200)
    conv = protocols.Job("conv", "g", "p", [], [0], 256, 32, 0.5, schedule="pow2")
    conv_fit = protocols.Fit(startup=10, measure=5, step=0.008, tail=1, steps_per_epoch=375)
    fits = {"j": fit, "conv": conv_fit}
    # Enough time for everything: the protocols' lengths.
    epochs, _ = protocols.plan([s000, conv], fits, 3600, 16, 45)
    assert epochs == {"j": 200, "conv": 256}
    # 10 minutes: the MLP's 200 epochs (about 3.5 min) still fit; the conv net gets as many as fit, at least 32.
    epochs, _ = protocols.plan([s000, conv], fits, 600, 16, 45)
    assert epochs["j"] == 200 and 32 <= epochs["conv"] < 256
    assert conv_fit.predict(conv, epochs["conv"]) + 45 <= 600
    # 2 minutes: both are cut below their minimum (the script then says so in the summary).
    epochs, _ = protocols.plan([s000, conv], fits, 120, 16, 45)
    assert 0 < epochs["j"] < 200 and 0 < epochs["conv"] < 32
    # Fewer processes than runs: the runs queue, and the plan shortens them to fit.
    epochs, _ = protocols.plan([s000, conv], fits, 600, 2, 45)
    durations = [fit.predict(s000, epochs["j"])] * 3 + [conv_fit.predict(conv, epochs["conv"])]
    assert protocols.makespan(durations, 2) <= 600 + 45
