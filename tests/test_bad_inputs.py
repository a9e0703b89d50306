"""Bad input at every entry point, one table each: the kernels (per backend), Schedule, the Recorder and its
measures and options, the store's and the runs' readers, the data readers, and every command of the CLI.

Every row is one bad input and what must come of it: the exception type (or, on the command line, exit status
2) and a regex its message must match, which names the argument (``num_classes``, ``--batch``) and, where there
is one, the value. A command-line error is also one line, with no traceback. The rows that could hang (a huge
per-decade grid, an endless steps iterable) run under a time limit. Nothing here trains: on the command line
every input is one that must be refused before any data are loaded."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import math
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import nnphases.kernels as K
from nnphases.experiments import data
from nnphases.store import runs
from nnphases import store
from nnphases.cli import app
from nnphases.recording.measures import (EvalStats, EvalStatsOptions, Masks, MasksOptions, Probes, ProbesOptions, SampleSets,
                               SampleSetsOptions)
from nnphases.recording.recorder import Recorder, RecorderOptions
from nnphases.recording.schedule import Schedule, log_steps, powers_of_two
from nnphases.store import RunDir

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
LONG = "x" * 300  # a path component over the 255-byte limit of common file systems


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fails the test (instead of hanging it) when the block runs longer than ``seconds``."""

    def fire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: the input made it hang")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def expect(call: Callable[[], Any], exc: type[BaseException], rx: str, limit: float = 30) -> None:
    with time_limit(limit), pytest.raises(exc, match=rx):
        call()


def params(table: list[tuple], marks: dict[str, Any] | None = None) -> list:
    """pytest params from (id, *values) rows; ``marks`` adds marks to rows by id."""
    ids = [row[0] for row in table]
    assert len(set(ids)) == len(ids), "row ids must be unique"
    return [pytest.param(*row[1:], id=row[0], marks=(marks or {}).get(row[0], ())) for row in table]


# =============================================================================== kernels
_AVAILABLE = {name: why for name, _, why in K.backends()}
_DEVICE = {name: b.device for name, b in K.BACKENDS.items()}
KERNEL_BACKENDS = [
    pytest.param(name, id=name, marks=pytest.mark.skipif(_AVAILABLE.get(name) is not None,
                                                         reason=f"{name}: {_AVAILABLE.get(name)}"))
    for name in ("cpp", "numba", "reference", "cuda", "cupy")
]


def _dev(bk: str) -> str:
    return "cuda" if _DEVICE[bk] == "cuda" else "cpu"


def acts(bk: str, s: int = 12, n: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.arange(s * n, dtype=torch.float64).reshape(s, n) % 5 - 2).to(dtype).to(_dev(bk))


