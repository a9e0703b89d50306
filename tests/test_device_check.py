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


def _script():  # scripts/ is not a package: the module by its path, registered before it runs (dataclasses)
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_gpu_report_rows_become_named_figures_with_the_issue_targets(capsys):
    """The GPU-only path of the kernels stage, on rows as benchmarks/gpu_report.py makes them: profiler rows are
    named after their call, the targets sit on the extension's back-to-back rows and VGG-sized metric calls."""
    dc = _script()
    gr = dc.load_gpu_report()
    case, bw = "60000x4096 float32 C=10", 3e12
    rows = [gr.Row(case, w, 4e-4, 10, 10**9, bw) for w in
            ("class_counts cuda", "class_counts cuda async x10", "  class_counts_kernel only",
             "  whole call, all kernels", "  pack_masks_kernel only", "pack_masks cuda async x10",
             "class_counts cupy async x10")]
    dc.report_rows("counts", rows)
    metric = "10x524288 int32 counts |S_c|=5000"
    dc.report_rows("metrics", [gr.Row(metric, "node_metrics cuda", 1e-3, 10, 2 * 10**9, bw, "cnt"),  # 0.67 of copy
                               gr.Row(metric, "  kernels only", 5e-4, 10, 10**9, bw, "cnt"),
                               gr.Row(metric, "node_metrics cupy", None, 10, 10**9, bw, "cnt", "no CuPy")])
    found = dc.parse_results(capsys.readouterr().out)
    names = {f["name"]: f for f in found["figure"]}
    assert f"kernels: {case}: class_counts cuda: whole call, all kernels" in names
    assert f"kernels: {metric}: node_metrics cuda: kernels only" in names
    assert names[f"kernels: {case}: class_counts_kernel only"]["timing"] == "kernels alone"
    targeted = sorted(f["name"].split(": ", 2)[2] for f in found["figure"] if f["target"])
    assert targeted == ["class_counts cuda async x10", "node_metrics cuda", "pack_masks cuda async x10"]
    assert found["skip"] == [{"what": f"kernels: {metric}: node_metrics cupy", "reason": "no CuPy"}]
    verdicts = dc.target_rows(found["figure"])
    assert [t["met"] for t in verdicts] == [1e9 / 4e-4 / bw >= 0.92] * 2 + [True]


def test_popcount_rows_become_figures_against_their_own_yardsticks(capsys):
    """mask_overlap against the read bandwidth, coactivation against the popcount peak, sample_agreement in
    milliseconds only (no yardstick); none of them carries a target."""
    dc = _script()
    gr = dc.load_gpu_report()
    case = "4096x100000 masks"
    rows = [gr.Row(case, "mask_overlap cuda", 1e-4, 10, 10**8, 2e12, "bit", yardstick="read"),
            gr.Row(case, "  nnp_mask_overlap_rows only", 5e-5, 10, 10**8, 2e12, "bit", yardstick="read"),
            gr.Row(case, "coactivation cuda", 1e-2, 10, 10**10, 2e12, "pair", yardstick="popcount peak", work="pw"),
            gr.Row(case, "sample_agreement cuda", 2e-4, 10, 10**6, 0.0, "pair", work="bit")]
    assert "0.50 of read" in rows[0].text() and "of" not in rows[3].text().split("Gbit/s")[1]
    dc.report_rows("popcount", rows)
    names = {f["name"]: f for f in dc.parse_results(capsys.readouterr().out)["figure"]}
    assert names[f"kernels: {case}: mask_overlap cuda"]["unit"] == "of read"
    assert names[f"kernels: {case}: mask_overlap cuda: nnp_mask_overlap_rows only"]["value"] == 1.0
    assert names[f"kernels: {case}: coactivation cuda"]["unit"] == "of popcount peak"
    assert names[f"kernels: {case}: coactivation cuda"]["value"] == 0.5
    assert names[f"kernels: {case}: sample_agreement cuda"]["unit"] == "ms"
    assert not any(f.get("target") for f in names.values())


def test_pytest_counts_from_the_summary_line_or_from_the_lines_of_a_killed_run():
    dc = _script()
    assert dc.pytest_counts("x\n==== 3 failed, 1940 passed, 3 skipped, 8 deselected in 75.20s (0:01:15) ====\n") == {
        "failed": 3, "passed": 1940, "skipped": 3, "deselected": 8}
    killed = ("tests/test_kernels.py::test_a[cuda-f32] PASSED [  1%]\n"
              "tests/test_kernels.py::test_a[cupy-f32] FAILED [  2%]\n"
              "tests/test_kernels.py::test_b[cupy] SKIPPED (no CuPy) [  3%]\n")
    assert dc.pytest_counts(killed) == {"passed": 1, "failed": 1, "skipped": 1}
    assert dc.plan_shards({"a": 668, "b": 486, "c": 328, "d": 242, "e": 120, "f": 86, "g": 8}, 4) == [
        ["a"], ["b"], ["c", "f"], ["d", "e", "g"]]
