"""The ``nnphases`` command line: ``run``, ``plot``, ``findings``, ``backends``."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Optional

import typer

app = typer.Typer(add_completion=False, help="Measure how neural networks learn, phase by phase.")


def _clean_errors(fn: Callable) -> Callable:
    """Bad input (ValueError, missing files) ends the command with its message and exit status 2, not a
    traceback; the message names the argument and the value. Set NNPHASES_TRACEBACK=1 to see the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, FloatingPointError) as e:
            if os.environ.get("NNPHASES_TRACEBACK"):
                raise
            typer.echo(f"nnphases {fn.__name__.replace('_', '-')}: error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command()
@_clean_errors
def run(
    preset: str = typer.Option("demo", help="demo (minutes on a CPU), source000 (one cell of the paper's "
                                            "protocol), source000-grid (all 18 cells), source002 (probes, "
                                            "FC-BN), source002-vgg11, source002-resnet10"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: runs/<preset>)"),
    resume: Optional[Path] = typer.Option(None, help="continue the run in this folder from its last checkpoint"),
    dataset: Optional[str] = typer.Option(None, help="fashion-mnist, mnist, cifar10, cifar100, synthetic"),
    data_root: Optional[str] = typer.Option(None, help="folder with the dataset's files"),
    holdout: Optional[int] = typer.Option(None, help="validation samples held out of the training set"),
    train_eval: Optional[int] = typer.Option(None, help="training samples scored (and probes fitted on) at each "
                                                        "measurement"),
    resize: Optional[int] = typer.Option(None, help="resize images to this size (32 for VGG-11/ResNet-10)"),
    model: Optional[str] = typer.Option(None, help="mlp, fc_bn, vgg11, resnet10"),
    depth: Optional[int] = typer.Option(None, help="hidden layers (mlp, fc_bn)"),
    width: Optional[int] = typer.Option(None, help="nodes per hidden layer (mlp, fc_bn)"),
    loss: Optional[str] = typer.Option(None, help="ce (softmax, cross-entropy) or mse (identity, one-hot)"),
    optimizer: Optional[str] = typer.Option(None, help="adam or sgd"),
    lr: Optional[float] = typer.Option(None),
    batch: Optional[int] = typer.Option(None),
    epochs: Optional[float] = typer.Option(None),
    seeds: Optional[str] = typer.Option(None, help="comma-separated, e.g. 0,1,2"),
    per_decade: Optional[int] = typer.Option(None, help="measurements per decade of training steps"),
    keep_masks: Optional[bool] = typer.Option(None, help="also store bit-packed activation masks"),
    probes: Optional[bool] = typer.Option(None, help="fit probes (linear read-out, input decoder) at ReLU sites"),
    probe_mode: Optional[str] = typer.Option(None, help="fast (closed form), paper (the source's trained "
                                                        "probes) or both"),
    probe_layers: Optional[str] = typer.Option(None, help="comma-separated ReLU site names to probe (default: all)"),
    probe_warm_start: Optional[bool] = typer.Option(None, help="paper mode: start from the previous step's probes"),
    paper_layers: Optional[str] = typer.Option(None, help="with --probe-mode both: the sites that also get "
                                                          "paper-mode probes (default: all probed sites)"),
    probe_decoder: Optional[str] = typer.Option(None, help="fast mode's decoder: linear (the source's theory) or "
                                                           "random-features (1,024 ReLU features, closed form)"),
    schedule: Optional[str] = typer.Option(None, help="log (per decade) or pow2 (steps 0, 1, 2, 4, ...)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda"),
    figures: bool = typer.Option(True, help="plot and check the findings at the end"),
) -> None:
    """Train with measurements at log-spaced steps; with no arguments, the demo on FashionMNIST."""
    from . import train

    if resume is not None:
        paths = train.resume(resume)
        out = resume
    else:
        overrides = dict(dataset=dataset, data_root=data_root, holdout=holdout, train_eval=train_eval,
                         resize=resize, model=model, depth=depth, width=width, loss=loss, optimizer=optimizer,
                         lr=lr, batch=batch, epochs=epochs, per_decade=per_decade, keep_masks=keep_masks,
                         probes=probes, probe_mode=probe_mode, probe_layers=_listed(probe_layers),
                         probe_warm_start=probe_warm_start, paper_layers=_listed(paper_layers),
                         probe_decoder=probe_decoder, schedule=schedule, device=device,
                         seeds=_seed_list(seeds))
        out = out or Path("runs") / preset
        if preset == "source000-grid":
            paths = []
            for cell, cfg in train.grid_configs(overrides).items():
                cell_paths = train.run(cfg, out / cell)
                if figures:
                    _report(cell_paths)
                paths += cell_paths
            typer.echo(f"runs: {', '.join(str(p) for p in paths)}")
            return
        cfg = train.resolve(preset, overrides)
        paths = train.run(cfg, out)
    typer.echo(f"runs: {', '.join(str(p) for p in paths)}")
    if figures:
        _report(paths)


def _listed(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [t.strip() for t in text.split(",")] if text else None


def _seed_list(text: str | None) -> list[int] | None:
    try:
        return [int(s) for s in _listed(text)] if text else None  # type: ignore[union-attr]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None


def _findings_text(paths: list[Path]) -> str:
    """Source 000's findings, then source 002's phases when the runs fitted probes."""
    from .findings import findings as check, report
    from .phases import probe_phases, report as phase_report

    text = report(check(paths))
    phases = probe_phases(paths)
    return text + ("\nprobe phases (source 002):\n" + phase_report(phases) if phases else "")


def _report(paths: list[Path]) -> None:
    from .plot import plot as draw

    written = draw(paths)
    typer.echo("figures: " + ", ".join(str(p) for p in written))
    typer.echo(_findings_text(paths))


@app.command()
@_clean_errors
def plot(runs: list[Path] = typer.Argument(..., help="run folders (or their parent)")) -> None:
    """Draw the sample-set figures of finished or running runs."""
    from .plot import plot as draw

    for p in draw(runs):
        typer.echo(str(p))


@app.command()
@_clean_errors
def findings(runs: list[Path] = typer.Argument(..., help="run folders (or their parent)")) -> None:
    """Check the sources' findings on runs (and the probes' phases) and print the numbers behind each."""
    typer.echo(_findings_text(runs))


@app.command("single-layer")
@_clean_errors
def single_layer(out: Path = typer.Option(Path("runs/single-layer"), help="folder for the figures"),
                 quick: bool = typer.Option(False, help="a 6,000-sample subset and 8 epochs")) -> None:
    """Source 002's single-layer analysis on FashionMNIST: prototypes, groups by dot product, figures."""
    from .singlelayer import main as run_single

    for p in run_single(out, quick=quick):
        typer.echo(str(p))


@app.command()
@_clean_errors
def theory(out: Path = typer.Option(Path("runs/theory"), help="folder for the figure"),
           control: bool = typer.Option(False, help="drop the small subsets (no rise expected)")) -> None:
    """Source 002's data model: a logistic model's reconstruction error falls, then rises (numbers printed)."""
    from .theory import main as run_theory

    for p in run_theory(["--out", str(out)] + (["--control"] if control else [])):
        typer.echo(str(p))


@app.command()
@_clean_errors
def backends() -> None:
    """List the kernel backends, which work on this machine, and why the others do not."""
    from .kernels import AUTO_ORDER, backends as listing

    for name, device, why in listing():
        state = "available" if why is None else f"unavailable: {why}"
        typer.echo(f"{name:10s} {device:5s} {state}")
    for device, order in AUTO_ORDER.items():
        typer.echo(f"automatic order on {device}: {' > '.join(order)}")


if __name__ == "__main__":
    app()
