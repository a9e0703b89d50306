"""GPU figures for the kernels, measured with CUDA events in one process: each kernel
and backend next to the device-to-device copy bandwidth and the best PyTorch composite,
all measured in the same run. Run on a machine with a GPU:
``python benchmarks/gpu_report.py [--quick] [--kernels counts,metrics]``. Results are
checked against the reference before they are timed.

The metric kernels (``--kernels metrics``) read int32 count tables the size of a
VGG-11 layer set (10 classes x 524,288 nodes) and of a 100-class one (100 x 131,072);
their "of copy" figure is the bytes of counts read per second over the copy bandwidth
(read + write) of the same run, for the whole call (host work and the one read-back
included) and for the kernels alone (from the profiler).

The popcount kernels on packed masks (``--kernels popcount``: ``mask_overlap``, ``sample_popcounts``,
``coactivation``, ``sample_agreement``) run on one layer's random masks (every padding bit random too), each
result checked exactly against the host's CPU backend first. ``mask_overlap`` and ``sample_popcounts`` are
measured as a share of the device's read bandwidth (a 1 GiB ``torch.sum``, reading only, in the same run);
``coactivation`` as a share of the integer popcount peak, in pairs of 64-bit words ANDed and popcounted per second
(the useful half, ``nodes (nodes + 1) / 2 x words``), the peak estimated from the device as SMs x the highest SM
clock x 8: 16 32-bit POPC per clock per SM (the rate assumed for compute capability 5.0 to 9.0; an estimate, not
a measurement, and the report says so), two of them per 64-bit word. ``sample_agreement`` (128 chosen samples) is
small enough to be latency: its milliseconds only.

``case``, ``metrics_case`` and ``popcount_case`` return :class:`Row` records (``scripts/device_check.py`` stores them
as JSON); ``Row.text()`` is the printed line."""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import nnphases.kernels as K


@dataclass(frozen=True)
class Row:
    """One timed line of the report: the input (``case``), what ran on it, the median seconds (None when it did
    not run, ``note`` saying why), the elements and input bytes one timing reads, and the copy bandwidth of the
    same run, against which ``of_copy`` is input bytes per second. Rows measured against another yardstick say
    which (``yardstick``: "read" bandwidth, "popcount peak"; ``copy_bw`` then holds its rate, and ``work`` names
    what ``nbytes`` counts: "B" bytes, "pw" pairs of words); ``copy_bw`` 0: no yardstick, milliseconds only."""

    case: str
    what: str
    seconds: float | None
    elements: int
    nbytes: int
    copy_bw: float
    unit: str = "act"
    note: str = ""
    yardstick: str = "copy"
    work: str = "B"

    @property
    def of_copy(self) -> float | None:
        """The share of the yardstick (the copy bandwidth unless the row names another)."""
        return self.nbytes / self.seconds / self.copy_bw if self.seconds and self.copy_bw else None

    def text(self) -> str:
        if self.seconds is None:
            return f"{self.case:34s} {self.what}: skipped ({self.note})"
        sec = self.seconds
        share = f" {self.of_copy:6.2f} of {self.yardstick}" if self.of_copy is not None else ""
        return (f"{self.case:34s} {self.what:26s} {sec * 1e3:9.3f} ms {self.elements / sec / 1e9:8.1f} "
                f"G{self.unit}/s {self.nbytes / sec / 1e9:8.1f} G{self.work}/s{share}")


def timed(fn, reps: int = 20, warmup: int = 3) -> float:
    """Median seconds of fn() over reps, timed with CUDA events after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return float(np.median(times))


def copy_bandwidth(nbytes: int) -> float:
    """Device-to-device copy, bytes read plus written per second."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(src)
    return 2 * nbytes / timed(lambda: dst.copy_(src))


def read_bandwidth(nbytes: int) -> float:
    """Bytes read per second by a sum over ``nbytes`` of float32 on the device: a reduction reads and writes
    almost nothing else, the yardstick of the memory-bound popcount kernels, which read and do not write."""
    x = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").normal_()
    return nbytes / timed(lambda: x.sum())


