#!/usr/bin/env python3
"""Both sources' protocols in one command, in parallel, inside a time budget, packing small results as it goes.

Every run is a plain ``nnphases run`` in a subprocess (one process per seed, the run directory format unchanged).
First each job is run for a few steps (calibration) and timed; from those timings the script picks the epochs that
fit the budget (never fewer than the protocol's minimum unless the budget cannot allow it, and then it says so), runs
everything in a pool of ``--jobs`` processes, draws each job's figures and checks its findings when its seeds are
done, and kills what is still running at the deadline. After every event it rewrites, under ``--pack-dir``, one
tar.gz per group of jobs with the small files only (the layer, stats and probes tables, figures, findings, logs;
never nodes.parquet, counts.npz, masks or state.pt) and ``summary.md``/``summary.json``, so a hard timeout still
leaves results. A second invocation over the same ``--out`` skips what is finished and continues what was cut.

    python scripts/protocols.py --pack-data data       # here: copy FashionMNIST's IDX files into data/fashion-mnist
    python scripts/protocols.py --out runs/protocols --budget-minutes 9   # on the GPU machine
    python scripts/protocols.py --smoke --out /tmp/protocols-smoke        # the same pipeline in about a minute, CPU

The parts live in ``scripts/protocols_lib/``: the jobs as presets with a few options changed (``jobs``), the
calibration fit and the plan on nnphases' own schedule (``timing``), the process pool with its deadline (``pool``),
the archives (``packing``), the summary (``summary``) and the run that ties them (``runner``); this file holds the
command line. See scripts/README.md for the jobs, the layout of the output and the device command.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # protocols_lib, however this file is run or loaded

from protocols_lib import common
from protocols_lib.common import UsageError
from protocols_lib.jobs import JOB_NAMES, RUNS, Job  # noqa: F401  (Job: the jobs' type, for callers)
from protocols_lib.runner import Protocols
from protocols_lib.timing import Fit, fit_run, makespan, plan, schedule_steps  # noqa: F401  (the arithmetic)

DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")
PACKED_DATA = common.REPO / "data" / "fashion-mnist"  # where --pack-data data puts FashionMNIST
IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# -- arguments ---------------------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        raise UsageError(message)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {'integer' if kind is int else 'number'}, "
                                             f"got {text!r}") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be a positive {'integer' if kind is int else 'number'}, "
                                             f"got {text!r}")
        return v
    return parse


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not (v >= 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return v


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="protocols.py", description=__doc__.split("\n\n")[0], allow_abbrev=False,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/protocols"), help="output folder (default runs/protocols)")
    p.add_argument("--pack-dir", type=Path, help="where the archives and the summary go (default OUT/packed)")
    p.add_argument("--budget-minutes", type=_positive(float), help="wall time for the whole script, calibration "
                   "and packing included (default 9; smoke 4)")
    p.add_argument("--jobs", type=_positive(int), help="processes at once (default: one per run (16), at most the "
                   "CPU cores; smoke: 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="nnphases run --device (default auto; smoke cpu)")
    p.add_argument("--data-root", type=Path, help=f"FashionMNIST IDX files (default {DEFAULT_DATA}, or the "
                   f"repository's data/fashion-mnist when --pack-data put it there)")
    p.add_argument("--mnist-root", type=Path, help="MNIST IDX files: source 000 runs on MNIST, as the source")
    p.add_argument("--only", help="comma-separated job names to run (default: all)")
    p.add_argument("--pack-every", type=_seconds, help="seconds between archive rewrites while runs go on "
                   "(default 60; smoke 0: only when a run or a job ends)")
    p.add_argument("--smoke", action="store_true", help="the same pipeline with tiny runs on the CPU (about a minute)")
    p.add_argument("--pack-data", type=Path, metavar="DIR", help="only copy the IDX files of --data-root (and "
                   "--mnist-root) into DIR/fashion-mnist (DIR/mnist) and exit; e.g. DIR=data, ignored by git and "
                   "carried to the GPU machine")
    opts = p.parse_args(argv)
    if opts.data_root is None:
        opts.data_root = DEFAULT_DATA if _has_idx(DEFAULT_DATA) or not _has_idx(PACKED_DATA) else PACKED_DATA
    if not _has_idx(opts.data_root):
        raise UsageError(f"--data-root: {str(opts.data_root)!r} holds no FashionMNIST IDX files "
                         f"({', '.join(n + '[.gz]' for n in IDX_TRAIN)})")
    if opts.mnist_root is not None and not _has_idx(opts.mnist_root):
        raise UsageError(f"--mnist-root: {str(opts.mnist_root)!r} holds no MNIST IDX files "
                         f"({', '.join(n + '[.gz]' for n in IDX_TRAIN)})")
    opts.data_root = opts.data_root.resolve()
    opts.mnist_root = opts.mnist_root.resolve() if opts.mnist_root else None
    if opts.pack_data is not None:
        return opts
    if opts.only is not None:
        opts.only = [n.strip() for n in opts.only.split(",") if n.strip()]
        bad = [n for n in opts.only if n not in JOB_NAMES] or ([] if opts.only else [""])
        if bad:
            raise UsageError(f"--only: unknown job {bad[0]!r}; choose from {', '.join(JOB_NAMES)}")
    if opts.smoke and opts.device == "cuda":
        raise UsageError("--device: 'cuda' with --smoke; the smoke run is for the CPU")
    opts.device = opts.device or ("cpu" if opts.smoke else "auto")
    opts.budget_minutes = opts.budget_minutes or (4.0 if opts.smoke else 9.0)
    opts.pack_every = (0.0 if opts.smoke else 60.0) if opts.pack_every is None else opts.pack_every
    opts.jobs = opts.jobs or min(2 if opts.smoke else RUNS, os.cpu_count() or 1)
    opts.out = opts.out.resolve()
    opts.pack_dir = (opts.pack_dir or opts.out / "packed").resolve()
    if opts.out.exists() and not opts.out.is_dir():
        raise UsageError(f"--out: {str(opts.out)!r} is not a folder")
    return opts


def _has_idx(root: Path) -> bool:
    return all((root / n).is_file() or (root / (n + ".gz")).is_file() for n in IDX_TRAIN)


def pack_data(opts: argparse.Namespace) -> int:
    """Copies the IDX files into the repository (a folder git ignores, to be carried to the GPU machine)."""
    copied = []
    for src, name in ((opts.data_root, "fashion-mnist"), (opts.mnist_root, "mnist")):
        if src is None:
            continue
        dst = opts.pack_data / name
        dst.mkdir(parents=True, exist_ok=True)
        for stem in IDX_TRAIN + IDX_TEST:
            for f in (src / (stem + ".gz"), src / stem):
                if f.is_file():
                    shutil.copy2(f, dst / f.name)
                    copied.append(dst / f.name)
                    break
    size = sum(p.stat().st_size for p in copied)
    print(f"copied {len(copied)} files ({size / 2**20:.1f} MiB) into {opts.pack_data}: "
          + ", ".join(str(p) for p in copied))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
        if opts.pack_data is not None:
            return pack_data(opts)
        opts.pack_dir.mkdir(parents=True, exist_ok=True)
        common.LOG_FILE = opts.pack_dir / "protocols.log"
        proto = Protocols(opts)

        def on_signal(sig: int, _frame: Any) -> None:
            proto.stop = signal.Signals(sig).name
            raise KeyboardInterrupt

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            return proto.main()
        except KeyboardInterrupt:
            return 128 + (signal.SIGTERM if proto.stop == "SIGTERM" else signal.SIGINT)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    except UsageError as e:
        print(f"protocols.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