def labels(bk: str, s: int = 12, c: int = 4, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return (torch.arange(s) % c).to(dtype).to(_dev(bk))


def packed(bk: str, s: int = 12, n: int = 3) -> torch.Tensor:
    bits = np.zeros((n, -(-s // 64) * 64), dtype=bool)
    bits[:, :s] = (acts("reference", s, n) > 0).numpy().T
    return torch.from_numpy(np.packbits(bits, axis=1, bitorder="little")).to(_dev(bk))


def with_label(bk: str, i: int, value: int) -> torch.Tensor:
    y = labels(bk)
    y[i] = value
    return y


def counts() -> np.ndarray:
    return np.array([[1, 2, 0], [3, 0, 3]], dtype=np.int64)


SIZES = np.array([3, 3], dtype=np.int64)


def readonly_out() -> np.ndarray:
    o = np.zeros((4, 3), np.int64)
    o.flags.writeable = False
    return o


CC, PM, PCC, NM, LM = K.class_counts, K.pack_masks, K.packed_class_counts, K.node_metrics, K.layer_metrics
MO, SP, CO = K.mask_overlap, K.sample_popcounts, K.coactivation

# (id, call(bk), exception, regex). Rows whose id starts with "host-" use NumPy arrays (CPU backends only).
KERNEL_ROWS = [
    # class_counts: shapes and dtypes
    ("cc-acts-1d", lambda bk: CC(acts(bk)[:, 0], labels(bk), 4, backend=bk), ValueError, r"acts must be 2-D.*\(12,\)"),
    ("cc-acts-3d", lambda bk: CC(acts(bk).reshape(12, 3, 1), labels(bk), 4, backend=bk),
     ValueError, r"acts must be 2-D.*\(12, 3, 1\)"),
    ("cc-acts-0d", lambda bk: CC(acts(bk)[0, 0], labels(bk), 4, backend=bk), ValueError, r"acts must be 2-D.*0-D"),
    ("cc-acts-complex", lambda bk: CC(acts(bk, dtype=torch.complex64), labels(bk), 4, backend=bk),
     TypeError, r"acts has dtype complex64"),
    ("cc-acts-int64", lambda bk: CC(acts(bk, dtype=torch.int64), labels(bk), 4, backend=bk),
     TypeError, r"acts has dtype int64"),
    ("host-cc-acts-object", lambda bk: CC(np.array([[1.0, None]] * 12, dtype=object), labels(bk).numpy(), 4,
                                          backend=bk), TypeError, r"acts has dtype object"),
    ("host-cc-acts-strings", lambda bk: CC(np.array([["a", "b"]] * 12), labels(bk).numpy(), 4, backend=bk),
     TypeError, r"acts has dtype <U1"),
    ("cc-acts-none", lambda bk: CC(None, labels(bk), 4, backend=bk), TypeError, r"acts must be .*got NoneType"),
    ("cc-acts-list", lambda bk: CC([[1.0, 2.0]] * 12, labels(bk), 4, backend=bk), TypeError, r"acts must be .*got list"),
    ("cc-labels-none", lambda bk: CC(acts(bk), None, 4, backend=bk), TypeError, r"labels must be .*got NoneType"),
    ("cc-labels-2d", lambda bk: CC(acts(bk), labels(bk).reshape(12, 1), 4, backend=bk),
     ValueError, r"labels must be 1-D.*\(12, 1\)"),
    ("cc-labels-float", lambda bk: CC(acts(bk), labels(bk).double(), 4, backend=bk),
     TypeError, r"labels has dtype float64"),
    ("cc-labels-bool", lambda bk: CC(acts(bk), labels(bk) > 1, 4, backend=bk), TypeError, r"labels has dtype bool"),
    ("host-cc-labels-strings", lambda bk: CC(acts(bk).numpy(), np.array(["0"] * 12), 4, backend=bk),
     TypeError, r"labels has dtype <U1"),
    ("cc-labels-short", lambda bk: CC(acts(bk), labels(bk, s=11), 4, backend=bk),
     ValueError, r"labels has 11 entries but acts has 12 samples"),
    ("cc-labels-long", lambda bk: CC(acts(bk, s=3), labels(bk), 4, backend=bk),
     ValueError, r"labels has 12 entries but acts has 3 samples"),
    ("cc-labels-empty", lambda bk: CC(acts(bk), labels(bk)[:0], 4, backend=bk),
     ValueError, r"labels has 0 entries but acts has 12 samples"),
    # labels out of range
    ("cc-label-negative", lambda bk: CC(acts(bk), with_label(bk, 5, -1), 4, backend=bk),
     ValueError, r"labels\[5\] = -1 is outside \[0, num_classes=4\)"),
    ("cc-label-eq-C", lambda bk: CC(acts(bk), with_label(bk, 2, 4), 4, backend=bk),
     ValueError, r"labels\[2\] = 4 is outside \[0, num_classes=4\)"),
    ("cc-label-huge", lambda bk: CC(acts(bk), with_label(bk, 0, 2**40), 4, backend=bk),
     ValueError, r"labels\[0\] = 1099511627776 is outside"),
    # num_classes
    ("cc-C-0", lambda bk: CC(acts(bk), labels(bk), 0, backend=bk), ValueError, r"num_classes must be .*got 0$"),
    ("cc-C-negative", lambda bk: CC(acts(bk), labels(bk), -4, backend=bk), ValueError, r"num_classes .*got -4$"),
    ("cc-C-float", lambda bk: CC(acts(bk), labels(bk), 4.0, backend=bk), TypeError, r"num_classes .*got 4\.0"),
    ("cc-C-bool", lambda bk: CC(acts(bk), labels(bk), True, backend=bk), TypeError, r"num_classes .*got True"),
    ("cc-C-str", lambda bk: CC(acts(bk), labels(bk), "4", backend=bk), TypeError, r"num_classes .*got '4'"),
    ("cc-C-none", lambda bk: CC(acts(bk), labels(bk), None, backend=bk), TypeError, r"num_classes .*got None"),
    ("cc-C-huge", lambda bk: CC(acts(bk), labels(bk), 10**30, backend=bk),
     ValueError, r"num_classes must be in .*got 10{30}"),
    ("cc-C-below-labels", lambda bk: CC(acts(bk), labels(bk), 2, backend=bk),
     ValueError, r"labels\[2\] = 2 is outside \[0, num_classes=2\)"),
    # out
    ("cc-out-float", lambda bk: CC(acts(bk), labels(bk), 4, out=torch.zeros(4, 3, device=_dev(bk)), backend=bk),
     TypeError, r"out has dtype float32"),
    ("cc-out-shape", lambda bk: CC(acts(bk), labels(bk), 4,
                                   out=torch.zeros(3, 4, dtype=torch.int64, device=_dev(bk)), backend=bk),
     ValueError, r"out has shape \(3, 4\) but the counts are .* \(4, 3\)"),
    ("cc-out-strided", lambda bk: CC(acts(bk), labels(bk), 4,
                                     out=torch.zeros(4, 6, dtype=torch.int64, device=_dev(bk))[:, ::2], backend=bk),
     ValueError, r"out must be C-contiguous"),
    ("host-cc-out-read-only", lambda bk: CC(acts(bk).numpy(), labels(bk).numpy(), 4, out=readonly_out(), backend=bk),
     ValueError, r"out is read-only"),
    ("cc-out-list", lambda bk: CC(acts(bk), labels(bk), 4, out=[[0] * 3] * 4, backend=bk),
     TypeError, r"out must be .*got list"),
    # threads, strategy, backend
    ("cc-threads-0", lambda bk: CC(acts(bk), labels(bk), 4, threads=0, backend=bk), ValueError, r"threads .*got 0$"),
    ("cc-threads-negative", lambda bk: CC(acts(bk), labels(bk), 4, threads=-1, backend=bk),
     ValueError, r"threads .*got -1$"),
    ("cc-threads-str", lambda bk: CC(acts(bk), labels(bk), 4, threads="2", backend=bk),
     TypeError, r"threads .*got '2'"),
    ("cc-threads-bool", lambda bk: CC(acts(bk), labels(bk), 4, threads=True, backend=bk),
     TypeError, r"threads .*got True"),
    ("cc-strategy-foo", lambda bk: CC(acts(bk), labels(bk), 4, strategy="foo", backend=bk),
     ValueError, r"strategy must be .*got 'foo'"),
    ("cc-backend-nope", lambda bk: CC(acts(bk), labels(bk), 4, backend="nope"),
     ValueError, r"backend must be one of .*got 'nope'"),
    ("cc-backend-list", lambda bk: CC(acts(bk), labels(bk), 4, backend=[bk]),
     (TypeError, ValueError), r"backend must be .*got \["),
    ("cc-check-finite-str", lambda bk: CC(acts(bk), labels(bk), 4, check_finite="no", backend=bk),
     TypeError, r"check_finite must be True or False, got 'no'"),
    # pack_masks
    ("pm-acts-1d", lambda bk: PM(acts(bk)[:, 0], backend=bk), ValueError, r"acts must be 2-D.*\(12,\)"),
    ("pm-acts-complex", lambda bk: PM(acts(bk, dtype=torch.complex128), backend=bk),
     TypeError, r"acts has dtype complex128"),
    ("host-pm-acts-object", lambda bk: PM(np.zeros((4, 2), dtype=object), backend=bk),
     TypeError, r"acts has dtype object"),
    ("pm-acts-none", lambda bk: PM(None, backend=bk), TypeError, r"acts must be .*got NoneType"),
    ("pm-threads-0", lambda bk: PM(acts(bk), threads=0, backend=bk), ValueError, r"threads .*got 0$"),
    ("pm-threads-str", lambda bk: PM(acts(bk), threads="2", backend=bk), TypeError, r"threads .*got '2'"),
    ("pm-backend-nope", lambda bk: PM(acts(bk), backend="nope"), ValueError, r"backend must be one of .*got 'nope'"),
    # packed_class_counts
    ("pcc-packed-float", lambda bk: PCC(packed(bk).float(), labels(bk), 4, backend=bk),
     TypeError, r"packed has dtype float32"),
    ("pcc-packed-1d", lambda bk: PCC(packed(bk)[0], labels(bk), 4, backend=bk), ValueError, r"packed must be 2-D"),
    ("pcc-packed-width", lambda bk: PCC(packed(bk, s=70), labels(bk), 4, backend=bk),
     ValueError, r"packed has 16 bytes per node but 12 labels need .* = 8"),
    ("pcc-packed-none", lambda bk: PCC(None, labels(bk), 4, backend=bk), TypeError, r"packed must be .*NoneType"),
    ("pcc-labels-float", lambda bk: PCC(packed(bk), labels(bk).float(), 4, backend=bk),
     TypeError, r"labels has dtype float32"),
    ("pcc-label-negative", lambda bk: PCC(packed(bk), with_label(bk, 3, -2), 4, backend=bk),
     ValueError, r"labels\[3\] = -2 is outside \[0, num_classes=4\)"),
    ("pcc-C-0", lambda bk: PCC(packed(bk), labels(bk), 0, backend=bk), ValueError, r"num_classes .*got 0$"),
    ("pcc-C-float", lambda bk: PCC(packed(bk), labels(bk), 2.5, backend=bk), TypeError, r"num_classes .*got 2\.5"),
    ("pcc-threads-negative", lambda bk: PCC(packed(bk), labels(bk), 4, threads=-1, backend=bk),
     ValueError, r"threads .*got -1$"),
    # mask_overlap
    ("mo-shapes", lambda bk: MO(packed(bk), packed(bk, n=4), 12, backend=bk),
     ValueError, r"^a has shape \(3, 8\) but b has \(4, 8\); pass one layer's$"),
    ("mo-width", lambda bk: MO(packed(bk), packed(bk), 70, backend=bk),
     ValueError, r"^a has 8 bytes per node but 70 samples need ceil\(70 / 64\) \* 8 = 16$"),
    ("mo-b-float", lambda bk: MO(packed(bk), packed(bk).float(), 12, backend=bk), TypeError, r"^b has dtype float32"),
    ("mo-b-none", lambda bk: MO(packed(bk), None, 12, backend=bk), TypeError, r"^b must be .*NoneType"),
    ("mo-samples-negative", lambda bk: MO(packed(bk), packed(bk), -1, backend=bk),
     ValueError, r"^samples must be >= 0, got -1$"),
    ("mo-samples-bool", lambda bk: MO(packed(bk), packed(bk), True, backend=bk),
     TypeError, r"^samples must be an int, got True$"),
    ("mo-samples-float", lambda bk: MO(packed(bk), packed(bk), 12.0, backend=bk),
     TypeError, r"^samples must be an int, got 12\.0$"),
    ("mo-labels-alone", lambda bk: MO(packed(bk), packed(bk), 12, labels=labels(bk), backend=bk),
     ValueError, r"^labels are given without num_classes"),
    ("mo-classes-alone", lambda bk: MO(packed(bk), packed(bk), 12, num_classes=4, backend=bk),
     ValueError, r"^num_classes=4 is given without labels"),
    ("mo-label-range", lambda bk: MO(packed(bk), packed(bk), 12, labels=with_label(bk, 3, 9), num_classes=4,
                                     backend=bk), ValueError, r"^labels\[3\] = 9 is outside \[0, num_classes=4\)$"),
    ("mo-labels-length", lambda bk: MO(packed(bk), packed(bk), 12, labels=labels(bk, s=11), num_classes=4,
                                       backend=bk), ValueError, r"^labels has 11 entries but a has 12 samples"),
    ("mo-classes-0", lambda bk: MO(packed(bk), packed(bk), 12, labels=labels(bk), num_classes=0, backend=bk),
     ValueError, r"num_classes must be in \[1, .*got 0$"),
    ("host-mo-libraries", lambda bk: MO(packed(bk), packed(bk).numpy(), 12, backend=bk),
     ValueError, r"^b is a numpy array on cpu but a is a torch array on cpu"),
    ("mo-threads-0", lambda bk: MO(packed(bk), packed(bk), 12, threads=0, backend=bk), ValueError, r"threads .*got 0$"),
    ("mo-backend-nope", lambda bk: MO(packed(bk), packed(bk), 12, backend="nope"),
     ValueError, r"backend must be one of .*got 'nope'"),
    # sample_popcounts
    ("sp-width", lambda bk: SP(packed(bk), 200, backend=bk),
     ValueError, r"^packed has 8 bytes per node but 200 samples need ceil\(200 / 64\) \* 8 = 32$"),
    ("sp-packed-int64", lambda bk: SP(packed(bk).long(), 12, backend=bk), TypeError, r"^packed has dtype int64"),
    ("sp-packed-1d", lambda bk: SP(packed(bk)[0], 12, backend=bk), ValueError, r"^packed must be 2-D"),
    ("sp-samples-negative", lambda bk: SP(packed(bk), -3, backend=bk), ValueError, r"^samples must be >= 0, got -3$"),
    ("sp-samples-str", lambda bk: SP(packed(bk), "12", backend=bk), TypeError, r"^samples must be an int, got '12'$"),
    ("sp-threads-0", lambda bk: SP(packed(bk), 12, threads=0, backend=bk), ValueError, r"threads .*got 0$"),
    # coactivation
    ("co-width", lambda bk: CO(packed(bk), 65, backend=bk),
     ValueError, r"^packed has 8 bytes per node but 65 samples need ceil\(65 / 64\) \* 8 = 16$"),
    ("co-packed-bool", lambda bk: CO(packed(bk).bool(), 12, backend=bk), TypeError, r"^packed has dtype bool"),
    ("co-samples-none", lambda bk: CO(packed(bk), None, backend=bk), TypeError, r"^samples must be an int, got None$"),
    ("co-threads-str", lambda bk: CO(packed(bk), 12, threads="2", backend=bk), TypeError, r"threads .*got '2'"),
    # node_metrics and layer_metrics (host arithmetic: every backend runs them on the host)
    ("nm-counts-1d", lambda bk: NM(counts()[0], SIZES[:1], backend=bk), ValueError, r"counts must be 2-D.*\(3,\)"),
    ("nm-counts-float", lambda bk: NM(counts().astype(float), SIZES, backend=bk),
     TypeError, r"counts must have an integer dtype.*float64"),
    ("nm-counts-complex", lambda bk: NM(counts().astype(complex), SIZES, backend=bk),
     TypeError, r"counts must have an integer dtype.*complex128"),
    ("nm-counts-object", lambda bk: NM(counts().astype(object), SIZES, backend=bk),
     TypeError, r"counts must have an integer dtype.*got object"),
    ("nm-counts-bool", lambda bk: NM(counts() > 0, SIZES, backend=bk), TypeError, r"counts must have an integer.*bool"),
    ("nm-counts-none", lambda bk: NM(None, SIZES, backend=bk), TypeError, r"counts must be .*NoneType"),
    ("nm-counts-list", lambda bk: NM(counts().tolist(), SIZES, backend=bk), TypeError, r"counts must be .*list"),
    ("nm-counts-negative", lambda bk: NM(counts() - 1, SIZES, backend=bk),
     ValueError, r"counts\[0, 2\] = -1 is negative"),
    ("nm-counts-exceed", lambda bk: NM(counts() * 2, SIZES, backend=bk),
     ValueError, r"counts\[0, 1\] = 4 exceeds class_sizes\[0\] = 3"),
    ("nm-sizes-negative", lambda bk: NM(np.zeros((2, 3), np.int64), np.array([-1, 4]), backend=bk),
     ValueError, r"class_sizes\[0\] = -1 is negative"),
    ("nm-sizes-length", lambda bk: NM(counts(), np.array([3, 3, 3]), backend=bk),
     ValueError, r"class_sizes has 3 entries but counts has 2 classes"),
    ("nm-sizes-float", lambda bk: NM(counts(), SIZES.astype(float), backend=bk),
     TypeError, r"class_sizes must have an integer dtype.*float64"),
    ("nm-sizes-2d", lambda bk: NM(counts(), SIZES.reshape(1, 2), backend=bk), ValueError, r"class_sizes must be 1-D"),
    ("nm-sizes-zero", lambda bk: NM(np.zeros((2, 3), np.int64), np.zeros(2, np.int64), backend=bk),
     ValueError, r"class_sizes sums to 0"),
    ("nm-empty-classes", lambda bk: NM(np.zeros((0, 3), np.int64), np.zeros(0, np.int64), backend=bk),
     ValueError, r"class_sizes sums to 0"),
    ("nm-sizes-uint64-huge", lambda bk: NM(counts(), np.array([3, 2**64 - 1], np.uint64), backend=bk),
     ValueError, r"class_sizes\[1\] = 18446744073709551615 does not fit in int64"),
    ("nm-threads-0", lambda bk: NM(counts(), SIZES, threads=0, backend=bk), ValueError, r"threads .*got 0$"),
    ("nm-threads-str", lambda bk: NM(counts(), SIZES, threads="2", backend=bk), TypeError, r"threads .*got '2'"),
    ("nm-backend-nope", lambda bk: NM(counts(), SIZES, backend="nope"), ValueError, r"backend must be .*got 'nope'"),
    ("lm-counts-float", lambda bk: LM(counts().astype(np.float32), SIZES, backend=bk),
     TypeError, r"counts must have an integer dtype.*float32"),
    ("lm-counts-exceed", lambda bk: LM(counts() + 3, SIZES, backend=bk),
     ValueError, r"counts\[0, 0\] = 4 exceeds class_sizes\[0\] = 3"),
    ("lm-sizes-negative", lambda bk: LM(np.zeros((2, 3), np.int64), np.array([4, -1]), backend=bk),
     ValueError, r"class_sizes\[1\] = -1 is negative"),
    ("lm-sizes-none", lambda bk: LM(counts(), None, backend=bk), TypeError, r"class_sizes must be .*NoneType"),
    ("lm-threads-negative", lambda bk: LM(counts(), SIZES, threads=-3, backend=bk), ValueError, r"threads .*got -3$"),
    ("lm-backend-nope", lambda bk: LM(counts(), SIZES, backend="nope"), ValueError, r"backend must be .*got 'nope'"),
]
# Inputs the kernels' entry (nnphases/kernels/__init__.py, _dispatch.py) takes without a check of its own.
KERNEL_XFAIL = {
}


@pytest.mark.parametrize("bk", KERNEL_BACKENDS)
@pytest.mark.parametrize("call, exc, rx", params(KERNEL_ROWS, KERNEL_XFAIL))
def test_kernels(request, call, exc, rx, bk):
    if request.node.callspec.id.split("-")[0] == "host" and _DEVICE[bk] == "cuda":
        pytest.skip("a NumPy input: CPU backends only")
    expect(lambda: call(bk), exc, rx)


# =============================================================================== Schedule
SCHEDULE_ROWS = [
    ("log-epochs-nan", lambda: Schedule.log(math.nan, 10), ValueError, r"epochs must be finite and >= 0, got nan"),
    ("log-epochs-inf", lambda: Schedule.log(math.inf, 10), ValueError, r"epochs must be finite and >= 0, got inf"),
    ("log-epochs-negative", lambda: Schedule.log(-1, 10), ValueError, r"epochs must be finite and >= 0, got -1"),
    ("log-epochs-str", lambda: Schedule.log("2", 10), TypeError, r"epochs must be a number, got '2'"),
    ("log-epochs-bool", lambda: Schedule.log(True, 10), TypeError, r"epochs must be a number, got True"),
    ("log-epochs-none", lambda: Schedule.log(None, 10), TypeError, r"epochs must be a number, got None"),
    ("log-epochs-huge", lambda: Schedule.log(1e300, 10), ValueError, r"epochs must give at most .*got 1e\+300"),
    ("log-spe-0", lambda: Schedule.log(1, 0), ValueError, r"steps_per_epoch must be >= 1, got 0"),
    ("log-spe-negative", lambda: Schedule.log(1, -5), ValueError, r"steps_per_epoch must be >= 1, got -5"),
    ("log-spe-float", lambda: Schedule.log(1, 10.0), TypeError, r"steps_per_epoch must be an integer, got 10\.0"),
    ("log-spe-str", lambda: Schedule.log(1, "10"), TypeError, r"steps_per_epoch must be an integer, got '10'"),
    ("log-spe-bool", lambda: Schedule.log(1, True), TypeError, r"steps_per_epoch must be an integer, got True"),
    ("log-spe-huge", lambda: Schedule.log(1, 2**64), ValueError, r"steps_per_epoch must be <= .*got 18446744073709551616"),
    ("log-per-decade-0", lambda: Schedule.log(1, 10, per_decade=0), ValueError, r"per_decade must be >= 1, got 0"),
    ("log-per-decade-negative", lambda: Schedule.log(1, 10, per_decade=-3),
     ValueError, r"per_decade must be >= 1, got -3"),
    ("log-per-decade-nan", lambda: Schedule.log(1, 10, per_decade=math.nan),
     TypeError, r"per_decade must be an integer, got nan"),
    ("log-per-decade-float", lambda: Schedule.log(1, 10, per_decade=2.5),
     TypeError, r"per_decade must be an integer, got 2\.5"),
    ("log-per-decade-str", lambda: Schedule.log(1, 10, per_decade="10"),
     TypeError, r"per_decade must be an integer, got '10'"),
    ("log-per-decade-bool", lambda: Schedule.log(1, 10, per_decade=True),
     TypeError, r"per_decade must be an integer, got True"),
    # would walk a billion grid points per decade
    ("log-per-decade-huge", lambda: Schedule.log(1, 1000, per_decade=10**9),
     ValueError, r"per_decade must be <= 1000, got 1000000000"),
    ("log-first-epoch-0", lambda: Schedule.log(1, 10, first_epoch=0), ValueError, r"first_epoch must be .*got 0"),
    ("log-first-epoch-negative", lambda: Schedule.log(1, 10, first_epoch=-0.1),
     ValueError, r"first_epoch must be .*got -0\.1"),
    ("log-first-epoch-nan", lambda: Schedule.log(1, 10, first_epoch=math.nan),
     ValueError, r"first_epoch must be .*got nan"),
    ("log-first-epoch-inf", lambda: Schedule.log(1, 10, first_epoch=math.inf),
     ValueError, r"first_epoch must be .*got inf"),
    ("log-first-epoch-str", lambda: Schedule.log(1, 10, first_epoch="0.1"),
     TypeError, r"first_epoch must be a number, got '0\.1'"),
    ("pow2-epochs-nan", lambda: Schedule.powers_of_two(math.nan, 10), ValueError, r"epochs must be .*got nan"),
    ("pow2-spe-0", lambda: Schedule.powers_of_two(1, 0), ValueError, r"steps_per_epoch must be >= 1, got 0"),
    ("last-step-epochs-inf", lambda: Schedule.last_step(math.inf, 3), ValueError, r"epochs must be .*got inf"),
    ("steps-decreasing", lambda: Schedule([0, 5, 3], 10),
     ValueError, r"steps must be strictly increasing, got steps\[1\] = 5, steps\[2\] = 3"),
    ("steps-repeated", lambda: Schedule([0, 5, 5], 10), ValueError, r"steps must be strictly increasing"),
    ("steps-negative", lambda: Schedule([-1, 5], 10), ValueError, r"steps\[0\] must be >= 0, got -1"),
    ("steps-float", lambda: Schedule([0, 1.5], 10), TypeError, r"steps\[1\] must be an integer, got 1\.5"),
    ("steps-str", lambda: Schedule("0123", 10), TypeError, r"steps must be an iterable of integers, got '0123'"),
    ("steps-none", lambda: Schedule(None, 10), TypeError, r"steps must be an iterable of integers, got None"),
    ("steps-huge", lambda: Schedule([0, 2**63], 10), ValueError, r"steps\[1\] must be <= .*got 9223372036854775808"),
    # an endless iterable: refused after MAX_STEPS + 1 items, not read forever
    ("steps-endless", lambda: Schedule(itertools.count(), 10), ValueError, r"steps must hold at most 100000 steps"),
    ("steps-spe-0", lambda: Schedule([0, 1], 0), ValueError, r"steps_per_epoch must be >= 1, got 0"),
    ("epoch-negative", lambda: Schedule([0, 1], 1).epoch(-1), ValueError, r"step must be >= 0, got -1"),
    ("next-after-str", lambda: Schedule([0, 1], 1).next_after("1"), TypeError, r"step must be an integer, got '1'"),
    ("log-steps-last-negative", lambda: log_steps(-1), ValueError, r"last must be >= 0, got -1"),
    ("log-steps-per-decade-huge", lambda: log_steps(10**6, per_decade=10**12),
     ValueError, r"per_decade must be <= 1000"),
    ("log-steps-first-0", lambda: log_steps(100, first=0), ValueError, r"first must be >= 1, got 0"),
    ("pow2-last-huge", lambda: powers_of_two(2**70), ValueError, r"last must be <= .*got 1180591620717411303424"),
    ("pow2-last-float", lambda: powers_of_two(8.0), TypeError, r"last must be an integer, got 8\.0"),
]


@pytest.mark.parametrize("call, exc, rx", params(SCHEDULE_ROWS))
def test_schedule(call, exc, rx):
    expect(call, exc, rx, limit=20)


# =============================================================================== Recorder and measures
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


X = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
Y = torch.arange(12) % 3
SCHED = Schedule.log(1, 10)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    return f


def rec(out: Path, eval_data: Any = None, *measures: Any, **kw: Any) -> Recorder:
    r = Recorder(kw.pop("model") if "model" in kw else tiny_model(), (X, Y) if eval_data is None else eval_data,
                 kw.pop("schedule", SCHED), kw.pop("out_", out), list(measures) if measures else None, **kw)
    return r


def measured(out: Path, eval_data: Any) -> None:
    r = rec(out, eval_data)
    r.maybe_measure(0)
    r.close()


def _gen():
    yield X, Y


# (id, call(out, a_file), exception, regex)
RECORDER_ROWS = [
    ("model-none", lambda o, f: rec(o, model=0), TypeError, r"model must be a torch.nn.Module, got int"),
    ("schedule-list", lambda o, f: rec(o, schedule=[0, 1]), TypeError, r"schedule must be .*Schedule, got list"),
    # eval_data
    ("eval-none", lambda o, f: Recorder(tiny_model(), None, SCHED, o), TypeError, r"eval_data must be .*got NoneType"),
    ("eval-str", lambda o, f: rec(o, "data"), TypeError, r"eval_data must be .*got str"),
    ("eval-tensor", lambda o, f: rec(o, X), TypeError, r"eval_data must be .*got Tensor"),
    ("eval-generator", lambda o, f: rec(o, _gen()), TypeError, r"eval_data is an iterator"),
    ("eval-x-list", lambda o, f: rec(o, (X.tolist(), Y)), TypeError, r"eval_data: x must be a tensor .*got list"),
    ("eval-y-float", lambda o, f: rec(o, (X, Y.float())), TypeError, r"eval_data labels must be integers.*float32"),
    ("eval-y-bool", lambda o, f: rec(o, (X, Y > 0)), TypeError, r"eval_data labels must be integers.*bool"),
    ("eval-y-complex", lambda o, f: rec(o, (X, Y.to(torch.complex64))), TypeError, r"eval_data labels.*complex64"),
    ("eval-y-strings", lambda o, f: rec(o, (X, ["a"] * 12)), TypeError, r"eval_data labels must be .*"),
    ("eval-y-onehot", lambda o, f: rec(o, (X, nn.functional.one_hot(Y, 3))),
     ValueError, r"eval_data labels must be 1-D class indices, got shape \(12, 3\) \(one-hot"),
    ("eval-lengths", lambda o, f: rec(o, (X, Y[:10])), ValueError, r"eval_data: y has 10 labels but x has 12 samples"),
    ("eval-empty", lambda o, f: rec(o, (X[:0], Y[:0])), ValueError, r"eval_data is empty"),
    ("eval-x-0d", lambda o, f: rec(o, (torch.tensor(1.0), Y[:1])), ValueError, r"eval_data: y has 1 labels but x has 0"),
    ("eval-y-negative", lambda o, f: rec(o, (X, Y - 1)), ValueError, r"eval_data labels must lie in \[0, 3\), got a label -1"),
    ("eval-y-too-big", lambda o, f: rec(o, (X, Y + 1)), ValueError, r"eval_data labels must lie in \[0, 3\), got a label 3"),
    ("eval-class-missing", lambda o, f: rec(o, (X, Y % 2)), ValueError, r"evaluation set has no samples of classes \[2\]"),
    ("eval-x-float64", lambda o, f: rec(o, (X.double(), Y)), TypeError, r"eval_data: x has dtype torch.float64"),
    ("eval-x-features", lambda o, f: rec(o, (torch.randn(12, 5), Y)),
     ValueError, r"eval_data: the model cannot take x .*\(5,\)"),
    ("eval-x-int", lambda o, f: rec(o, ((X * 10).long(), Y)),
     ValueError, r"eval_data: the model cannot take x .*torch.int64"),
    ("eval-stream-empty", lambda o, f: rec(o, []), ValueError, r"eval_data yielded no batches"),
    ("eval-stream-not-pairs", lambda o, f: rec(o, [X, X, X]), TypeError, r"eval_data batch 0 must be an \(x, y\) pair"),
    ("eval-stream-x-list", lambda o, f: rec(o, [(X.tolist(), Y)]), TypeError, r"eval_data batch 0: x must be a tensor"),
    ("eval-stream-y-out-of-range", lambda o, f: measured(o, [(X, Y + 1)]),
     ValueError, r"eval_data batch 0 labels must lie in \[0, 3\), got a label 3"),
    ("eval-stream-shapes", lambda o, f: measured(o, [(X, Y), (X[:, :3], Y)]),
     ValueError, r"eval_data batch 1: samples have shape \(3,\), the first batch's have \(4,\)"),
    ("train-y-float", lambda o, f: rec(o, train_data=(X, Y.float())), TypeError, r"train_data labels must be integers"),
    ("train-lengths", lambda o, f: rec(o, train_data=(X, Y[:3])), ValueError, r"train_data: y has 3 labels but x has 12"),
    # num_classes and class_sizes
    ("num-classes-0", lambda o, f: rec(o, num_classes=0), ValueError, r"num_classes must be >= 2, got 0"),
    ("num-classes-negative", lambda o, f: rec(o, num_classes=-3), ValueError, r"num_classes must be >= 2, got -3"),
    ("num-classes-float", lambda o, f: rec(o, num_classes=3.0), TypeError, r"num_classes must be an integer, got 3\.0"),
    ("num-classes-bool", lambda o, f: rec(o, num_classes=True), TypeError, r"num_classes must be an integer, got True"),
    ("num-classes-str", lambda o, f: rec(o, num_classes="3"), TypeError, r"num_classes must be an integer, got '3'"),
    ("num-classes-width", lambda o, f: rec(o, num_classes=4), ValueError, r"num_classes is 4 but the model's output has 3"),
    ("num-classes-huge", lambda o, f: rec(o, num_classes=10**30), ValueError, r"num_classes must be <= .*got 10{30}"),
    ("class-sizes-length", lambda o, f: rec(o, class_sizes=[4, 4]), ValueError, r"class_sizes must be 3 integers, got \[4, 4\]"),
    ("class-sizes-float", lambda o, f: rec(o, class_sizes=[4.0, 4.0, 4.0]), ValueError, r"class_sizes must be 3 integers"),
    ("class-sizes-str", lambda o, f: rec(o, class_sizes="444"), ValueError, r"class_sizes must be 3 integers, got '444'"),
    ("class-sizes-differ", lambda o, f: rec(o, class_sizes=[3, 4, 5]),
     ValueError, r"class_sizes \[3, 4, 5\] differ from eval_data's labels \[4, 4, 4\]"),
    ("class-sizes-zero", lambda o, f: rec(o, [(X, Y)], class_sizes=[0, 6, 6]),
     ValueError, r"has no samples of classes \[0\]"),
    ("class-sizes-negative", lambda o, f: rec(o, [(X, Y)], class_sizes=[-4, 8, 8]),
     ValueError, r"class_sizes\[0\] = -4 is negative"),
    # out
    ("out-file", lambda o, f: rec(o, out_=f), ValueError, r"out '.*a-file' exists and is not a folder"),
    ("out-under-file", lambda o, f: rec(o, out_=f / "run"), ValueError, r"out '.*a-file/run': .*a-file' is a file"),
    ("out-none", lambda o, f: rec(o, out_=None), TypeError, r"out must be a path, got None"),
    ("out-int", lambda o, f: rec(o, out_=5), TypeError, r"out must be a path, got 5"),
    ("out-long-name", lambda o, f: rec(o, out_=o.parent / LONG), ValueError, r"out '.*x{300}': .*longer than 255 bytes"),
    ("out-empty", lambda o, f: rec(o, out_=""), ValueError, r"out must name a folder, got ''"),
    # measures
    ("measures-one", lambda o, f: Recorder(tiny_model(), (X, Y), SCHED, o, SampleSets()), TypeError, r"measures must be a list of measures, got SampleSets"),
    ("measures-str", lambda o, f: Recorder(tiny_model(), (X, Y), SCHED, o, "SampleSets"),
     TypeError, r"measures must be a list of measures, got str"),
    ("measures-non-measure", lambda o, f: rec(o, None, SampleSets(), "eval"),
     TypeError, r"measures\[1\] must be a nnphases.recording.measures.Measure, got str"),
    ("measures-class", lambda o, f: rec(o, None, SampleSets, EvalStats()),
     TypeError, r"measures\[0\] must be a nnphases.recording.measures.Measure, got (type|ABCMeta)"),
    ("measures-duplicate", lambda o, f: rec(o, None, SampleSets(), EvalStats(), SampleSets()),
     ValueError, r"measures: \['sample_sets'\] given more than once"),
    ("measures-no-sample-sets", lambda o, f: rec(o, None, EvalStats()), ValueError, r"measures must include SampleSets"),
    ("measures-empty", lambda o, f: Recorder(tiny_model(), (X, Y), SCHED, o, []),
     ValueError, r"measures must include SampleSets"),
    ("measures-unknown-site", lambda o, f: rec(o, None, SampleSets(sites=("relu9",))),
     ValueError, r"count_sites: no ReLU site named \['relu9'\]"),
    ("measures-no-site", lambda o, f: rec(o, None, SampleSets(sites=())), ValueError, r"count_sites must name at least"),
    ("measures-mask-site", lambda o, f: rec(o, None, SampleSets(), Masks(sites=("x",))),
     ValueError, r"mask_sites: no ReLU site named \['x'\]"),
    ("measures-probes-no-train", lambda o, f: rec(o, None, SampleSets(), Probes()), ValueError, r"[Pp]robes.*train"),
    # seed, config, options
    ("seed-negative", lambda o, f: rec(o, seed=-1), ValueError, r"seed must be >= 0, got -1"),
    ("seed-str", lambda o, f: rec(o, seed="1"), TypeError, r"seed must be an integer, got '1'"),
    ("config-str", lambda o, f: rec(o, config="cfg"), TypeError, r"config must be a dict, got str"),
    ("config-not-json", lambda o, f: rec(o, config={"a": object()}),
     TypeError, r"config must be JSON-ready.*object"),
    ("options-dict", lambda o, f: rec(o, options={"batch_size": 3}), TypeError, r"options must be RecorderOptions, got dict"),
]


@pytest.mark.parametrize("call, exc, rx", params(RECORDER_ROWS))
def test_recorder(call, exc, rx, out, a_file):
    expect(lambda: call(out, a_file), exc, rx)
    # A refused Recorder leaves no lock behind: the same folder takes a good one at once.
    if out.exists():
        rec(out).close()


OPTION_ROWS = [
    ("recorder-batch-0", lambda: RecorderOptions(batch_size=0), ValueError, r"batch_size must be >= 1, got 0"),
    ("recorder-batch-negative", lambda: RecorderOptions(batch_size=-5), ValueError, r"batch_size must be >= 1, got -5"),
    ("recorder-batch-float", lambda: RecorderOptions(batch_size=2.5), TypeError, r"batch_size must be an integer, got 2\.5"),
    ("recorder-batch-str", lambda: RecorderOptions(batch_size="10"), TypeError, r"batch_size must be an integer, got '10'"),
    ("recorder-batch-bool", lambda: RecorderOptions(batch_size=True), TypeError, r"batch_size must be an integer, got True"),
    ("recorder-background-str", lambda: RecorderOptions(background_writes="no"),
     TypeError, r"background_writes must be true or false, got 'no'"),
    ("recorder-check-plan-int", lambda: RecorderOptions(check_plan=0), TypeError, r"check_plan must be true or false, got 0"),
    ("recorder-unknown", lambda: RecorderOptions(batch=3), TypeError, r"unexpected keyword argument 'batch'"),
    ("sample-sets-per-channel-str", lambda: SampleSets(per_channel="yes"),
     TypeError, r"per_channel must be true or false, got 'yes'"),
    ("sample-sets-sites-str", lambda: SampleSets(sites="relu1"), TypeError, r"sites \(--count-sites\) must be a sequence"),
    ("sample-sets-sites-ints", lambda: SampleSets(sites=[1]), TypeError, r"sites \(--count-sites\)\[0\] must be a non-empty string, got 1"),
    ("sample-sets-backend", lambda: SampleSets(backend="nope"), ValueError, r"backend must be one of .*got 'nope'"),
    ("sample-sets-node-tables", lambda: SampleSets(node_tables="some"), ValueError, r"node_tables must be one of .*got 'some'"),
    ("sample-sets-max-width-0", lambda: SampleSets(node_table_max_width=0), ValueError, r"node_table_max_width must be >= 1, got 0"),
    ("sample-sets-options-and-keywords", lambda: SampleSets(SampleSetsOptions(), per_channel=True),
     TypeError, r"SampleSets: pass options or keywords, not both"),
    ("sample-sets-wrong-options", lambda: SampleSets(MasksOptions()),
     TypeError, r"SampleSets options must be SampleSetsOptions, got MasksOptions"),
    ("sample-sets-unknown", lambda: SampleSets(per_chanel=True), TypeError, r"unexpected keyword argument 'per_chanel'"),
    ("masks-buffer-0", lambda: Masks(buffer_mib=0), ValueError, r"buffer_mib \(--mask-buffer-mib\) must be >= 1, got 0"),
    ("masks-buffer-huge", lambda: Masks(buffer_mib=2**40), ValueError, r"buffer_mib .*must be <= .*got 1099511627776"),
    ("masks-buffer-float", lambda: Masks(buffer_mib=1.5), TypeError, r"buffer_mib .*must be an integer, got 1\.5"),
    ("masks-backend", lambda: Masks(backend="gpu"), ValueError, r"backend \(--mask-backend\) must be one of .*got 'gpu'"),
    ("masks-sites-int", lambda: Masks(sites=5), TypeError, r"sites \(--mask-sites\) must be a sequence .*got 5"),
    ("probes-mode", lambda: Probes(mode="slow"), ValueError, r"mode \(--probe-mode\) must be one of .*got 'slow'"),
    ("probes-features-0", lambda: Probes(max_features=0), ValueError, r"max_features \(--probe-features\) must be >= 1, got 0"),
    ("probes-paper-layers-mode", lambda: Probes(paper_layers=("relu1",)),
     ValueError, r"paper_layers \['relu1'\] need fast and trained probes \(e.g. probe_mode 'fast\+code'\), got 'fast'"),
    ("probes-paper-layers-outside", lambda: Probes(mode="both", layers=("a",), paper_layers=("b",)),
     ValueError, r"paper_layers: \['b'\] are not among the probed sites \['a'\]"),
    ("probes-fast-str", lambda: Probes(fast="x"), TypeError, r"probes fast options must be a dict of keywords, got 'x'"),
    ("probes-fast-unknown", lambda: Probes(fast={"nope": 1}), TypeError, r"nope"),
    ("probes-decoder", lambda: Probes(decoder="mlp"), ValueError, r"decoder \(--probe-decoder\) must be one of .*got 'mlp'"),
    ("eval-stats-loss", lambda: EvalStats(loss_fn=5), TypeError, r"loss_fn must be callable .*got 5"),
    ("eval-stats-options", lambda: EvalStats(EvalStatsOptions(), loss_fn=len), TypeError, r"pass options or keywords"),
    ("probes-options-type", lambda: Probes({"mode": "fast"}), TypeError, r"Probes options must be ProbesOptions, got dict"),
]


@pytest.mark.parametrize("call, exc, rx", params(OPTION_ROWS))
def test_measure_and_recorder_options(call, exc, rx):
    expect(call, exc, rx)


# =============================================================================== store and runs readers
@pytest.fixture(scope="module")
def a_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the tiny model with masks: steps 0 and 1."""
    path = tmp_path_factory.mktemp("store") / "seed-0"
    r = Recorder(tiny_model(), (X, Y), Schedule([0, 1], 1), path, [SampleSets(), EvalStats(), Masks()])
    r.maybe_measure(0)
    r.maybe_measure(1)
    r.close()
    return path


# (id, call(run, tmp_path), exception, regex)
STORE_ROWS = [
    ("rundir-none", lambda r, t: RunDir(None), TypeError, r"path must be a path, got None"),
    ("rundir-int", lambda r, t: RunDir(3), TypeError, r"path must be a path, got 3"),
    ("rundir-missing-read", lambda r, t: RunDir(t / "nope").read_table(0, "layers"),
     ValueError, r"step 0 has no complete checkpoint in .*nope"),
    ("rundir-table-unknown", lambda r, t: RunDir(r).read_table(0, "nodez"), ValueError, r"table must be one of .*got 'nodez'"),
    ("rundir-table-none", lambda r, t: RunDir(r).read_table(0, None), ValueError, r"table must be one of .*got None"),
    ("rundir-step-missing", lambda r, t: RunDir(r).read_table(7, "layers"),
     ValueError, r"step 7 has no complete checkpoint in .*\(complete steps: \[0, 1\]\)"),
    ("rundir-step-negative", lambda r, t: RunDir(r).read_table(-1, "layers"), ValueError, r"step must be >= 0, got -1"),
    ("rundir-step-float", lambda r, t: RunDir(r).read_table(1.0, "layers"), TypeError, r"step must be an integer, got 1\.0"),
    ("rundir-step-str", lambda r, t: RunDir(r).read_table("1", "layers"), TypeError, r"step must be an integer, got '1'"),
    ("rundir-step-bool", lambda r, t: RunDir(r).read_table(True, "layers"), TypeError, r"step must be an integer, got True"),
    ("rundir-counts-step", lambda r, t: RunDir(r).read_counts(5), ValueError, r"step 5 has no complete checkpoint"),
    ("rundir-masks-layer", lambda r, t: RunDir(r).read_masks(0, "relu9"),
     ValueError, r"layer 'relu9' has no stored masks at step 0; stored: \['1'\]"),
    ("rundir-masks-samples-int", lambda r, t: RunDir(r).read_masks(0, "1", samples=5),
     ValueError, r"samples must be a slice start:stop, got 5"),
    ("rundir-masks-samples-step", lambda r, t: RunDir(r).read_masks(0, "1", samples=slice(0, 10, 2)),
     ValueError, r"samples must be a slice start:stop, got slice\(0, 10, 2\)"),
    ("rundir-masks-samples-float", lambda r, t: RunDir(r).read_masks(0, "1", samples=slice(0.5, 3)),
     TypeError, r"samples bounds must be integers, got slice\(0\.5, 3, None\)"),
    ("rundir-masks-nodes-out-of-range", lambda r, t: RunDir(r).read_masks(0, "1", nodes=[0, 99]),
     IndexError, r"nodes.*99|99"),
    ("rundir-config-missing", lambda r, t: RunDir(t / "nope").config, FileNotFoundError, r"config\.json"),
    ("rundir-checkpoint-path-str", lambda r, t: RunDir(r).checkpoint_path("0"), TypeError, r"step must be an integer, got '0'"),
    ("runs-missing", lambda r, t: runs.read_table(t / "nope", "layers"), ValueError, r"runs: '.*nope' does not exist"),
    ("runs-file", lambda r, t: runs.read_table(r / "DONE", "layers"), ValueError, r"runs: '.*DONE' is a file"),
    ("runs-empty-folder", lambda r, t: runs.read_table(t, "layers"),
     ValueError, r"runs: '.*' is neither a run directory nor a folder of run directories"),
    ("runs-empty-list", lambda r, t: runs.read_table([], "layers"), ValueError, r"runs must name at least one path"),
    ("runs-none", lambda r, t: runs.read_table(None, "layers"), TypeError, r"runs must be a path or a list of paths, got None"),
    ("runs-list-int", lambda r, t: runs.read_table([r, 5], "layers"), TypeError, r"runs\[1\] must be a path, got 5"),
    ("runs-bytes", lambda r, t: runs.read_table(b"/tmp", "layers"), TypeError, r"runs must be a path or a list of paths"),
    ("runs-table-unknown", lambda r, t: runs.read_table(r, "probe"), ValueError, r"table must be one of .*got 'probe'"),
    ("runs-damaged-option", lambda r, t: runs.read_table(r, "layers", damaged="ignore"),
     ValueError, r"damaged must be 'raise' or 'skip', got 'ignore'"),
    ("store-read-table-missing", lambda r, t: store.read_table(t / "nope", "stats"), ValueError, r"does not exist"),
    ("class-sizes-missing", lambda r, t: runs.class_sizes(t / "nope"), ValueError, r"run: '.*nope' is not a folder"),
    ("class-sizes-none", lambda r, t: runs.class_sizes(None), TypeError, r"run must be a path, got None"),
    ("class-sizes-no-checkpoint", lambda r, t: runs.class_sizes(t), ValueError, r"has no complete checkpoint"),
]


@pytest.mark.parametrize("call, exc, rx", params(STORE_ROWS))
def test_store_readers(call, exc, rx, a_run, tmp_path):
    expect(lambda: call(a_run, tmp_path), exc, rx)


def unpacked(packed: np.ndarray, samples: int) -> np.ndarray:
    return np.unpackbits(packed, axis=1, bitorder="little")[:, :samples]


def test_read_masks_never_returns_padding_as_samples(a_run):
    """The 12 samples' rows are stored padded to 64 bits. A range past the end, or counted from the end, is a
    range of the 12 samples (as a Python slice of them), never of the padding."""
    run = RunDir(a_run)
    whole = run.read_masks(0, "1")
    assert whole.shape[1] * 8 == 64
    want = unpacked(whole, 12)
    past = run.read_masks(0, "1", samples=slice(0, 40))
    np.testing.assert_array_equal(past, run.read_masks(0, "1", samples=slice(0, 12)))
    np.testing.assert_array_equal(unpacked(past, 12), want)
    np.testing.assert_array_equal(unpacked(run.read_masks(0, "1", samples=slice(-3, None)), 3), want[:, 9:])
    np.testing.assert_array_equal(unpacked(run.read_masks(0, "1", samples=slice(20, 30)), 0), want[:, :0])


# =============================================================================== data readers
def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes | None = None) -> bytes:
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    return head + (bytes(math.prod(dims)) if payload is None else payload)


def idx_folder(root: Path, images: bytes, labels: bytes, gz: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stem, raw in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        if gz:
            (root / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (root / stem).write_bytes(raw)
    return root


def write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


def small() -> data.Dataset:
    return data.synthetic(n=20, num_classes=2, shape=(1, 4, 4))


GOOD_IMAGES = idx_bytes(2051, (3, 28, 28))
GOOD_LABELS = idx_bytes(2049, (3,), bytes([0, 1, 2]))

# (id, call(tmp_path), exception, regex)
DATA_ROWS = [
    ("idx-missing", lambda t: data.read_idx(t / "nope"), FileNotFoundError, r"nope"),
    ("idx-folder", lambda t: data.read_idx(t), IsADirectoryError, r"Is a directory"),
    ("idx-empty", lambda t: data.read_idx(write(t / "f", b"")), ValueError, r"/f: 0 bytes, too short for an IDX header"),
    ("idx-garbage", lambda t: data.read_idx(write(t / "f", b"hello world, not IDX")), ValueError, r"/f: bad IDX magic"),
    ("idx-bad-type", lambda t: data.read_idx(write(t / "f", b"\x00\x00\x07\x01" + bytes(8))), ValueError, r"bad IDX magic"),
    ("idx-zero-dims", lambda t: data.read_idx(write(t / "f", b"\x00\x00\x08\x00")), ValueError, r"bad IDX magic"),
    ("idx-short-header", lambda t: data.read_idx(write(t / "f", b"\x00\x00\x08\x03" + bytes(5))),
     ValueError, r"truncated IDX header: 9 bytes, the 3 dimensions need 16"),
    ("idx-truncated", lambda t: data.read_idx(write(t / "f", GOOD_IMAGES[:-10])), ValueError, r"/f: truncated: 2342 data bytes"),
    ("idx-trailing", lambda t: data.read_idx(write(t / "f", GOOD_IMAGES + b"x")), ValueError, r"has trailing bytes"),
    # a header promising 2^96 bytes must be refused from its size, not allocated
    ("idx-huge-header", lambda t: data.read_idx(write(t / "f", idx_bytes(2051, (2**32 - 1,) * 3, b""))),
     ValueError, r"truncated: 0 data bytes"),
    ("idx-wrong-magic", lambda t: data.read_idx(write(t / "f", GOOD_LABELS), magic=2051),
     ValueError, r"IDX magic number is 2049, expected 2051"),
    ("idx-gz-garbage", lambda t: data.read_idx(write(t / "f.gz", b"\x1f\x8bnot gzip")), ValueError, r"not a valid gzip file"),
    ("idx-gz-truncated", lambda t: data.read_idx(write(t / "f.gz", gzip.compress(GOOD_IMAGES)[:40])),
     ValueError, r"not a valid gzip file"),
    ("idx-path-none", lambda t: data.read_idx(None), TypeError, r"path must be a path, got None"),
    ("mnist-missing-folder", lambda t: data.mnist(t / "nope"), FileNotFoundError, r"mnist: train-images.* not found in .*nope"),
    ("mnist-empty-folder", lambda t: data.mnist(t), FileNotFoundError, r"not found in"),
    ("mnist-root-file", lambda t: data.mnist(write(t / "f", b"x")), FileNotFoundError, r"not found in .*/f"),
    ("mnist-root-none", lambda t: data.mnist(None), TypeError, r"mnist root must be a folder, got None"),
    ("mnist-labels-missing", lambda t: data.mnist(_only_images(t)), FileNotFoundError, r"train-labels-idx1-ubyte\[\.gz\] not found"),
    ("mnist-count-mismatch", lambda t: data.mnist(idx_folder(t / "m", GOOD_IMAGES, idx_bytes(2049, (2,), bytes(2)))),
     ValueError, r"holds 3 images but .* holds 2 labels"),
    ("mnist-label-10", lambda t: data.mnist(idx_folder(t / "m", GOOD_IMAGES, idx_bytes(2049, (3,), bytes([0, 10, 1])))),
     ValueError, r"label 10 outside \[0, 10\)"),
    ("mnist-images-are-labels", lambda t: data.mnist(idx_folder(t / "m", GOOD_LABELS, GOOD_LABELS)),
     ValueError, r"IDX magic number is 2049, expected 2051"),
    ("mnist-gz-garbage", lambda t: data.mnist(_spoiled(t)), ValueError, r"not a valid gzip file"),
    ("fashion-missing", lambda t: data.fashion_mnist(t / "nope"), FileNotFoundError, r"fashion-mnist: .* not found"),
    ("cifar10-missing", lambda t: data.cifar10(t), FileNotFoundError, r"cifar10: data_batch_1\.bin.* not found"),
    ("cifar10-root-none", lambda t: data.cifar10(None), TypeError, r"cifar10 root must be a folder, got None"),
    ("cifar10-truncated", lambda t: data.cifar10(_cifar_files(t, 3073 * 2 - 1)), ValueError,
     r"data_batch_1\.bin: 6145 bytes is not a positive multiple of the 3073-byte record size"),
    ("cifar10-empty", lambda t: data.cifar10(_cifar_files(t, 0)), ValueError, r"0 bytes is not a positive multiple"),
    ("cifar10-label", lambda t: data.cifar10(_cifar_files(t, 3073, label=10)), ValueError, r"label 10 outside \[0, 10\)"),
    ("cifar100-label-kind", lambda t: data.cifar100(t, label="mid"), ValueError, r"label must be 'fine' or 'coarse', got 'mid'"),
    ("cifar100-root-none", lambda t: data.cifar100(None), TypeError, r"cifar100 root must be a folder, got None"),
    ("split-holdout-0", lambda t: data.stratified_split(torch.arange(10) % 2, 0), ValueError, r"holdout=0 must be in \(0, len\(y\)=10\)"),
    ("split-holdout-all", lambda t: data.stratified_split(torch.arange(10) % 2, 10), ValueError, r"holdout=10 must be in"),
    ("split-holdout-negative", lambda t: data.stratified_split(torch.arange(10) % 2, -2), ValueError, r"holdout=-2"),
    ("split-holdout-float", lambda t: data.stratified_split(torch.arange(10) % 2, 2.5), TypeError, r"holdout must be an int, got 2\.5"),
    ("split-holdout-bool", lambda t: data.stratified_split(torch.arange(10) % 2, True), TypeError, r"got True"),
    ("split-y-float", lambda t: data.stratified_split(torch.ones(10), 2), ValueError, r"y must be 1-D integer labels, got float32"),
    ("split-y-negative", lambda t: data.stratified_split(torch.tensor([0, -1, 0, 1]), 2), ValueError, r"negative label -1"),
    ("resize-0", lambda t: data.resize(small(), 0), ValueError, r"resize size must be .*got 0"),
    ("resize-huge", lambda t: data.resize(small(), 30000), ValueError, r"resize size must be .*4096.*got 30000"),
    ("resize-float", lambda t: data.resize(small(), 32.0), ValueError, r"resize size must be .*got 32\.0"),
    ("resize-batch-0", lambda t: data.resize(small(), 8, batch=0), ValueError, r"resize batch must be positive, got 0"),
    ("resize-batch-str", lambda t: data.resize(small(), 8, batch="8"), TypeError, r"resize batch must be a positive int, got '8'"),
    ("resize-not-dataset", lambda t: data.resize(torch.zeros(2, 1, 4, 4), 8), TypeError, r"resize ds must be a Dataset, got Tensor"),
    ("synthetic-n-0", lambda t: data.synthetic(n=0), ValueError, r"synthetic n=0 must be an int >= num_classes=10"),
    ("synthetic-classes-1", lambda t: data.synthetic(num_classes=1), ValueError, r"num_classes must be an int >= 2, got 1"),
    ("synthetic-shape", lambda t: data.synthetic(shape=(1, 0, 8)), ValueError, r"shape must be three positive ints"),
    ("two-attribute-n-odd", lambda t: data.two_attribute(n=5), ValueError, r"n=5 must be an even int"),
    ("two-attribute-fraction-nan", lambda t: data.two_attribute(large_fraction=math.nan), ValueError, r"large_fraction=nan"),
    ("two-attribute-fraction-str", lambda t: data.two_attribute(large_fraction="0.9"),
     TypeError, r"large_fraction must be a number, got '0\.9'"),
    ("two-attribute-separation-inf", lambda t: data.two_attribute(separation=math.inf),
     ValueError, r"separation=inf must be"),
    ("two-attribute-noise-inf", lambda t: data.two_attribute(noise=math.inf), ValueError, r"noise=inf must be"),
    ("two-attribute-noise-negative", lambda t: data.two_attribute(noise=-1), ValueError, r"noise=-1 must be >= 0"),
    ("two-attribute-weak-0", lambda t: data.two_attribute(weak=0), ValueError, r"weak=0 must be in \(0, 1\]"),
    ("dataset-x-dtype", lambda t: data.Dataset(torch.zeros(2, 1, 2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.int64),
                                               2, "d"), ValueError, r"Dataset x must be a float32 tensor"),
    ("dataset-labels-range", lambda t: data.Dataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 5]), 2, "d"),
     ValueError, r"Dataset y has labels in \[0, 5\], outside \[0, num_classes=2\)"),
    ("subset-out-of-range", lambda t: small().subset([0, 99]), ValueError, r"subset idx has values in \[0, 99\], outside \[0, 20\)"),
    ("subset-float", lambda t: small().subset(torch.tensor([0.5])), ValueError, r"subset idx must be 1-D integer indices"),
]


def _only_images(t: Path) -> Path:
    root = t / "m"
    root.mkdir()
    (root / "train-images-idx3-ubyte").write_bytes(GOOD_IMAGES)
    return root


def _spoiled(t: Path) -> Path:
    root = idx_folder(t / "m", GOOD_IMAGES, GOOD_LABELS, gz=True)
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08 not a gzip stream")
    return root


def _cifar_files(t: Path, size: int, label: int = 0) -> Path:
    root = t / "cifar-10-batches-bin"
    root.mkdir()
    for i in range(1, 6):
        raw = bytearray(size)
        if size:
            raw[0] = label
        (root / f"data_batch_{i}.bin").write_bytes(bytes(raw))
    return t


@pytest.mark.parametrize("call, exc, rx", params(DATA_ROWS))
def test_data_readers(call, exc, rx, tmp_path):
    expect(lambda: call(tmp_path), exc, rx)


# =============================================================================== command line
runner = CliRunner()


def cli(*args: str) -> Any:
    with time_limit(60):
        return runner.invoke(app, list(args))


def one_line_error(r: Any, rx: str) -> str:
    text = (r.stderr if r.stderr_bytes is not None else r.output).strip()
    assert "Traceback" not in r.output, r.output[-3000:]
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert not r.stdout.strip(), f"an error printed more than its line:\n{r.stdout}"
    assert r.exit_code == 2, r.output[-2000:]
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"not one line:\n{text}"
    assert re.search(rx, lines[0]), f"{lines[0]!r} does not match {rx!r}"
    return lines[0]


# (id, args(tmp_path, a_file), regex)
CLI_ROWS = [
    ("run-batch-0", lambda t, f: ["run", "--batch", "0"], r"^nnphases run: error: --batch must be >= 1, got 0$"),
    ("run-batch-negative", lambda t, f: ["run", "--batch", "-5"], r"--batch must be >= 1, got -5"),
    ("run-batch-abc", lambda t, f: ["run", "--batch", "abc"], r"--batch.*'abc'"),
    ("run-batch-float", lambda t, f: ["run", "--batch", "2.5"], r"--batch.*'2\.5'"),
    ("run-batch-huge", lambda t, f: ["run", "--batch", str(10**30)], r"--batch must be <= .*got 10{30}"),
    ("run-epochs-inf", lambda t, f: ["run", "--epochs", "inf"], r"--epochs must be a finite number, got inf"),
    ("run-epochs-nan", lambda t, f: ["run", "--epochs", "nan"], r"--epochs must be a finite number, got nan"),
    ("run-epochs-0", lambda t, f: ["run", "--epochs", "0"], r"--epochs must be > 0, got 0"),
    ("run-epochs-overflow", lambda t, f: ["run", "--epochs", "1e400"], r"--epochs must be a finite number, got (inf|'?1e400)"),
    ("run-epochs-abc", lambda t, f: ["run", "--epochs", "abc"], r"--epochs.*'abc'"),
    ("run-lr-0", lambda t, f: ["run", "--lr", "0"], r"--lr must be > 0, got 0"),
    ("run-lr-negative", lambda t, f: ["run", "--lr", "-1e-3"], r"--lr must be > 0, got -0\.001"),
    ("run-device-foo", lambda t, f: ["run", "--device", "foo"], r"--device must be auto, cpu, cuda or cuda:<index>, got 'foo'"),
    ("run-device-cuda-index", lambda t, f: ["run", "--device", "cuda:x"], r"--device must be .*got 'cuda:x'"),
    ("run-resize-30000", lambda t, f: ["run", "--resize", "30000"], r"--resize must be <= 4096, got 30000"),
    ("run-resize-0", lambda t, f: ["run", "--resize", "0"], r"--resize must be >= 1, got 0"),
    ("run-train-eval-negative", lambda t, f: ["run", "--train-eval", "-5"], r"--train-eval must be >= 0, got -5"),
    ("run-per-decade-huge", lambda t, f: ["run", "--per-decade", "1000000000"], r"--per-decade must be <= 1000, got 1000000000"),
    ("run-per-decade-0", lambda t, f: ["run", "--per-decade", "0"], r"--per-decade must be >= 1, got 0"),
    ("run-first-epoch-nan", lambda t, f: ["run", "--first-epoch", "nan"], r"--first-epoch must be a finite number, got nan"),
    ("run-holdout-1", lambda t, f: ["run", "--holdout", "1"], r"--holdout must be >= 2, got 1"),
    ("run-holdout-too-many", lambda t, f: ["run", "--dataset", "synthetic", "--holdout", "5000"],
     r"--holdout must be below the dataset's 3000 samples, got 5000"),
    ("run-eval-batch-0", lambda t, f: ["run", "--eval-batch", "0"], r"--eval-batch must be >= 1, got 0"),
    ("run-width-0", lambda t, f: ["run", "--width", "0"], r"--width must be >= 1, got 0"),
    ("run-depth-huge", lambda t, f: ["run", "--depth", "100000"], r"--depth must be <= 1000, got 100000"),
    ("run-loss", lambda t, f: ["run", "--loss", "l1"], r"--loss must be one of 'ce', 'mse'; got 'l1'"),
    ("run-model", lambda t, f: ["run", "--model", "gpt"], r"--model must be one of .*got 'gpt'"),
    ("run-dataset", lambda t, f: ["run", "--dataset", "imagenet"], r"--dataset must be one of .*got 'imagenet'"),
    ("run-schedule", lambda t, f: ["run", "--schedule", "linear"], r"--schedule must be one of .*got 'linear'"),
    ("run-optimizer", lambda t, f: ["run", "--optimizer", "lbfgs"], r"--optimizer must be one of .*got 'lbfgs'"),
    ("run-seeds-abc", lambda t, f: ["run", "--seeds", "a,b"], r"--seeds must be comma-separated integers, got 'a,b'"),
    ("run-seeds-negative", lambda t, f: ["run", "--seeds", "-1"], r"--seeds.*>= 0, got -1"),
    ("run-seeds-repeated", lambda t, f: ["run", "--seeds", "1,1"], r"--seeds must be distinct, got \[1, 1\]"),
    ("run-preset", lambda t, f: ["run", "--preset", "nope"], r"--preset|unknown preset 'nope'"),
    ("run-unknown-option", lambda t, f: ["run", "--widht", "3"], r"--widht"),
    ("run-probe-mode-off", lambda t, f: ["run", "--probe-mode", "paper"], r"--probe-mode set options of the probes measure"),
    ("run-probes-no-train", lambda t, f: ["run", "--probes", "--train-eval", "0"], r"train_eval must be >= 1|--train-eval"),
    ("run-count-sites-empty", lambda t, f: ["run", "--count-sites", ","], r"--count-sites must be a comma-separated list, got ','"),
    ("run-mask-backend", lambda t, f: ["run", "--keep-masks", "--mask-backend", "x"],
     r"^nnphases run: error: --mask-backend must be one of .*got 'x'$"),
    ("run-backend", lambda t, f: ["run", "--backend", "gpu"], r"^nnphases run: error: --backend must be one of .*got 'gpu'$"),
    ("run-mask-buffer-0", lambda t, f: ["run", "--keep-masks", "--mask-buffer-mib", "0"], r"--mask-buffer-mib must be >= 1, got 0"),
    ("run-mnist-no-root", lambda t, f: ["run", "--dataset", "mnist"], r"--dataset 'mnist' needs data_root \(--data-root\)"),
    ("run-data-root-missing", lambda t, f: ["run", "--dataset", "mnist", "--data-root", str(t / "nope")],
     r"mnist: data_root \(--data-root\) '.*nope' does not exist"),
    ("run-data-root-file", lambda t, f: ["run", "--dataset", "mnist", "--data-root", str(f)],
     r"mnist: data_root \(--data-root\) '.*a-file' is a file, not a folder"),
    ("run-data-root-synthetic", lambda t, f: ["run", "--dataset", "synthetic", "--data-root", str(t)],
     r"--data-root '.*' is not read by dataset 'synthetic'"),
    ("run-out-file", lambda t, f: ["run", "--out", str(f)], r"--out '.*a-file' exists and is not a folder"),
    ("run-out-under-file", lambda t, f: ["run", "--out", str(f / "sub")], r"--out '.*a-file/sub': .*a-file' is a file"),
    ("run-out-long", lambda t, f: ["run", "--out", str(t / LONG)], r"--out '.*x{300}': .*longer than 255 bytes"),
    ("run-out-read-only", lambda t, f: ["run", "--out", str(_read_only(t) / "run")], r"--out '.*': .*cannot be written"),
    ("run-resume-missing", lambda t, f: ["run", "--resume", str(t / "nope")], r"--resume '.*nope' does not exist"),
    ("run-resume-file", lambda t, f: ["run", "--resume", str(f)], r"--resume '.*a-file' is a file, not a run folder"),
    ("run-resume-empty", lambda t, f: ["run", "--resume", str(t)], r"--resume|has no run\.json"),
    ("run-resume-and-options", lambda t, f: ["run", "--resume", str(t), "--batch", "3"],
     r"--resume continues a run with its stored options; drop --batch"),
    ("plan-batch-0", lambda t, f: ["plan", "--batch", "0"], r"^nnphases plan: error: --batch must be >= 1, got 0$"),
    ("plan-out-file", lambda t, f: ["plan", "--out", str(f)], r"--out '.*a-file' exists and is not a folder"),
    ("plan-grid", lambda t, f: ["plan", "--preset", "source000-grid"], r"--preset source000-grid: plan one cell"),
    ("plan-device-foo", lambda t, f: ["plan", "--device", "tpu"], r"--device .*got 'tpu'"),
    ("plot-missing", lambda t, f: ["plot", str(t / "nope")], r"^nnphases plot: error: runs: '.*nope' does not exist$"),
    ("plot-file", lambda t, f: ["plot", str(f)], r"runs: '.*a-file' is a file"),
    ("plot-empty-folder", lambda t, f: ["plot", str(t)], r"is neither a run directory nor a folder"),
    ("plot-no-argument", lambda t, f: ["plot"], r"(?i)missing argument"),
    ("findings-missing", lambda t, f: ["findings", str(t / "nope")], r"^nnphases findings: error: runs: '.*nope' does not exist$"),
    ("findings-file", lambda t, f: ["findings", str(f)], r"is a file"),
    ("status-missing", lambda t, f: ["status", str(t / "nope")], r"^nnphases status: error: .*'.*nope'"),
    ("status-file", lambda t, f: ["status", str(f)], r"'.*a-file' is not a folder"),
    ("status-empty", lambda t, f: ["status", str(t)], r"holds no run\.json"),
    ("compact-missing", lambda t, f: ["compact", str(t / "nope")], r"^nnphases compact: error: runs: '.*nope' does not exist$"),
    ("compact-file", lambda t, f: ["compact", str(f)], r"is a file"),
    ("sweep-executor", lambda t, f: ["sweep", "--executor", "foo"], r"--executor must be local or slurm, got 'foo'"),
    ("sweep-parallel-0", lambda t, f: ["sweep", "--parallel", "0"], r"--parallel must be >= 1, got 0"),
    ("sweep-parallel-abc", lambda t, f: ["sweep", "--parallel", "abc"], r"--parallel.*'abc'"),
    ("sweep-grid-syntax", lambda t, f: ["sweep", "--grid", "depth"], r"--grid must be NAME=VALUE,VALUE,..., got 'depth'"),
    ("sweep-grid-unknown", lambda t, f: ["sweep", "--grid", "nope=1,2"], r"--grid nope: no such option"),
    ("sweep-grid-values", lambda t, f: ["sweep", "--grid", "depth=a,b"], r"--grid depth: values must be integers"),
    ("sweep-grid-range", lambda t, f: ["sweep", "--grid", "depth=0,1", "--out", str(t / "s")], r"depth must be >= 1, got 0"),
    ("sweep-slurm-without-executor", lambda t, f: ["sweep", "--slurm-time", "5"], r"--slurm-time need --executor slurm"),
    ("sweep-slurm-time-0", lambda t, f: ["sweep", "--executor", "slurm", "--slurm-time", "0"], r"--slurm-time.*>= 1, got 0"),
    ("sweep-slurm-option", lambda t, f: ["sweep", "--executor", "slurm", "--slurm-option", "novalue"],
     r"--slurm-option.*KEY=VALUE, got 'novalue'"),
    ("sweep-out-file", lambda t, f: ["sweep", "--out", str(f)], r"--out '.*a-file' exists and is not a folder"),
    ("sweep-batch-0", lambda t, f: ["sweep", "--batch", "0"], r"--batch must be >= 1, got 0"),
    ("single-layer-out-file", lambda t, f: ["single-layer", "--out", str(f)], r"--out '.*a-file' exists and is not a folder"),
    ("single-layer-out-long", lambda t, f: ["single-layer", "--out", str(t / LONG)], r"--out .*longer than 255 bytes"),
    ("theory-out-file", lambda t, f: ["theory", "--out", str(f)], r"--out '.*a-file' exists and is not a folder"),
    ("backends-argument", lambda t, f: ["backends", "extra"], r"(?i)unexpected extra argument"),
    ("bench-unknown-option", lambda t, f: ["bench", "--fast"], r"--fast"),
    ("no-such-command", lambda t, f: ["trian"], r"(?i)no such command 'trian'"),
]
CLI_MARKS = {"run-out-read-only": pytest.mark.skipif(ROOT, reason="root writes into read-only folders")}


def _read_only(t: Path) -> Path:
    d = t / "read-only"
    d.mkdir()
    d.chmod(0o555)
    return d


@pytest.mark.parametrize("args, rx", params(CLI_ROWS, CLI_MARKS))
def test_cli(args, rx, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    work = tmp_path / "work"
    work.mkdir()
    cwd = os.getcwd()
    os.chdir(work)  # default output folders (runs/<preset>) land here, never in the repository
    try:
        line = one_line_error(cli(*args(work, f)), rx)
    finally:
        os.chdir(cwd)
    assert line.startswith("nnphases"), line
    # refused before anything was written, except the folders the test made
    assert sorted(p.name for p in work.iterdir()) in ([], ["read-only"]), sorted(work.iterdir())


# Rows that would hang or take hours if a bound were missing: each runs as the real command, in a process of its
# own, under a time limit.
HANG_ROWS = [
    ("cli-per-decade-huge", ["run", "--per-decade", "1000000000"], r"--per-decade must be <= 1000, got 1000000000"),
    ("cli-epochs-huge", ["run", "--epochs", "1e300"], r"--epochs must be <= 1e\+06, got 1e\+300"),
    ("cli-batch-huge", ["run", "--batch", "999999999999999999999"], r"--batch must be <= .*got 999999999999999999999"),
    ("cli-first-epoch-tiny", ["plan", "--first-epoch", "1e-300", "--per-decade", "1000", "--epochs", "1e6",
                              "--dataset", "synthetic", "--holdout", "600"], r"."),
]


@pytest.mark.parametrize("args, rx", params(HANG_ROWS))
def test_cli_does_not_hang(args, rx, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-m", "nnphases", *args, "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, timeout=60, env=env, cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if rx == ".":  # a valid but extreme schedule: planned at once (thousands of steps), not looped over for hours
        lines = r.stdout.splitlines()
        assert r.returncode == 0 and lines[-2] == "fits" and lines[-1].startswith("time: "), r.stderr[-3000:]
        return
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and re.search(rx, lines[0]), r.stderr


def test_cli_controls():
    """Good input still works through the one-line error handling: help and a command exit 0 with their output."""
    r = cli("run", "--help")
    assert r.exit_code == 0 and "--batch" in r.output and "error" not in r.output
    r = cli("backends")
    assert r.exit_code == 0 and "automatic order on cpu" in r.output


def test_cli_names_a_failed_host_allocation_as_memory():
    """torch's CPU allocator refuses a model far larger than memory with a RuntimeError that does not say "out of
    memory"; the command line gives it as one line with the way out, not as a bug."""
    import typer

    from nnphases.cli import _clean_errors

    @_clean_errors
    def run_command() -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4398046511104 bytes. Error code 12 (Cannot allocate memory)")

    with pytest.raises(typer.Exit) as e:
        run_command()
    assert e.value.exit_code == 2
