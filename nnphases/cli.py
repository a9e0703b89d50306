"""The ``nnphases`` command line: one function per command (run, plan, plot, findings, sweep, status, compact,
backends, bench, single-layer, theory), each parsing, checking and calling one function of a lower layer.

About 560 lines: the commands share the option declarations and the one-line error handling of this file."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import re
import signal
import sys
import threading
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import typer
import typer.core

# Before torch (imported below, through the store) and Numba start their OpenMP runtimes, which read this once:
# by default libgomp's idle threads spin for milliseconds after every parallel region, and beside one busy
# process on two cores that spinning, with each region's join waiting for a descheduled thread, made the demo's
# training about seven times slower (benchmarks/RESULTS.md). Passive threads sleep at once; a value
# the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .options import one_line, parse_text
from .store import output_folder


def _usage_error_types() -> tuple[type[BaseException], ...]:
    # Typer raises its own copy of click's exceptions since it vendored click; older versions raise click's.
    found = []
    for module, name in (("typer", "TyperException"), ("click", "ClickException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


class _OneLineGroup(typer.core.TyperGroup):
    """Usage errors (an unknown option, a value that is not a number, a missing argument) end the command with one
    line naming the option and the value, exit status 2, like every other bad input: typer would draw a box of
    several lines that names the option but not the value."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, False, windows_expand_args, **extra)
        except _usage_error_types() as e:
            if type(e).__name__ == "NoArgsIsHelpError" or not hasattr(e, "format_message"):
                e.show()  # type: ignore[attr-defined]  # the help text itself is the answer
                sys.exit(getattr(e, "exit_code", 2))
            ctx = getattr(e, "ctx", None)
            name = "nnphases" + (f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else "")
            text = " ".join(e.format_message().split())
            value = _given(getattr(e, "param", None), argv)
            if value is not None and repr(value) not in text:
                text += f" (got {value!r})"
            typer.echo(f"{name}: error: {text} (see {name} --help)", err=True)
            sys.exit(getattr(e, "exit_code", 2))
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            _exit(1)
        _exit(code if isinstance(code, int) else 0)


def _exit(code: int) -> None:
    """Ends the command with ``code``. A process of a torchrun world ends without the interpreter's finalization:
    a DistributedDataParallel model keeps torch's gloo process group alive past ``destroy_process_group``, and its
    worker threads, torn down while the interpreter finalizes, can abort the process ("terminate called without an
    active exception") after the run has completed and every file is written, which torchrun reports as a failed
    rank. Nothing is left to finalize by then: the run's files are closed and the output streams flushed here."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1 and "torch.distributed" in sys.modules:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said there
                pass
        os._exit(code)
    sys.exit(code)


def _given(param: Any, argv: list[str]) -> str | None:
    """The text given to an option on the command line (its last occurrence), or None."""
    found = None
    opts = list(getattr(param, "opts", None) or ()) + list(getattr(param, "secondary_opts", None) or ())
    for i, arg in enumerate(argv):
        for opt in opts:
            if arg == opt and i + 1 < len(argv):
                found = argv[i + 1]
            elif arg.startswith(opt + "="):
                found = arg[len(opt) + 1 :]
    return found


app = typer.Typer(add_completion=False, cls=_OneLineGroup, help="Measure how neural networks learn, phase by phase.")


def _clean_errors(fn: Callable) -> Callable:
    """A failure caused by the input or the environment (a bad value, a path that is missing, exists, cannot be
    written or is too long, a full disk, memory that cannot be had, a diverged run) ends the command with one line
    naming the option or path and the value, exit status 2. Anything else is a bug in nnphases: its traceback is
    shown, with a line asking to report it. NNPHASES_TRACEBACK=1 shows the traceback of every error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = fn.__name__.replace("_command", "").replace("_", "-")
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (ValueError, FloatingPointError, OSError, MemoryError, RuntimeError) as e:
            if os.environ.get("NNPHASES_TRACEBACK") or (isinstance(e, RuntimeError) and not _out_of_memory(e)):
                _report_bug(name)
                raise
            typer.echo(f"nnphases {name}: error: {_message(e)}", err=True)
            raise typer.Exit(2) from None
        except Exception:
            _report_bug(name)
            raise

    return wrapper


