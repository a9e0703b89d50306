"""scripts/device_check's dry run, as CI runs it (no GPU): every stage runs its CPU-side part, the GPU parts are
reported as skipped with the reason "no GPU", and what comes back fits the device's limits (at most 8 files, a
summary in Markdown and every figure in JSON with the machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GPU_STAGES = ("build", "tests", "kernels", "recorder", "nccl")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("device-check")
    # No GPU visible even on a GPU machine; the wrapper's python3 is this interpreter.
    env = {**os.environ, "OUT": str(out), "CUDA_VISIBLE_DEVICES": "",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run([str(ROOT / "scripts" / "device_check"), "--dry-run", "--budget-s", "240"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    return done, out


def test_dry_run_succeeds_and_says_what_it_skipped(dry_run):
    done, _ = dry_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for stage in GPU_STAGES:
        assert f"skipped: {stage}: no GPU" in done.stdout, done.stdout[-3000:]


def test_dry_run_writes_the_summary_within_the_device_limits(dry_run):
    _, out = dry_run
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8, files
    assert {"summary.md", "figures.json", "build.log", "tests.log", "bench.log"} <= set(files)
    assert all((out / f).is_file() and (out / f).stat().st_size < 15 << 20 for f in files)
    assert "| tests | skipped |" in (out / "summary.md").read_text()


def test_dry_run_json_states_every_gpu_stage_skipped_for_no_gpu(dry_run):
    _, out = dry_run
    doc = json.loads((out / "figures.json").read_text())
    assert doc["dry_run"] is True and doc["machine"]["gpu"] is None and "torch" in doc["machine"]
    stages = {s["name"]: s for s in doc["stages"]}
    assert list(stages) == list(GPU_STAGES)
    for name in GPU_STAGES:
        assert stages[name]["status"] == "skipped" and stages[name]["reason"] == "no GPU", stages[name]
        assert stages[name]["cpu_part"], f"{name}: no CPU-side part reported"
    assert stages["tests"]["details"]["collected"] > 0  # the GPU tests exist and collect
    assert all(c["ok"] for c in doc["checks"]), doc["checks"]
    assert {c["stage"] for c in doc["checks"]} >= {"kernels", "recorder", "nccl"}
    ratios = [f for f in doc["figures"] if f["stage"] == "recorder" and f["unit"] == "x"]
    assert len(ratios) == 4 and all(f["value"] > 0 for f in ratios)  # 2 models x (sets + stats, with masks)
