"""count_and_pack against the two kernels it fuses, on the reference backend: exact equality of the counts
and of the packed bytes, over the shape table of test_kernels, every dtype, layouts, non-finite values,
accumulation into a caller's table, thread counts, the narrow counters' flush and the tables too large to
count directly (where the counts and the masks take a pass each)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, case_seed, host, make_acts, make_labels, to_backend_pair
from test_kernels import DTYPES, LAYOUTS, SHAPE_IDS, SHAPES, layout

BACKENDS = backend_params("count_and_pack")


def expected(acts: torch.Tensor, labels: torch.Tensor, c: int) -> tuple[np.ndarray, np.ndarray]:
    counts = K.class_counts(acts, labels, c, backend="reference", check_finite=False).numpy()
    return counts, K.pack_masks(acts, backend="reference", check_finite=False).numpy()


def check(got: tuple, want: tuple[np.ndarray, np.ndarray]) -> None:
    counts, packed = (host(x) for x in got)
    np.testing.assert_array_equal(counts, want[0])
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, want[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_count_and_pack(backend, dtype, shape):
    s, n, c, absent = shape
    rng = np.random.default_rng(case_seed("count_and_pack", s, n, c, dtype))
    acts = make_acts(rng, s, n, dtype)
    labels = make_labels(rng, s, c, torch.int32 if s % 2 else torch.int64, absent)
    a, lab = to_backend_pair(acts, labels, backend)
    got = K.count_and_pack(a, lab, c, backend=backend)
    assert type(got[0]) is type(a) and type(got[1]) is type(a)
    assert host(got[0]).dtype == np.int64
    check(got, expected(acts, labels, c))


# (samples, nodes, classes, dtype, threads): threads 1 and 2 over sample ranges that are not whole 512-row
# lines; more than 65535 rows of one thread (the 16-bit counters flush); a table past the direct size.
CASES = [
    (1100, 37, 5, "float32", 1), (1100, 37, 5, "float32", 2), (513, 1000, 3, "float16", 2),
    (2047, 65, 9, "bfloat16", 2), (1537, 3, 2, "bool", 2), (999, 129, 4, "float64", 2),
    (70000, 5, 3, "float16", 1), (140000, 3, 2, "bool", 2), (70000, 4, 3, "float32", 1),
    (300, 2100, 1000, "float32", 2), (200, 2500, 1000, "bool", 1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[f"S{s}-N{n}-C{c}-{d}-t{t}" for s, n, c, d, t in CASES])
def test_count_and_pack_threads(backend, case):
    s, n, c, dtype, threads = case
    rng = np.random.default_rng(case_seed("threads", *case))
    acts = make_acts(rng, s, n, dtype)
    labels = make_labels(rng, s, c)
    a, lab = to_backend_pair(acts, labels, backend)
    check(K.count_and_pack(a, lab, c, backend=backend, threads=threads), expected(acts, labels, c))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "bool"])
def test_count_and_pack_layouts(backend, how, dtype):
    rng = np.random.default_rng(case_seed("layout", how, dtype))
    acts = make_acts(rng, 700, 77, dtype)
    labels = make_labels(rng, 700, 6)
    a, lab = to_backend_pair(layout(acts, how), labels, backend)
    check(K.count_and_pack(a, lab, 6, backend=backend), expected(acts, labels, 6))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("out_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_count_and_pack_accumulates(backend, out_dtype, dtype):
    """Batches added into one caller's table: the table is the one returned and holds the sum."""
    rng = np.random.default_rng(case_seed("out", str(out_dtype), dtype))
    acts = make_acts(rng, 1500, 130, dtype)
    labels = make_labels(rng, 1500, 7)
    a, lab = to_backend_pair(acts, labels, backend)
    out = torch.full((7, 130), 3, dtype=out_dtype)
    out = to_backend_pair(out, labels, backend)[0]
    packs = []
    for s in range(0, 1500, 600):
        got, packed = K.count_and_pack(a[s:s + 600], lab[s:s + 600], 7, out=out, backend=backend)
        assert got is out
        packs.append(host(packed))
    want_counts, _ = expected(acts, labels, 7)
    np.testing.assert_array_equal(host(out), want_counts + 3)
    for s, p in zip(range(0, 1500, 600), packs):
        np.testing.assert_array_equal(p, expected(acts[s:s + 600], labels[s:s + 600], 7)[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("where", [(0, 0), (1099, 36), (577, 20)], ids=["first", "last", "middle"])
def test_count_and_pack_nonfinite(backend, value, dtype, where):
    """check_finite raises wherever the value is; without it the value counts as z > 0 does."""
    rng = np.random.default_rng(case_seed("nonfinite", value, dtype, where))
    acts = make_acts(rng, 1100, 37, dtype)
    acts[where] = value
    labels = make_labels(rng, 1100, 5)
    a, lab = to_backend_pair(acts, labels, backend)
    with pytest.raises(K.NonFiniteError, match="count_and_pack"):
        K.count_and_pack(a, lab, 5, backend=backend)
    check(K.count_and_pack(a, lab, 5, backend=backend, check_finite=False), expected(acts, labels, 5))


def test_count_and_pack_validates_like_class_counts():
    acts = torch.randn(10, 4)
    with pytest.raises(ValueError, match="labels has 9 entries"):
        K.count_and_pack(acts, torch.zeros(9, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match=r"labels\[2\] = 3 is outside"):
        K.count_and_pack(acts, torch.tensor([0, 1, 3, 0, 0, 0, 0, 0, 0, 0]), 3)
    with pytest.raises(ValueError, match="out has shape"):
        K.count_and_pack(acts, torch.zeros(10, dtype=torch.int64), 3, out=torch.zeros((3, 5), dtype=torch.int64))
    with pytest.raises(TypeError, match="num_classes must be an int"):
        K.count_and_pack(acts, torch.zeros(10, dtype=torch.int64), 2.0)


@pytest.mark.parametrize("per_channel", [(False, False), (True, True), (False, True)], ids=["same", "same-pc", "diff"])
def test_recorder_reads_a_site_once_for_counts_and_masks(tmp_path, monkeypatch, per_channel):
    """A CPU Recorder keeping counts and masks of the same nodes takes both from count_and_pack; other node
    views keep the two kernels. The stored counts and masks are those of the kernels over the whole set."""
    from torch import nn

    from nnphases.recording.measures import Masks, SampleSets
    from nnphases.recording.recorder import Recorder, RecorderOptions
    from nnphases.recording.schedule import Schedule
    from nnphases.store import RunDir

    calls = {"count_and_pack": 0, "class_counts": 0, "pack_masks": 0}
    for name in calls:
        real = getattr(K, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(K, name, spy)
    adds = []
    real_add = K.ClassCounts.add
    monkeypatch.setattr(K.ClassCounts, "add", lambda self, a, lab: adds.append(a.shape) or real_add(self, a, lab))
    rng = np.random.default_rng(case_seed("recorder", per_channel))
    x = torch.from_numpy(rng.standard_normal((300, 1, 4, 4)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 300))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    counts_pc, masks_pc = per_channel
    rec = Recorder(model, (x, y), Schedule((0,), 1), tmp_path / "run",
                   [SampleSets(per_channel=counts_pc), Masks(per_channel=masks_pc, buffer_mib=1)],
                   options=RecorderOptions(batch_size=128, background_writes=False))
    rec.measure(0)
    rec.close()
    batches = 3
    if counts_pc == masks_pc:
        assert calls == {"count_and_pack": batches, "class_counts": 0, "pack_masks": 0} and adds == []
    else:
        # Counts through the site's ClassCounts: the public class_counts checks the first batch, whose layout
        # the later ones keep (the last batch is shorter, the same layout).
        assert calls == {"count_and_pack": 0, "class_counts": 1, "pack_masks": batches} and len(adds) == batches
    with torch.no_grad():
        z = model[1](model[0](x))
    view = {False: z.flatten(1), True: z.reshape(300, 4, -1).amax(2)}
    run = RunDir(tmp_path / "run")
    counts, _ = run.read_counts(0)
    (site,) = counts
    np.testing.assert_array_equal(counts[site], K.class_counts(view[counts_pc], y, 3, backend="reference").numpy())
    np.testing.assert_array_equal(run.read_masks(0)[site], K.pack_masks(view[masks_pc], backend="reference").numpy())