def sm_clock_hz() -> tuple[float | None, str]:
    """The device's highest SM clock and where it was read: nvidia-smi's clocks.max.sm, else torch's clock_rate."""
    index = torch.cuda.current_device()
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run([smi, "-i", str(index), "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=20)
            mhz = float(done.stdout.strip().splitlines()[0])
            if mhz > 0:
                return mhz * 1e6, "nvidia-smi clocks.max.sm"
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            pass
    khz = getattr(torch.cuda.get_device_properties(index), "clock_rate", 0) or 0
    if khz > 0:
        return khz * 1e3, "torch clock_rate"
    return None, "no SM clock found (nvidia-smi, torch)"


def popcount_peak() -> tuple[float | None, str]:
    """The integer popcount peak in pairs of 64-bit words ANDed and popcounted per second, and how it was
    estimated (see the module docstring): SMs x highest SM clock x 16 POPC per clock per SM / 2 per word."""
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    clock, source = sm_clock_hz()
    if clock is None:
        return None, source
    return sms * clock * 16 / 2, f"{sms} SMs x {clock / 1e9:.3f} GHz ({source}) x 16 POPC/clock/SM / 2 per word"


def popcount_tables(nodes: int, samples: int, classes: int, device: str, seed: int = 0) -> dict[str, Any]:
    """One layer's masks at two checkpoints (uint8 [nodes, ceil(samples / 64) * 8], b keeps about 3/4 of a's bits;
    every padding bit random, as stored masks may hold them), the labels of the samples and 128 chosen samples."""
    g = torch.Generator(device=device).manual_seed(seed)
    shape = (nodes, -(-samples // 64) * 8)

    def bits() -> torch.Tensor:
        return torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=g)

    a = bits()
    b = a ^ (bits() & bits())
    labels = torch.randint(0, classes, (samples,), device=device, generator=g)
    chosen = torch.randperm(samples, device=device, generator=g)[: min(128, samples)]
    return {"a": a, "b": b, "labels": labels, "classes": classes, "samples": samples, "chosen": chosen}


def popcount_calls(t: dict[str, Any], backend: str | None) -> dict[str, Callable[[], Any]]:
    """Each popcount kernel's call on the tables, by the name its rows carry; coactivation only up to 16,384 nodes
    (its result is nodes² x 8 bytes: 2 GiB there)."""
    a, b, s, c = t["a"], t["b"], t["samples"], t["classes"]
    calls = {
        "mask_overlap": lambda: K.mask_overlap(a, b, s, backend=backend),
        f"mask_overlap C={c}": lambda: K.mask_overlap(a, b, s, labels=t["labels"], num_classes=c, backend=backend),
        "sample_popcounts": lambda: K.sample_popcounts(a, s, backend=backend),
        "coactivation": lambda: K.coactivation(a, s, backend=backend),
        "sample_agreement": lambda: K.sample_agreement(a, s, t["chosen"], backend=backend),
    }
    if a.shape[0] > 16_384:
        del calls["coactivation"]
    return calls


def popcount_truth(t: dict[str, Any], backend: str | None = None) -> dict[str, np.ndarray]:
    """The results on host copies of the tables, by ``backend`` or the CPU's first (cpp, numba, the reference)."""
    host = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in t.items()}
    return {name: np.asarray(fn()) for name, fn in popcount_calls(host, backend).items()}


def check_popcounts(t: dict[str, Any], backend: str, want: dict[str, np.ndarray]) -> None:
    """Every popcount kernel of ``backend`` on the tables equals the truth exactly (AssertionError naming it)."""
    for name, fn in popcount_calls(t, backend).items():
        got = fn()
        got = got.cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
        assert got.dtype == np.int64 and np.array_equal(got, want[name]), f"{backend} {name} differs from the truth"


def popcount_case(nodes: int, samples: int, classes: int, read_bw: float, peak: float | None,
                  backends: list[str]) -> list[Row]:
    """The popcount kernels on one layer's random masks, checked, then timed: mask_overlap (both sets read) and
    sample_popcounts against the read bandwidth, coactivation against the popcount peak (None: no ratio)."""
    t = popcount_tables(nodes, samples, classes, "cuda")
    want = popcount_truth(t)
    name = f"{nodes}x{samples} masks"
    row_bytes = t["a"].shape[1]
    words = row_bytes // 8
    one_set = nodes * row_bytes
    pair_words = nodes * (nodes + 1) // 2 * words
    rows = []
    for b in backends:
        try:
            calls = popcount_calls(t, b)
            check_popcounts(t, b, want)
        except K.BackendError as e:
            rows.append(Row(name, f"popcount kernels {b}", None, nodes * samples, one_set, read_bw, note=str(e)))
            continue
        for what, fn in calls.items():
            sec = timed(fn, reps=5 if what == "coactivation" else 20)
            kernel, _, variant = what.partition(" ")
            label = f"{kernel} {b}" + (f" {variant}" if variant else "")  # the kernel and backend first, as elsewhere
            if kernel == "mask_overlap":
                row = Row(name, label, sec, 2 * nodes * samples, 2 * one_set, read_bw, "bit", yardstick="read")
            elif kernel == "sample_popcounts":
                row = Row(name, label, sec, nodes * samples, one_set, read_bw, "bit", yardstick="read")
            elif kernel == "coactivation":
                row = Row(name, label, sec, nodes * nodes, pair_words, peak or 0.0, "pair",
                          yardstick="popcount peak", work="pw")
            else:
                m = len(t["chosen"])
                row = Row(name, label, sec, m * m, m * nodes, 0.0, "pair", work="bit")
            rows.append(row)
            if b == "cuda":  # the kernels alone: a call's host work is as long as a 100 MB read on an H100
                kernel = {"mask_overlap": "nnp_mask_overlap_rows", "sample_popcounts": "nnp_sample_popcounts",
                          "coactivation": "popcount_gram_kernel", "sample_agreement": ""}.get(
                              what, "nnp_mask_overlap_classes")
                rows.append(Row(name, f"  {kernel or 'all kernels'} only", kernel_seconds(fn, kernel), row.elements,
                                row.nbytes, row.copy_bw, row.unit, yardstick=row.yardstick, work=row.work))
    return rows


def kernel_seconds(fn, name: str) -> float:
    """Device time of the kernels whose name contains `name` in one call, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    total = sum(e.device_time_total for e in prof.key_averages() if name in e.key)
    return total / 1e6


def torch_onehot(acts, labels, c):
    return (torch.nn.functional.one_hot(labels, c).T.to(torch.float32) @ (acts > 0).to(torch.float32)).to(torch.int64)


def torch_index_add(acts, labels, c):
    out = torch.zeros((c, acts.shape[1]), dtype=torch.int32, device=acts.device)
    return out.index_add_(0, labels, (acts > 0).to(torch.int32)).to(torch.int64)


def case(samples: int, nodes: int, classes: int, dtype: torch.dtype, copy_bw: float, backends: list[str],
         batches: int = 1) -> list[Row]:
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    acts = torch.randn((samples, nodes), device="cuda", generator=g).to(dtype)
    labels = torch.randint(0, classes, (samples,), device="cuda", generator=g)
    nbytes = acts.numel() * acts.element_size() * batches
    want = torch_index_add(acts, labels, classes) if samples * nodes < 2**31 else None
    name = f"{samples}x{nodes} {str(dtype).replace('torch.', '')} C={classes}" + (f" x{batches}" if batches > 1 else "")

    def line(label: str, sec: float) -> Row:
        return Row(name, label, sec, acts.numel() * batches, nbytes, copy_bw)

    for b in backends:
        fn = lambda: K.class_counts(acts, labels, classes, backend=b)  # noqa: E731
        got = fn()
        if want is not None:
            assert torch.equal(got, want), f"{b} class_counts differs from the reference on {name}"
        rows.append(line(f"class_counts {b}", timed(lambda: [fn() for _ in range(batches)])))
        fn_nc = lambda: K.class_counts(acts, labels, classes, backend=b, check_finite=False)  # noqa: E731
        rows.append(line(f"class_counts {b} nocheck", timed(lambda: [fn_nc() for _ in range(batches)])))
        fn_async = lambda: K.class_counts(acts, labels, classes, backend=b, check_finite=False,  # noqa: E731
                                          check_labels=False)
        rows.append(line(f"class_counts {b} async x10", timed(lambda: [fn_async() for _ in range(10 * batches)],
                                                             reps=10) / 10))
        if b == "cuda":
            rows.append(line("  class_counts_kernel only", kernel_seconds(fn, "class_counts_kernel")))
            rows.append(line("  whole call, all kernels", kernel_seconds(fn, "")))
        p = K.pack_masks(acts, backend=b, check_finite=False)
        if samples * nodes < 2**28:
            ref = K.pack_masks(acts.cpu(), backend="cpp", check_finite=False)
            assert torch.equal(p.cpu(), ref), f"{b} pack_masks differs on {name}"
        if b == "cuda":
            rows.append(line("  pack_masks_kernel only", kernel_seconds(
                lambda: K.pack_masks(acts, backend=b, check_finite=False), "pack_masks_kernel")))
        rows.append(line(f"pack_masks {b} async x10", timed(
            lambda: [K.pack_masks(acts, backend=b, check_finite=False) for _ in range(10 * batches)], reps=10) / 10))
        rows.append(line(f"pack_masks {b} nocheck", timed(lambda: [K.pack_masks(acts, backend=b, check_finite=False)
                                                                  for _ in range(batches)])))
        pc = K.packed_class_counts(p, labels, classes, backend=b)
        if want is not None:
            assert torch.equal(pc, want), f"{b} packed_class_counts differs on {name}"
        rows.append(line(f"packed_class_counts {b}", timed(lambda: K.packed_class_counts(p, labels, classes, backend=b),
                                                           reps=5)))
    if samples * nodes <= 2**28:
        rows.append(line("torch one_hot.T @ mask", timed(lambda: [torch_onehot(acts, labels, classes)
                                                                 for _ in range(batches)], reps=5)))
        rows.append(line("torch index_add_", timed(lambda: [torch_index_add(acts, labels, classes)
                                                           for _ in range(batches)], reps=5)))
    return rows


def count_table(classes: int, nodes: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int32 counts [classes, nodes] drawn binomially per node (activation rates spread over [0, 1], skewed
    towards the ends as trained ReLU layers are), with 2% dead and 1% always-active nodes."""
    rng = np.random.default_rng(seed)
    sizes = np.full(classes, per_class, np.int64)
    rate = rng.beta(0.5, 0.5, (classes, nodes))
    counts = rng.binomial(sizes[:, None], rate).astype(np.int32)
    pick = rng.permutation(nodes)
    counts[:, pick[: nodes // 50]] = 0
    counts[:, pick[nodes // 50: nodes // 50 + nodes // 100]] = sizes[:, None]
    return counts, sizes


def check_metrics(got, want, classes: int, what: str) -> None:
    """The bound tests/test_metric_kernels_gpu.py states: fractions and flags identical, entropies, p and u
    within 8 eps * max(1, log C), layer means within that plus 4 eps; NaN on the same nodes."""
    eps = float(np.finfo(np.float64).eps)
    bound = 8 * eps * max(1.0, math.log(classes))
    if isinstance(want, K.LayerMetrics):
        for name in ("nodes", "dead", "always_active"):
            assert getattr(got, name) == getattr(want, name), f"{what}: layer {name} differs"
        for name in ("fraction", "predictability", "informativeness"):
            g, w = getattr(got, name), getattr(want, name)
            assert (math.isnan(g) and math.isnan(w)) or abs(g - w) <= bound + 4 * eps, f"{what}: layer {name}"
        return
    for name in ("class_fraction", "fraction", "predictability", "informativeness", "h_z_given_y", "h_y_given_z",
                 "dead", "always_active"):
        g, w = getattr(got, name), getattr(want, name)
        g = g.cpu().numpy() if isinstance(g, torch.Tensor) else np.asarray(g)  # GPU results, or a CPU backend's
        if name in ("class_fraction", "fraction", "dead", "always_active"):
            assert np.array_equal(g, w, equal_nan=w.dtype != np.bool_), f"{what}: {name} differs"
            continue
        assert np.array_equal(np.isnan(g), np.isnan(w)), f"{what}: {name} NaN placement"
        ok = ~np.isnan(w)
        assert np.abs(g[ok] - w[ok]).max(initial=0.0) <= bound, f"{what}: {name} beyond 8 eps * log C"


def metrics_case(classes: int, nodes: int, per_class: int, copy_bw: float, backends: list[str]) -> list[Row]:
    from nnphases.kernels.metrics import layer_metrics_np, node_metrics_np

    counts_np, sizes = count_table(classes, nodes, per_class)
    counts = torch.from_numpy(counts_np).cuda()
    nbytes = counts.numel() * counts.element_size()
    want_nodes, want_layer = node_metrics_np(counts_np, sizes), layer_metrics_np(counts_np, sizes)
    name = f"{classes}x{nodes} int32 counts |S_c|={per_class}"
    rows = []

    def line(label: str, sec: float) -> Row:
        return Row(name, label, sec, counts.numel(), nbytes, copy_bw, unit="cnt")

    for b in backends:
        for kernel, want in (("layer_metrics", want_layer), ("node_metrics", want_nodes)):
            fn = lambda: getattr(K, kernel)(counts, sizes, backend=b)  # noqa: E731
            try:
                got = fn()
            except K.BackendError as e:
                rows.append(Row(name, f"{kernel} {b}", None, counts.numel(), nbytes, copy_bw, "cnt", str(e)))
                break
            check_metrics(got, want, classes, f"{b} {kernel} on {name}")
            rows.append(line(f"{kernel} {b}", timed(fn)))
            # Both kernels of the call (the per-node pass and the combining block), without the host's part.
            rows.append(line("  kernels only", kernel_seconds(fn, "node_metrics")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backends", default="cuda,cupy")
    ap.add_argument("--kernels", default="counts,metrics,popcount", help="counts (class_counts, pack_masks, "
                    "packed_class_counts), metrics (node_metrics, layer_metrics), popcount (mask_overlap, "
                    "sample_popcounts, coactivation, sample_agreement), comma-separated")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: GPU figures need a GPU")
    backends = args.backends.split(",")
    kernels = args.kernels.split(",")
    bw = copy_bandwidth(1 << 30)
    print(f"device: {torch.cuda.get_device_name()}, copy bandwidth (read+write): {bw / 1e9:.0f} GB/s")
    if "metrics" in kernels:
        tables = [(10, 524_288, 5000), (100, 131_072, 500)]
        for c, n, s in tables[:1] if args.quick else tables:
            for r in metrics_case(c, n, s, bw, backends):
                print(r.text(), flush=True)
    if "popcount" in kernels:
        read_bw = read_bandwidth(1 << 30)
        peak, how = popcount_peak()
        print(f"read bandwidth: {read_bw / 1e9:.0f} GB/s; popcount peak (estimated, not measured): "
              + (f"{peak / 1e9:.0f} G pair-words/s, {how}" if peak else f"unknown ({how})"))
        layers = [(4096, 100_000, 10), (300_000, 1000, 10)]
        for n, s, c in layers[:1] if args.quick else layers:
            for r in popcount_case(n, s, c, read_bw, peak, backends):
                print(r.text(), flush=True)
            torch.cuda.empty_cache()
    if "counts" not in kernels:
        return
    cases = [(60000, 4096, 10, torch.float32, 1), (60000, 4096, 100, torch.float32, 1),
             (60000, 4096, 10, torch.float16, 1), (60000, 4096, 10, torch.bfloat16, 1),
             (12000, 2880, 10, torch.float32, 1), (1000, 300000, 10, torch.float32, 1),
             (1000, 300000, 100, torch.float16, 1)]
    if args.quick:
        cases = cases[:3]
    for s, n, c, dt, nb in cases:
        for r in case(s, n, c, dt, bw, backends, nb):
            print(r.text(), flush=True)


if __name__ == "__main__":
    main()