def _out_of_memory(e: BaseException) -> bool:
    # torch's CPU allocator says "can't allocate memory" (a model far too large for the machine), CUDA "out of memory".
    text = str(e).lower()
    return "out of memory" in text or "can't allocate memory" in text


def _message(e: BaseException) -> str:
    """The error as one line for the command's user: an OSError as its reason and path, an allocation failure with
    the way out, anything else as its message (:func:`nnphases.options.one_line`, without the type's name)."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.strerror or type(e).__name__}: {str(e.filename)!r}"
    if isinstance(e, MemoryError) or _out_of_memory(e):
        first = str(e).strip().splitlines()[0] if str(e).strip() else "memory could not be allocated"
        return f"out of memory ({first[:200]}); lower --eval-batch or --batch, or measure fewer sites"
    text = one_line(e, typed=False)
    from .store import DamagedCheckpoint

    if isinstance(e, DamagedCheckpoint):
        run = e.checkpoint.parent.parent if e.checkpoint.parent.name == "checkpoints" else e.checkpoint.parent
        return f"{text}; nnphases verify {run} lists every damaged file"
    # Measures name their options as the Python API does (count_sites: ...); on the command line they are flags.
    head, sep, rest = text.partition(": ")
    if sep and head.isidentifier():
        from .experiments.config import flat_options

        if head in flat_options():
            return f"--{head.replace('_', '-')}: {rest}"
    return text


def _report_bug(name: str) -> None:
    if not os.environ.get("NNPHASES_TRACEBACK"):
        typer.echo(
            f"nnphases {name}: internal error, a bug in nnphases: please report it with the command and the "
            "traceback below",
            err=True,
        )


_PANELS = {"data": "Data", "model": "Model", "optim": "Optimisation", "schedule": "Schedule"}


def _panel(group: str) -> str:
    """The --help panel of a configuration group: data, model, optimisation, schedule, or the measure's name."""
    if group in _PANELS:
        return _PANELS[group]
    name = group.split(".", 1)[-1].replace("_", " ")
    return f"Measure: {name}"


def _flat_signature(extra: list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Give a command one typer option per configuration option (:func:`nnphases.experiments.config.flat_options`): the
    command line is derived from the typed declarations, never written again. Values arrive as a dict ``flat``
    of the options given (None: not given, the preset decides)."""
    from .experiments.config import flat_options

    leaves = flat_options()

    def decorate(fn: Callable) -> Callable:
        params = list(extra)
        for name, leaf in leaves.items():
            ann, hint = _cli_annotation(leaf.type)
            flag = "--" + name.replace("_", "-")
            decls = [f"{flag}/--no-{flag[2:]}"] if ann is bool else [flag]
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Optional[ann],
                    default=typer.Option(
                        None,
                        *decls,
                        help=(leaf.help + hint).strip() + _default_note(name, leaf.default),
                        show_default=False,
                        rich_help_panel=_panel(leaf.group),
                    ),
                )
            )
        for name, help_ in (("seeds", "comma-separated seeds, e.g. 0,1,2"), ("device", "auto, cpu, cuda, cuda:1")):
            help_ += _default_note(name, None)
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Optional[str],
                    default=typer.Option(None, help=help_, show_default=False, rich_help_panel="Run"),
                )
            )

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            fixed = {p.name: kwargs.pop(p.name) for p in extra}
            flat = {k: _parse_flat(k, v, leaves) for k, v in kwargs.items() if v is not None}
            try:
                return fn(flat=flat, **fixed)
            except (ValueError, TypeError) as e:
                # The options' checks name them as in Python (batch); on the command line they are --batch.
                text = re.sub(r"^\w+ \((--[\w-]+)\) ", r"\1 ", str(e))
                first, _, rest = text.partition(" ")
                if first in leaves or first in ("seeds", "device"):
                    text = f"--{first.replace('_', '-')} {rest}"
                if text != str(e):
                    raise type(e)(text) from None
                raise

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


@functools.cache
def _preset_values() -> dict[str, dict[str, Any]]:
    """Every flat option's value in each preset (a measure's options where the preset turns it on)."""
    from .experiments.train import PRESETS

    return {preset: cfg.flat() for preset, cfg in PRESETS.items()}


def _default_note(name: str, default: Any) -> str:
    """``(default: X)`` when every preset gives ``name`` the same value, else the value of each preset."""
    by_value: dict[str, list[str]] = {}
    for preset, flat in _preset_values().items():
        value = flat.get(name)
        by_value.setdefault(_shown(default if value is None else value), []).append(preset)
    if len(by_value) == 1:
        (value,) = by_value
        return "" if value == "none" else f" (default: {value})"
    return " (set by the preset: " + "; ".join(f"{v} in {', '.join(ps)}" for v, ps in by_value.items()) + ")"


def _cli_annotation(tp: Any) -> tuple[Any, str]:
    """The command-line type of an option (choices and lists travel as text) and a hint for its help."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is Literal:
        return str, " (one of: " + ", ".join(str(a) for a in typing.get_args(tp)) + ")"
    if origin is tuple:
        return str, " (comma-separated)"
    if args and origin is not tuple and origin is not Literal and len(args) == 1:
        return _cli_annotation(args[0])
    return tp, ""


