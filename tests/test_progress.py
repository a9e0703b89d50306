"""Progress lines of a run without a terminal: one per measurement, with the step, epoch, validation loss and
accuracy, elapsed time and ETA."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from nnphases.experiments.progress import ProgressLines, clock


@pytest.mark.parametrize("seconds,text", [(0, "0:00:00"), (59.6, "0:01:00"), (3725, "1:02:05"), (-3, "0:00:00"),
                                          (100 * 3600, "100:00:00")])
def test_clock(seconds, text):
    assert clock(seconds) == text


def test_line_fields():
    out = io.StringIO()
    p = ProgressLines(seed=2, total=1000, initial=0, epochs=5, stream=out)
    line = p.measured(100, 0.5, {"val": {"loss": 0.41234, "accuracy": 0.8567}, "train": {"loss": 1, "accuracy": 0}})
    assert re.fullmatch(r"seed 2: step 100/1,000 \(epoch 0\.5 of 5\), val loss 0\.412 acc 0\.857, "
                        r"\d+:\d\d:\d\d elapsed, ETA \d+:\d\d:\d\d", line), line
    assert out.getvalue() == line + "\n"
    assert "val loss" not in p.measured(100, 0.5, {})


def test_a_run_without_a_terminal_prints_a_line_per_measurement(tmp_path):
    args = [sys.executable, "-m", "nnphases.cli", "run", "--dataset", "synthetic", "--holdout", "600", "--depth", "2",
            "--width", "8", "--epochs", "0.5", "--seeds", "0", "--per-decade", "2", "--no-figures",
            "--out", str(tmp_path / "r")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("seed 0: step ")]
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "r" / "seed-0" / "checkpoints").iterdir())
    assert [int(re.match(r"seed 0: step ([\d,]+)/", ln).group(1).replace(",", "")) for ln in lines] == steps[1:]
    assert all(" val loss " in ln and " elapsed, ETA " in ln for ln in lines)


@pytest.mark.parametrize("sig,code,how", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, r"terminated \(SIGTERM\)")])
def test_ctrl_c_says_where_the_run_stands_and_how_to_resume(tmp_path, sig, code, how):
    import signal
    import time

    out = tmp_path / "r"
    args = [sys.executable, "-m", "nnphases.cli", "run", "--dataset", "synthetic", "--holdout", "600", "--depth", "2",
            "--width", "8", "--epochs", "5000", "--seeds", "0", "--per-decade", "2", "--no-figures", "--out", str(out)]
    # A shell running this suite in the background ignores SIGINT, and Python keeps an ignored SIGINT ignored: the
    # child gets the default disposition back, as a terminal's process has.
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob("seed-0/checkpoints/step-*")):
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    (line,) = [ln for ln in err.splitlines() if "checkpoints written are intact" in ln]
    assert re.fullmatch(rf"nnphases run: {how}; the checkpoints written are intact \(seed-0 at step \d+\): "
                        rf"nnphases run --resume {re.escape(str(out))} continues from the last one", line), line


def test_a_finished_run_run_again_says_so(tmp_path):
    args = [sys.executable, "-m", "nnphases.cli", "run", "--dataset", "synthetic", "--holdout", "600", "--depth", "2",
            "--width", "8", "--epochs", "0.2", "--seeds", "0", "--per-decade", "2", "--no-figures",
            "--out", str(tmp_path / "r")]
    assert subprocess.run(args, capture_output=True, timeout=300).returncode == 0
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"{tmp_path / 'r'}: every seed is already done; nothing to train" in again.stderr


def test_a_run_with_other_options_into_a_runs_folder_names_them(tmp_path):
    base = [sys.executable, "-m", "nnphases.cli", "run", "--dataset", "synthetic", "--holdout", "600", "--depth", "2",
            "--width", "8", "--seeds", "0", "--per-decade", "2", "--no-figures", "--out", str(tmp_path / "r")]
    assert subprocess.run([*base, "--epochs", "0.2"], capture_output=True, timeout=300).returncode == 0
    again = subprocess.run([*base, "--epochs", "0.4", "--count-sites", "relu1"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 2
    assert (f"holds a run with other options (--epochs 0.2 there, 0.4 here; --count-sites None there, ('relu1',) "
            f"here); continue it as it is with --resume {tmp_path / 'r'}, or choose another --out") in again.stderr


def test_a_measures_option_is_named_by_its_flag(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nnphases.cli", "run", "--dataset", "synthetic", "--holdout", "600",
                        "--count-sites", "nope", "--no-figures", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "nnphases run: error: --count-sites: no ReLU site named ['nope']" in r.stderr


def test_plot_options_out_format_seed(tmp_path):
    base = [sys.executable, "-m", "nnphases.cli"]
    run = [*base, "run", "--dataset", "synthetic", "--holdout", "600", "--depth", "2", "--width", "8", "--epochs",
           "0.2", "--seeds", "0,1", "--per-decade", "2", "--no-figures", "--out", str(tmp_path / "r")]
    assert subprocess.run(run, capture_output=True, timeout=300).returncode == 0
    done = subprocess.run([*base, "plot", str(tmp_path / "r"), "--out", str(tmp_path / "figs"), "--format", "pdf",
                           "--seed", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["curves.pdf", "heatmap_f.pdf", "layers_fpu.pdf"]
    bad = subprocess.run([*base, "plot", str(tmp_path / "r"), "--seed", "x"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "--seed must be a seed id or 'mean', got 'x'" in bad.stderr


@pytest.mark.parametrize("command", ["run", "sweep", "plan"])
def test_help_groups_the_options_by_concern(command):
    from typer.testing import CliRunner

    from nnphases.cli import app

    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "160"}).output
    panels = ["Data", "Model", "Optimisation", "Schedule", "Measure: sample sets", "Measure: probes", "Run"]
    assert [p for p in panels if f"─ {p} ─" not in out] == [], out
    data = out[out.index("─ Data ─"):out.index("─ Model ─")]
    assert "--holdout" in data and "--lr" not in data
    # Each option says its default, or each preset's value where the presets differ (the rows joined again).
    text = " ".join(re.sub(r"[│╭╰─]", " ", out).split())
    assert "epoch of the log grid's first point (default: 0.001)" in text
    assert "(default: off)" in text and "(default: fashion-mnist)" in text
    assert ("nodes per hidden layer (mlp, fc_bn) (set by the preset: 80 in demo, source002-vgg11, source002-resnet10; "
            "320 in source000; 256 in source002, source002-code)") in text
    assert "(set by the preset: none in demo, source000; 32 in source002," in text


def test_config_prints_the_resolved_configuration():
    import json

    from typer.testing import CliRunner

    from nnphases.cli import app
    from nnphases.experiments import train

    r = CliRunner().invoke(app, ["config", "--preset", "source002-code", "--epochs", "3", "--probe-bn", "running"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert (d["optim"]["momentum"], d["optim"]["epochs"], d["measures"]["probes"]["bn"]) == (0.9, 3.0, "running")
    assert train.Config.from_dict(d) == train.resolve("source002-code", {"epochs": 3, "probe_bn": "running"})
    bad = CliRunner().invoke(app, ["config", "--preset", "nope"])
    assert bad.exit_code == 2 and "unknown preset 'nope'" in bad.output


TIME_LINE = (r"about (\d+:\d\d:\d\d) per seed( \(\d seeds one after the other: \d+:\d\d:\d\d\))? on cpu, estimated "
             r"from a timed calibration: ([\d,]+) steps x ([\d.e+-]+) ms \(timed over (\d+) steps\) \+ (\d+) "
             r"measurements x ([\d.e+-]+) s \(one timed on ([\d,]+) of ([\d,]+) samples, scaled\)")


def test_plan_and_run_say_how_long_and_how_it_was_estimated(tmp_path):
    args = ["--dataset", "synthetic", "--holdout", "600", "--depth", "2", "--width", "8", "--epochs", "0.5",
            "--seeds", "0,1", "--per-decade", "2", "--device", "cpu", "--out", str(tmp_path / "r")]
    plan = subprocess.run([sys.executable, "-m", "nnphases.cli", "plan", *args], capture_output=True, text=True,
                          timeout=300)
    assert plan.returncode == 0, plan.stderr
    line = plan.stdout.splitlines()[-1]
    assert line.startswith("time: "), plan.stdout
    m = re.fullmatch(TIME_LINE, line.removeprefix("time: "))
    assert m, line
    total, steps, step_ms, checkpoints, measure_s = (m.group(i) for i in (1, 3, 4, 6, 7))
    assert m.group(2) is not None  # two seeds
    h, mi, s = map(int, total.split(":"))
    steps_n = int(steps.replace(",", ""))
    assert abs(3600 * h + 60 * mi + s - (steps_n * float(step_ms) / 1e3 + int(checkpoints) * float(measure_s))) <= 1
    assert not (tmp_path / "r").exists()
    done = subprocess.run([sys.executable, "-m", "nnphases.cli", "run", *args, "--no-figures"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    times = [ln for ln in done.stderr.splitlines() if ln.startswith("time: ")]
    assert len(times) == 1 and re.fullmatch(TIME_LINE, times[0].removeprefix("time: ")), done.stderr
    taken = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "r" / "seed-0" / "checkpoints").iterdir())
    assert (len(taken), taken[-1]) == (int(checkpoints), steps_n)  # the schedule's checkpoints and last step


def test_the_estimate_leaves_the_random_state_as_it_was():
    import torch

    from nnphases.experiments import train

    cfg = train.resolve("demo", {"dataset": "synthetic", "holdout": 600, "depth": 2, "width": 8, "epochs": 0.5,
                                 "device": "cpu"})
    torch.manual_seed(5)
    before = torch.get_rng_state()
    est = train.estimate(cfg, budget_s=0.05)
    assert torch.equal(torch.get_rng_state(), before)
    # The synthetic set keeps 2,400 training samples: 40 batches of 60 an epoch, half an epoch trained.
    assert (est.steps, est.samples) == (20, 600 + 2400) and est.steps_timed >= 3 and est.step_s > 0
    assert est.measure_s > 0
    assert est.seconds == est.steps * est.step_s + est.checkpoints * est.measure_s
