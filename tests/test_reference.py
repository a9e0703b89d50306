"""The oracle itself: the reference backend against cases small enough to count by eye,
written out literally (signed zeros, denormals, infinities, NaN, bool, bfloat16, empty
classes, both label dtypes, pack_masks's bit layout), then the spec's hand-computable
metric cases on counts the reference produced."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nnphases.kernels as K

REF = dict(backend="reference")
NAN, INF = math.nan, math.inf

# Smallest positive denormal of each float dtype: active, and its negation inactive.
TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
LABEL_DTYPES = {"int32": torch.int32, "int64": torch.int64}


def zeros_and_denormals(tiny: float) -> list[list[float]]:
    return [
        [-0.0, 1.0, tiny, -tiny],     # active: 0 1 1 0   label 0
        [+0.0, -1.0, 2.0, 3.0],       # active: 0 0 1 1   label 1
        [0.5, 0.0, -0.0, 1e-3],       # active: 1 0 0 1   label 0
        [tiny, -2.0, 7.0, -0.0],      # active: 1 0 1 0   label 2
    ]


ZD_LABELS = [0, 1, 0, 2]
ZD_COUNTS = [  # 4 classes; class 3 has no sample, so its row is all zero
    [1, 1, 1, 1],
    [0, 0, 1, 1],
    [1, 0, 1, 0],
    [0, 0, 0, 0],
]


@pytest.mark.parametrize("labels_dtype", list(LABEL_DTYPES))
@pytest.mark.parametrize("dtype", list(TORCH))
@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_zeros_and_denormals(lib, dtype, labels_dtype):
    if lib == "numpy" and dtype == "bfloat16":
        pytest.skip("NumPy has no bfloat16")
    a = torch.tensor(zeros_and_denormals(TINY[dtype]), dtype=TORCH[dtype])
    assert a.view(SIGNED[a.element_size()])[0, 2] == 1, "the denormal must be the smallest one (bits == 1)"
    lab = torch.tensor(ZD_LABELS, dtype=LABEL_DTYPES[labels_dtype])
    if lib == "numpy":
        a, lab = a.numpy(), lab.numpy()
    got = K.class_counts(a, lab, 4, **REF)
    assert type(got) is type(a)
    got = np.asarray(got)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.array(ZD_COUNTS))


SIGNED = {2: torch.int16, 4: torch.int32, 8: torch.int64}
# Quiet-NaN bits (sign clear) and the sign bit, as the signed integers of each width.
QNAN = {"float16": 0x7E00, "bfloat16": 0x7FC0, "float32": 0x7FC00000, "float64": 0x7FF8000000000000}
SIGN = {"float16": -(1 << 15), "bfloat16": -(1 << 15), "float32": -(1 << 31), "float64": -(1 << 63)}

NONFINITE = [
    [INF, NAN, -INF],    # active: 1 0 0   label 1
    [NAN, INF, 1.0],     # active: 0 1 1   label 1
    [-INF, -NAN, INF],   # active: 0 0 1   label 0
]
NONFINITE_LABELS = [1, 1, 0]
NONFINITE_COUNTS = [[0, 0, 1], [1, 1, 1]]


@pytest.mark.parametrize("dtype", list(TORCH))
def test_infinities_and_nan_unchecked(dtype):
    a = torch.tensor(NONFINITE, dtype=TORCH[dtype])
    # NaNs written by their bits: a quiet NaN with the sign bit clear, one with it set
    ints = a.view(SIGNED[a.element_size()])
    ints[0, 1] = QNAN[dtype]
    ints[2, 1] = QNAN[dtype] | SIGN[dtype]
    assert torch.isnan(a[0, 1]) and torch.isnan(a[2, 1])
    assert torch.signbit(a[2, 1]) and not torch.signbit(a[0, 1])
    lab = torch.tensor(NONFINITE_LABELS)
    got = K.class_counts(a, lab, 2, check_finite=False, **REF)
    np.testing.assert_array_equal(got.numpy(), np.array(NONFINITE_COUNTS))
    packed = K.pack_masks(a, check_finite=False, **REF).numpy()
    # bits of samples 0, 1, 2 per node: node 0 = 0b001, node 1 = 0b010, node 2 = 0b110
    np.testing.assert_array_equal(packed[:, 0], np.array([0b001, 0b010, 0b110], np.uint8))


@pytest.mark.parametrize("dtype", list(TORCH))
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "+inf", "-inf"])
def test_nonfinite_checked(dtype, value):
    a = torch.tensor([[1.0, value], [2.0, -1.0]], dtype=TORCH[dtype])
    with pytest.raises(K.NonFiniteError):
        K.class_counts(a, torch.tensor([0, 1]), 2, **REF)
    with pytest.raises(K.NonFiniteError):
        K.pack_masks(a, **REF)


@pytest.mark.parametrize("labels_dtype", list(LABEL_DTYPES))
@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_bool(lib, labels_dtype):
    a = torch.tensor([[True, False], [True, True], [False, False]])
    lab = torch.tensor([0, 1, 1], dtype=LABEL_DTYPES[labels_dtype])
    if lib == "numpy":
        a, lab = a.numpy(), lab.numpy()
    got = np.asarray(K.class_counts(a, lab, 3, **REF))
    np.testing.assert_array_equal(got, np.array([[1, 0], [1, 1], [0, 0]]))


def test_bool_nonstandard_byte():
    """A bool byte other than 0 or 1 (made by a view) is still true, i.e. active."""
    a = np.array([[2, 0], [255, 1]], dtype=np.uint8).view(np.bool_)
    got = K.class_counts(a, np.array([0, 0], np.int32), 1, **REF)
    np.testing.assert_array_equal(got, np.array([[2, 1]]))


def test_bfloat16_rounding_sign():
    """bfloat16 values that round from float32: -1e-40 is a negative denormal (inactive),
    1e-40 a positive one (active), and 3.0e38 stays finite."""
    a = torch.tensor([[1e-40, -1e-40, 3.0e38, -3.0e38]], dtype=torch.float32).to(torch.bfloat16)
    assert torch.isfinite(a).all()
    got = K.class_counts(a, torch.tensor([0]), 1, **REF)
    np.testing.assert_array_equal(got.numpy(), np.array([[1, 0, 1, 0]]))


@pytest.mark.parametrize("labels_dtype", list(LABEL_DTYPES))
def test_empty_classes_and_shapes(labels_dtype):
    dt = np.dtype(labels_dtype)
    # every sample in class 2 of 5: rows 0, 1, 3, 4 are zero
    a = np.array([[1.0, -1.0, 2.0], [3.0, 0.0, -0.0]], np.float32)
    got = K.class_counts(a, np.array([2, 2], dt), 5, **REF)
    np.testing.assert_array_equal(got, np.array([[0, 0, 0], [0, 0, 0], [2, 0, 1], [0, 0, 0], [0, 0, 0]]))
    # no samples: all zero, shape [C, N]
    got = K.class_counts(np.zeros((0, 3), np.float32), np.zeros(0, dt), 4, **REF)
    assert got.shape == (4, 3) and got.dtype == np.int64 and not got.any()
    # no nodes
    got = K.class_counts(np.zeros((5, 0), np.float32), np.zeros(5, dt), 2, **REF)
    assert got.shape == (2, 0)


# --------------------------------------------------------------------- pack_masks layout
def test_pack_masks_bit_layout():
    s = 10
    a = np.zeros((s, 3), np.float32)
    a[[0, 9], 0] = 1.0                # node 0: samples 0 and 9
    a[1:9, 1] = 0.25                  # node 1: samples 1..8
    a[:, 2] = -1.0                    # node 2: none
    got = K.pack_masks(a, **REF)
    assert got.dtype == np.uint8 and got.shape == (3, 8)  # ceil(10 / 64) * 8
    np.testing.assert_array_equal(got, np.array([
        [0b00000001, 0b00000010, 0, 0, 0, 0, 0, 0],
        [0b11111110, 0b00000001, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ], np.uint8))


@pytest.mark.parametrize("s, width", [(0, 0), (1, 8), (63, 8), (64, 8), (65, 16), (128, 16), (129, 24)])
def test_pack_masks_width_and_zero_padding(s, width):
    a = np.ones((s, 2), np.float32)  # every sample active: the padding must stay zero
    got = K.pack_masks(a, **REF)
    assert got.shape == (2, width)
    full, rest = divmod(s, 8)
    want = np.zeros(width, np.uint8)
    want[:full] = 0xFF
    if rest:
        want[full] = (1 << rest) - 1
    np.testing.assert_array_equal(got, np.stack([want, want]))
    assert got.view("<u8").shape == (2, width // 8), "whole 64-bit words per row"


def test_pack_masks_word_is_little_endian():
    a = np.zeros((70, 1), np.float32)
    a[[0, 63, 64, 69], 0] = 1.0
    words = K.pack_masks(a, **REF).view("<u8")
    assert words.tolist() == [[(1 << 0) | (1 << 63), (1 << 0) | (1 << 5)]]


def test_packed_class_counts_by_hand():
    a = np.zeros((10, 3), np.float32)
    a[[0, 9], 0] = 1.0
    a[1:9, 1] = 0.25
    lab = np.array([0, 1, 1, 0, 2, 2, 2, 0, 1, 3], np.int32)
    want = np.array([[1, 2, 0], [0, 3, 0], [0, 3, 0], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(K.class_counts(a, lab, 5, **REF), want)
    np.testing.assert_array_equal(K.packed_class_counts(K.pack_masks(a, **REF), lab, 5, **REF), want)


@pytest.mark.parametrize("s", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("dtype", list(TORCH) + ["bool"])
def test_packed_equals_class_counts(dtype, s):
    rng = np.random.default_rng(s)
    if dtype == "bool":
        a = torch.from_numpy(rng.random((s, 13)) < 0.4)
    else:
        a = torch.from_numpy(rng.standard_normal((s, 13))).to(TORCH[dtype])
    lab = torch.from_numpy(rng.integers(0, 6, s))
    want = K.class_counts(a, lab, 7, **REF)
    np.testing.assert_array_equal(K.packed_class_counts(K.pack_masks(a, **REF), lab, 7, **REF).numpy(), want.numpy())
    # and both agree with a count written without the package
    act = (a.double() > 0).numpy() if dtype != "bool" else a.numpy()
    direct = np.array([[act[lab.numpy() == c, d].sum() for d in range(13)] for c in range(7)])
    np.testing.assert_array_equal(want.numpy(), direct)


# --------------------------------------------------------------------- the spec's metric checks
def half_classes(classes: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels; node 0 active for exactly the samples of the first half of the
    classes, node 1 for a fixed half of every class, node 2 dead, node 3 always active."""
    lab = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    s = lab.shape[0]
    a = np.full((s, 4), -1.0, np.float32)
    a[lab < classes // 2, 0] = 1.0
    a[np.tile(np.arange(per_class) < per_class // 2, classes), 1] = 1.0
    a[:, 3] = 0.5
    return a, lab


@pytest.mark.parametrize("classes", [2, 4, 10])
def test_spec_metrics_on_reference_counts(classes):
    a, lab = half_classes(classes, per_class=6)
    counts = K.class_counts(a, lab, classes, **REF)
    sizes = np.bincount(lab, minlength=classes)
    half = classes // 2
    np.testing.assert_array_equal(counts[:, 0], [6] * half + [0] * (classes - half))
    np.testing.assert_array_equal(counts[:, 1], [3] * classes)
    m = K.node_metrics(counts, sizes)
    # half the classes: p == 1, u == log 2 / log C
    assert m.predictability[0] == pytest.approx(1.0, abs=1e-12)
    assert m.informativeness[0] == pytest.approx(math.log(2) / math.log(classes), abs=1e-12)
    # an exact half of every class: p == 0, u == 0
    assert m.predictability[1] == pytest.approx(0.0, abs=1e-12)
    assert m.informativeness[1] == pytest.approx(0.0, abs=1e-12)
    # dead and always-active nodes: NaN p and u, flagged
    assert np.isnan(m.predictability[2:]).all() and np.isnan(m.informativeness[2:]).all()
    assert m.dead.tolist() == [False, False, True, False]
    assert m.always_active.tolist() == [False, False, False, True]
    np.testing.assert_array_equal(m.fraction, [0.5, 0.5, 0.0, 1.0])
    layer = K.layer_metrics(counts, sizes)
    assert layer.fraction == pytest.approx((0.5 + 0.5 + 1.0) / 3, abs=1e-15)  # the dead node left out
    assert layer.predictability == pytest.approx(0.5, abs=1e-12)