def _parse_flat(name: str, value: Any, leaves: dict) -> Any:
    """A command-line value as its option's type (typer has parsed numbers and switches; comma lists are split
    here, integers where integers are meant)."""
    if name == "device":
        return value
    tp = tuple[int, ...] if name == "seeds" else leaves[name].type
    return parse_text(value, tp, "--" + name.replace("_", "-")) if isinstance(value, str) else value


_RUN_EXTRA = [
    inspect.Parameter(
        "preset",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=str,
        default=typer.Option(
            "demo",
            help="demo (minutes on a CPU), source000 (one cell of the paper's protocol), source000-grid (all 18 "
            "cells), source002 (FC-BN, probes as its text states them), source002-code (as its authors' code "
            "runs them), source002-vgg11, source002-resnet10",
        ),
    ),
    inspect.Parameter(
        "out",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Optional[Path],
        default=typer.Option(None, help="output folder (default: runs/<preset>)"),
    ),
]


@app.command()
@_clean_errors
@_flat_signature(
    [
        *_RUN_EXTRA,
        inspect.Parameter(
            "resume",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[Path],
            default=typer.Option(None, help="continue the run in this folder from its last checkpoint"),
        ),
        inspect.Parameter(
            "figures",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(True, help="plot and check the findings at the end"),
        ),
    ]
)
def run(*, flat: dict[str, Any], preset: str, out: Path | None, resume: Path | None, figures: bool) -> None:
    """Train with measurements at log-spaced steps; with no arguments, the demo on FashionMNIST."""
    _use_cores()
    # SIGTERM (what Slurm and most schedulers send) ends a run as Ctrl-C does: the checkpoint being written is
    # finished, the one being measured abandoned, and the way to continue is said.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        _run(flat, preset, out, resume, figures)
    except KeyboardInterrupt as e:
        from .store import RunDir

        where = resume or out or Path("runs") / preset
        seeds = sorted(where.glob("seed-*")) if where.is_dir() else []
        last = [f"{p.name} at step {max(RunDir(p).completed_steps(), default='none')}" for p in seeds]
        how = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted"
        typer.echo(
            f"nnphases run: {how}; the checkpoints written are intact ({', '.join(last) or 'none yet'}): "
            f"nnphases run --resume {where} continues from the last one",
            err=True,
        )
        raise typer.Exit(143 if isinstance(e, _Terminated) else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C raises KeyboardInterrupt."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


def _run(flat: dict[str, Any], preset: str, out: Path | None, resume: Path | None, figures: bool) -> None:
    from .experiments import train
    from .store import RunDir

    if resume is not None:
        if flat:
            raise ValueError(f"--resume continues a run with its stored options; drop {_flags(flat)}")
        if not resume.exists():
            raise ValueError(f"--resume {str(resume)!r} does not exist")
        if not resume.is_dir():
            raise ValueError(f"--resume {str(resume)!r} is a file, not a run folder")
        paths = train.resume(output_folder(resume, "--resume"))
        out = resume
    else:
        # Checked before the data are loaded: a path that cannot be written fails at once, not after the plan.
        out = output_folder(out or Path("runs") / preset, "--out")
        if preset == "source000-grid":
            cells = train.grid_configs(flat)
            paths = []
            for i, (cell, cfg) in enumerate(cells.items()):
                # Every cell is planned before it trains and refused when it cannot fit; the first says its disk.
                def say(p: Any, est: Any, cell: str = cell, n: int = len(cfg.seeds), first: bool = i == 0) -> None:
                    if first:
                        typer.echo(p.seeds_summary(n), err=True)
                    if est is not None:
                        typer.echo(f"time of {cell}: {est.summary(n)}", err=True)

                cell_paths = train.run(cfg, out / cell, on_plan=say)
                if figures:
                    _report(cell_paths)
                paths += cell_paths
            typer.echo(f"runs: {', '.join(str(p) for p in paths)}")
            return
        cfg = train.resolve(preset, flat)
        if (out / "run.json").is_file() and all(RunDir(out / f"seed-{s}").done for s in cfg.seeds):
            typer.echo(f"{out}: every seed is already done; nothing to train", err=True)

        # A new run is planned before anything is written or trained, and refused when it cannot fit.
        def say_plan(p: Any, est: Any, n: int = len(cfg.seeds)) -> None:
            if _lead():
                typer.echo("plan: " + p.summary(), err=True)
                if est is not None:
                    typer.echo("time: " + est.summary(n), err=True)

        paths = train.run(cfg, out, on_plan=say_plan)
    if not _lead():
        return  # under torchrun one process reports
    typer.echo(f"runs: {', '.join(str(p) for p in paths)}")
    if figures:
        _report(paths)


def _use_cores() -> None:
    """torch's intra-op threads: one per core this process may use. torch's own default counts the affinity
    mask but not a cgroup's CPU quota, and a team larger than the cores it gets waits at every join."""
    import torch

    from .kernels.cores import usable_cores

    torch.set_num_threads(usable_cores())


def _lead() -> bool:
    """Whether this process reports: always, except the ranks other than 0 of a torchrun world."""
    return int(os.environ.get("RANK", "0")) == 0


@app.command("config")
@_clean_errors
@_flat_signature(_RUN_EXTRA[:1])
def config_command(*, flat: dict[str, Any], preset: str) -> None:
    """Print the configuration a run of a preset with these options would use (JSON, every option resolved), without
    loading data or training."""
    from .experiments import train

    if preset == "source000-grid":
        raise ValueError("--preset source000-grid: show one cell (--preset source000 --depth ... --width ...)")
    typer.echo(train.resolve(preset, flat).to_json().decode())


@app.command("plan")
@_clean_errors
@_flat_signature(_RUN_EXTRA)
def plan_command(*, flat: dict[str, Any], preset: str, out: Path | None) -> None:
    """Print the memory, disk and time a run will take, per site and in total, without training (same options as
    run); the time comes from a short timed calibration on this machine."""
    from .experiments import train

    if preset == "source000-grid":
        raise ValueError("--preset source000-grid: plan one cell (--preset source000 --depth ... --width ...)")
    cfg = train.resolve(preset, flat)
    # A plan that says "fits" for an out the run could not write would mislead.
    folder = output_folder(out or Path("runs") / preset, "--out")
    datasets = train.load_data(cfg)
    p = train.plan(cfg, folder, datasets)
    typer.echo(f"{p}\n{p.seeds_summary(len(cfg.seeds))}\n{p.verdict()}")
    if not p.problems():
        typer.echo("time: " + train.estimate(cfg, datasets).summary(len(cfg.seeds)))


def _flags(flat: dict[str, Any]) -> str:
    return ", ".join("--" + k.replace("_", "-") for k in flat)


def _findings_text(paths: list[Path]) -> str:
    """Source 000's findings, then source 002's phases when the runs fitted probes."""
    from .analysis.findings import findings as check
    from .analysis.findings import report
    from .analysis.phases import mode_agreement, probe_phases
    from .analysis.phases import report as phase_report

    text = report(check(paths))
    phases = probe_phases(paths)
    if not phases:
        return text
    return text + "\nprobe phases (source 002):\n" + phase_report(phases, mode_agreement(paths, phases))


def _report(paths: list[Path]) -> None:
    from .analysis.plot import plot as draw

    written = draw(paths)
    typer.echo("figures: " + ", ".join(str(p) for p in written))
    typer.echo(_findings_text(paths))


@app.command()
@_clean_errors
def plot(
    runs: list[Path] = typer.Argument(..., help="run folders (or their parent)"),
    out: Optional[Path] = typer.Option(None, help="folder for the figures (default: the first run's parent/figures)"),
    format: str = typer.Option("png,svg", help="comma-separated file formats matplotlib writes (png, svg, pdf, ...)"),
    seed: Optional[str] = typer.Option(
        None, help="the heatmap's seed: a seed id, or 'mean' for the mean over seeds (default: the smallest seed)"
    ),
) -> None:
    """Draw the sample-set figures of finished or running runs."""
    from .analysis.plot import plot as draw

    formats = [f.strip() for f in format.split(",") if f.strip()]
    if not formats:
        raise ValueError(f"--format must name at least one file format, got {format!r}")
    chosen: int | str | None = "first"
    if seed is not None:
        if seed == "mean":
            chosen = None
        else:
            try:
                chosen = int(seed)
            except ValueError:
                raise ValueError(f"--seed must be a seed id or 'mean', got {seed!r}") from None
    for p in draw(runs, output_folder(out, "--out") if out is not None else None, formats, seed=chosen):
        typer.echo(str(p))


@app.command()
@_clean_errors
def findings(runs: list[Path] = typer.Argument(..., help="run folders (or their parent)")) -> None:
    """Check the sources' findings on runs (and the probes' phases) and print the numbers behind each."""
    typer.echo(_findings_text(runs))


@app.command()
@_clean_errors
def dynamics(
    runs: list[Path] = typer.Argument(..., help="run folders (or their parent) with stored masks (--keep-masks)"),
    layers: Optional[str] = typer.Option(None, help="comma-separated layers (default: every layer with masks)"),
    out: Optional[Path] = typer.Option(None, help="folder for the figure (default: as nnphases plot)"),
    format: str = typer.Option("png,svg", help="comma-separated file formats matplotlib writes"),
) -> None:
    """Sample-set churn between checkpoints and node redundancy over training, read from the stored masks: a table
    pair in each run folder and a figure."""
    from .analysis.dynamics import dynamics as measure
    from .analysis.dynamics import write_tables
    from .analysis.dynamics_plot import plot_dynamics
    from .analysis.plot import figures_folder
    from .store.runs import one_setup

    formats = [f.strip() for f in format.split(",") if f.strip()]
    if not formats:
        raise ValueError(f"--format must name at least one file format, got {format!r}")
    chosen = [x.strip() for x in layers.split(",") if x.strip()] if layers is not None else None
    if chosen is not None and not chosen:
        raise ValueError(f"--layers must name at least one layer, got {layers!r}")
    dirs = one_setup(runs)  # the figure averages seeds: never two setups
    d = measure(dirs, chosen)
    if d.churn.empty and d.redundancy.empty:
        raise ValueError(f"no checkpoint of {', '.join(map(str, runs))} holds masks; record with --keep-masks")
    for p in write_tables(d, dirs):
        typer.echo(str(p))
    folder = output_folder(out, "--out") if out is not None else figures_folder(runs, dirs)  # where plot's go
    for p in plot_dynamics(d, folder, formats):
        typer.echo(str(p))
    for s in d.skipped:
        typer.echo(f"redundancy skipped: {s}", err=True)


@app.command("single-layer")
@_clean_errors
def single_layer(
    out: Path = typer.Option(Path("runs/single-layer"), help="folder for the figures"),
    quick: bool = typer.Option(False, help="a 6,000-sample subset and 8 epochs"),
) -> None:
    """Source 002's single-layer analysis on FashionMNIST: prototypes, groups by dot product, figures."""
    from .experiments.singlelayer import main as run_single

    for p in run_single(output_folder(out, "--out"), quick=quick):
        typer.echo(str(p))


@app.command()
@_clean_errors
def theory(
    out: Path = typer.Option(Path("runs/theory"), help="folder for the figure"),
    control: bool = typer.Option(False, help="drop the small subsets (no rise expected)"),
) -> None:
    """Source 002's data model: a logistic model's reconstruction error falls, then rises (numbers printed)."""
    from .experiments.theory import main as run_theory

    output_folder(out, "--out")  # before the model is fitted, not at its first write
    for p in run_theory(["--out", str(out)] + (["--control"] if control else [])):
        typer.echo(str(p))


@app.command()
@_clean_errors
def backends() -> None:
    """List the kernel backends, which work on this machine, and why the others do not."""
    from .kernels import AUTO_ORDER
    from .kernels import backends as listing

    for name, device, why in listing():
        state = "available" if why is None else f"unavailable: {why}"
        typer.echo(f"{name:10s} {device:5s} {state}")
    for device, order in AUTO_ORDER.items():
        typer.echo(f"automatic order on {device}: {' > '.join(order)}")


def _slurm_params() -> list[inspect.Parameter]:
    """One ``--slurm-*`` option per field of :class:`nnphases.experiments.sweep.SlurmOptions` (lists: a repeatable
    flag)."""
    import dataclasses

    from .experiments.sweep import SlurmOptions

    hints = typing.get_type_hints(SlurmOptions)
    params = []
    for f in dataclasses.fields(SlurmOptions):
        listed = typing.get_origin(hints[f.name]) is tuple
        ann = Optional[list[str]] if listed else Optional[_cli_annotation(hints[f.name])[0]]
        params.append(
            inspect.Parameter(
                "slurm_" + f.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=ann,
                default=typer.Option(None, "--" + f.metadata["flag"], show_default=False, help=f.metadata["help"]),
            )
        )
    return params


@app.command("sweep")
@_clean_errors
@_flat_signature(
    [
        *_RUN_EXTRA,
        inspect.Parameter(
            "executor",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=str,
            default=typer.Option(
                "local",
                help="local (processes on this machine, waits for them) or slurm (one job array through sbatch)",
            ),
        ),
        inspect.Parameter(
            "parallel",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[int],
            default=typer.Option(
                None,
                help="jobs running at a time (local: processes, default 1; slurm: the array's limit, default all)",
                show_default=False,
            ),
        ),
        inspect.Parameter(
            "grid",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[list[str]],
            default=typer.Option(
                None,
                help="sweep an option: NAME=V1,V2 (repeatable; one cell per combination, in OUT/NAME=V1_...)",
                show_default=False,
            ),
        ),
        *_slurm_params(),
    ]
)
def sweep(
    *,
    flat: dict[str, Any],
    preset: str,
    out: Path | None,
    executor: str,
    parallel: int | None,
    grid: list[str] | None,
    **slurm: Any,
) -> None:
    """Run a preset's cells (source000-grid: 18) x seeds as one job each, through submitit: locally or on Slurm."""
    from .experiments import sweep as sw

    if executor not in ("local", "slurm"):
        raise ValueError(f"--executor must be local or slurm, got {executor!r}")
    given: dict[str, Any] = {
        k[len("slurm_") :]: tuple(v) if isinstance(v, list) else v for k, v in slurm.items() if v is not None
    }
    if executor != "slurm" and given:
        raise ValueError(f"{', '.join('--slurm-' + k.replace('_', '-') for k in given)} need --executor slurm")
    if parallel is not None and parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {parallel}")
    out = output_folder(out or Path("runs") / preset, "--out")
    jobs = sw.jobs_for(sw.cells(preset, flat, grid or ()), out)
    slurm_options = sw.SlurmOptions(**given) if executor == "slurm" else None
    outcomes = sw.submit(jobs, executor, parallel=parallel, slurm=slurm_options)  # type: ignore[arg-type]
    skipped = sum(o.result == "skipped" for o in outcomes)
    if executor == "slurm":
        ids = sorted({o.detail.split("_")[0] for o in outcomes if o.result == "submitted"})
        typer.echo(
            f"submitted {len(outcomes) - skipped} jobs (Slurm {', '.join(ids) or 'none'}), {skipped} skipped "
            f"(done or running); follow them with: nnphases status {out}"
        )
        return
    typer.echo(sw.format_status(sw.status(out)))
    failed = [o for o in outcomes if o.result == "failed"]
    if failed:
        typer.echo(
            f"nnphases sweep: {len(failed)} of {len(outcomes)} jobs failed; fix the cause and run the same "
            "command again (finished jobs are skipped, interrupted ones resume)",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
@_clean_errors
def status(out: Path = typer.Argument(..., help="a sweep folder (or one run folder)")) -> None:
    """Which cells and seeds of a sweep are done, running, failed, interrupted or pending."""
    from .experiments.sweep import format_status
    from .experiments.sweep import status as read_status

    typer.echo(format_status(read_status(out)))


@app.command()
@_clean_errors
def compact(runs: list[Path] = typer.Argument(..., help="finished run folders (or their parent)")) -> None:
    """Gather each finished run's per-checkpoint tables into one file per table (crash-safe; readers see the same
    rows)."""
    from .recording import measures  # noqa: F401  (registers the tables measures write)
    from .store import RunDir
    from .store.runs import run_dirs

    for run in run_dirs(runs):
        files = RunDir(run).compact()
        typer.echo(f"{run}: {', '.join(p.name for p in files) or 'nothing to compact'}")


@app.command()
@_clean_errors
def export(
    runs: list[Path] = typer.Argument(..., help="run folders (or their parent)"),
    out: Path = typer.Option(..., help="folder for the files: one <table>.parquet per table"),
    tables: Optional[str] = typer.Option(None, help="comma-separated tables (default: every table the runs hold)"),
) -> None:
    """Write each table of runs as one tidy Parquet file (every seed and checkpoint, verified, before or after
    compaction), with a ``run`` column naming each row's run folder."""
    import pandas as pd

    from .recording import measures  # noqa: F401  (registers the tables measures write)
    from .store import RunDir, atomic_write_bytes, read_table
    from .store.reader import TableReader
    from .store.runs import run_dirs

    dirs = run_dirs(runs)
    held = sorted({t for d in dirs for t in TableReader(RunDir(d)).tables()})
    wanted = [t.strip() for t in tables.split(",") if t.strip()] if tables is not None else held
    unknown = [t for t in wanted if t not in held]
    if unknown or not wanted:
        raise ValueError(f"--tables {tables!r}: the runs hold the tables {', '.join(held)}")
    folder = output_folder(out, "--out")
    base = Path(os.path.commonpath([str(d.resolve()) for d in dirs]))
    for table in wanted:
        parts = []
        for d in dirs:
            t = read_table(d, table)
            t.insert(0, "run", str(d.resolve().relative_to(base)) if len(dirs) > 1 else d.name)
            parts.append(t)
        frame = pd.concat(parts, ignore_index=True)
        path = folder / f"{table}.parquet"
        atomic_write_bytes(path, frame.to_parquet(index=False))
        typer.echo(f"{path}: {len(frame)} rows")


@app.command()
@_clean_errors
def verify(runs: list[Path] = typer.Argument(..., help="run folders (or their parent)")) -> None:
    """Check every checkpoint of runs against its manifest (sizes and checksums, the compacted tables too) and say
    which files are damaged; exit status 2 when any is."""
    from .store import DamagedCheckpoint, RunDir
    from .store.runs import run_dirs

    damaged = 0
    for path in run_dirs(runs):
        run = RunDir(path)
        steps = run.completed_steps()
        bad = []
        for step in steps:
            try:
                run.verify(step)
            except DamagedCheckpoint as e:
                bad.append(str(e))
        damaged += len(bad)
        state = "done" if run.done else "not finished"
        typer.echo(f"{path}: {len(steps) - len(bad)} of {len(steps)} checkpoints intact ({state})")
        for line in bad:
            typer.echo(f"  {line}")
    if damaged:
        typer.echo(f"{damaged} damaged checkpoint{'s' if damaged != 1 else ''}", err=True)
        raise typer.Exit(2)


@app.command()
@_clean_errors
def bench(
    quick: bool = typer.Option(False, help="small inputs: seconds in all"),
    json_: bool = typer.Option(False, "--json", help="print the report as JSON, for machines"),
) -> None:
    """Time every kernel on every backend here, checked against the reference, next to this run's memory bandwidth."""
    import json

    from .kernels.bench import format_report
    from .kernels.bench import run as run_bench

    report = run_bench(quick=quick)
    typer.echo(json.dumps(report, indent=1) if json_ else format_report(report))
    if not report["ok"]:
        typer.echo("nnphases bench: a backend's results differ from the reference backend's (see check)", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
