"""Tests of nnphases.kernels.metrics against docs/metrics.md section 1.

Three independent checks: the spec's hand-computable cases, a deliberately
naive transcription of the spec's formulas (plain Python loops, float64),
and hypothesis properties (ranges, NaN placement, permutation invariance).
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnphases.kernels.metrics import (
    LayerMetrics,
    NodeMetrics,
    _sum_class_entropies,
    layer_metrics_np,
    node_metrics_np,
)

# No RuntimeWarning (0 log 0, 0/0, empty means) may escape the module.
pytestmark = pytest.mark.filterwarnings("error")

TOL = dict(rtol=1e-12, atol=1e-12)
NODE_FIELDS = [f.name for f in fields(NodeMetrics)]


# --------------------------------------------------------------------------
# The naive reference: the spec's formulas, transcribed term by term.
# --------------------------------------------------------------------------

def naive_node_metrics(counts: np.ndarray, class_sizes: np.ndarray) -> dict[str, np.ndarray]:
    num_classes, num_nodes = counts.shape
    sizes = [int(s) for s in class_sizes]
    total = sum(sizes)
    present = [c for c in range(num_classes) if sizes[c] > 0]
    num_present = len(present)
    out: dict[str, list] = {name: [] for name in NODE_FIELDS if name != "class_fraction"}
    class_fraction = np.full((num_classes, num_nodes), math.nan)
    for i in range(num_nodes):
        n = [int(counts[c, i]) for c in range(num_classes)]
        n_i = sum(n)
        for c in present:
            class_fraction[c, i] = n[c] / sizes[c]
        f_i = sum(class_fraction[c, i] for c in present) / num_present
        e = {}
        for c in range(num_classes):
            e[1, c] = n[c] / total
            e[0, c] = (sizes[c] - n[c]) / total
        h_zy = 0.0
        for c in range(num_classes):
            for z in (0, 1):
                if e[z, c] > 0:  # 0 log 0 = 0
                    h_zy -= e[z, c] * math.log(e[z, c] / (e[0, c] + e[1, c]))
        h_yz = 0.0
        for z in (0, 1):
            e_z = sum(e[z, x] for x in range(num_classes))
            for c in range(num_classes):
                if e[z, c] > 0:
                    h_yz -= e[z, c] * math.log(e[z, c] / e_z)
        dead, always = n_i == 0, n_i == total
        if dead or always:
            h_zy = h_yz = p = u = math.nan
        else:
            p = 1 - h_zy / math.log(2)
            u = 1 - h_yz / math.log(num_present) if num_present > 1 else math.nan
        for name, v in [("fraction", f_i), ("predictability", p), ("informativeness", u),
                        ("h_z_given_y", h_zy), ("h_y_given_z", h_yz),
                        ("dead", dead), ("always_active", always)]:
            out[name].append(v)
    result = {k: np.array(v, dtype=bool if k in ("dead", "always_active") else np.float64)
              for k, v in out.items()}
    result["class_fraction"] = class_fraction
    return result


def naive_layer_metrics(ref: dict[str, np.ndarray]) -> dict[str, float]:
    def mean(vals: list[float]) -> float:
        return sum(vals) / len(vals) if vals else math.nan

    num_nodes = ref["fraction"].shape[0]
    return {
        "fraction": mean([ref["fraction"][i] for i in range(num_nodes) if not ref["dead"][i]]),
        "predictability": mean([v for v in ref["predictability"] if not math.isnan(v)]),
        "informativeness": mean([v for v in ref["informativeness"] if not math.isnan(v)]),
        "nodes": num_nodes,
        "dead": int(sum(ref["dead"])),
        "always_active": int(sum(ref["always_active"])),
    }


def random_table(seed: int, num_classes: int, num_nodes: int, max_size: int,
                 absent: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts with every kind of node: random, dead, always active, class-pure."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size + 1, size=num_classes)
    sizes[rng.permutation(num_classes)[:absent]] = 0
    counts = np.floor(rng.random((num_classes, num_nodes)) * (sizes[:, None] + 1)).astype(np.int64)
    if num_nodes >= 4:
        counts[:, 0] = 0
        counts[:, 1] = sizes
        counts[:, 2] = np.where(np.arange(num_classes) % 2 == 0, sizes, 0)
        counts[:, 3] = sizes // 2
    return counts, sizes


def assert_node_close(got: NodeMetrics, ref: dict[str, np.ndarray]) -> None:
    for name in NODE_FIELDS:
        g, r = getattr(got, name), ref[name]
        assert g.shape == r.shape, name
        if g.dtype == bool:
            np.testing.assert_array_equal(g, r, err_msg=name)
        else:
            assert g.dtype == np.float64, name
            # assert_allclose also requires NaN at the same positions.
            np.testing.assert_allclose(g, r, err_msg=name, **TOL)


def assert_layer_close(got: LayerMetrics, ref: dict[str, float]) -> None:
    for name in ("nodes", "dead", "always_active"):
        assert getattr(got, name) == ref[name], name
        assert isinstance(getattr(got, name), int), name
    for name in ("fraction", "predictability", "informativeness"):
        np.testing.assert_allclose(getattr(got, name), ref[name], err_msg=name, **TOL)


# --------------------------------------------------------------------------
# Hand-computable cases of the spec.
# --------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 4, 10, 100], ids=lambda c: f"C={c}")
def test_half_the_classes_balanced(num_classes: int) -> None:
    sizes = np.full(num_classes, 50)
    first_half = np.where(np.arange(num_classes) < num_classes // 2, sizes, 0)
    every_other = np.where(np.arange(num_classes) % 2 == 1, sizes, 0)
    nm = node_metrics_np(np.stack([first_half, every_other], axis=1), sizes)
    np.testing.assert_allclose(nm.predictability, [1.0, 1.0], **TOL)
    np.testing.assert_allclose(nm.h_z_given_y, [0.0, 0.0], **TOL)
    umax = math.log(2) / math.log(num_classes)
    np.testing.assert_allclose(nm.informativeness, [umax, umax], **TOL)
    np.testing.assert_allclose(nm.fraction, [0.5, 0.5], **TOL)
    assert not nm.dead.any() and not nm.always_active.any()


@pytest.mark.parametrize("num_classes", [2, 10, 100], ids=lambda c: f"C={c}")
def test_random_half_of_every_class(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    size = 100_000
    sizes = np.full(num_classes, size)
    # Column 0: each sample active with probability 1/2; column 1: exactly half.
    counts = np.stack([rng.binomial(size, 0.5, num_classes), sizes // 2], axis=1)
    nm = node_metrics_np(counts, sizes)
    assert np.all(np.abs(nm.predictability) < 1e-3)
    assert np.all(np.abs(nm.informativeness) < 1e-3)
    np.testing.assert_allclose(nm.predictability[1], 0.0, atol=1e-12)
    np.testing.assert_allclose(nm.informativeness[1], 0.0, atol=1e-12)


@pytest.mark.parametrize("num_classes", [2, 3, 10], ids=lambda c: f"C={c}")
def test_dead_and_always_active(num_classes: int) -> None:
    sizes = np.arange(10, 10 + num_classes)
    normal = np.where(np.arange(num_classes) == 0, sizes, sizes // 3)
    counts = np.stack([np.zeros(num_classes, np.int64), sizes, normal], axis=1)
    nm = node_metrics_np(counts, sizes)
    np.testing.assert_array_equal(nm.dead, [True, False, False])
    np.testing.assert_array_equal(nm.always_active, [False, True, False])
    for name in ("predictability", "informativeness", "h_z_given_y", "h_y_given_z"):
        values = getattr(nm, name)
        assert np.isnan(values[:2]).all(), name
        assert np.isfinite(values[2]), name
    np.testing.assert_allclose(nm.fraction[:2], [0.0, 1.0], **TOL)

    lm = LayerMetrics.from_nodes(nm)
    assert lm == layer_metrics_np(counts, sizes)
    assert (lm.nodes, lm.dead, lm.always_active) == (3, 1, 1)
    # p[l], u[l] leave out both; f[l] leaves out the dead node only.
    np.testing.assert_allclose(lm.predictability, nm.predictability[2], **TOL)
    np.testing.assert_allclose(lm.informativeness, nm.informativeness[2], **TOL)
    np.testing.assert_allclose(lm.fraction, (1.0 + nm.fraction[2]) / 2, **TOL)


@pytest.mark.parametrize(
    "counts, sizes",
    [
        (np.zeros((3, 4), np.int64), [5, 6, 7]),
        (np.tile(np.array([[5], [6], [7]]), (1, 4)), [5, 6, 7]),
        (np.zeros((3, 0), np.int64), [5, 6, 7]),
    ],
    ids=["all-dead", "all-always-active", "no-nodes"],
)
def test_layer_without_defined_nodes_is_nan(counts: np.ndarray, sizes: list[int]) -> None:
    lm = layer_metrics_np(counts, np.array(sizes))
    assert math.isnan(lm.predictability) and math.isnan(lm.informativeness)
    all_always = counts.size and (counts == np.array(sizes)[:, None]).all()
    assert math.isnan(lm.fraction) != bool(all_always)
    assert lm.nodes == counts.shape[1]


def test_absent_class_is_left_out() -> None:
    # Class 1 has no samples: NaN row, out of f[i], and |C| counts 2 classes, so a
    # node separating the two present classes reaches u = 1.
    sizes = np.array([40, 0, 60])
    counts = np.array([[40, 10], [0, 0], [0, 30]])
    nm = node_metrics_np(counts, sizes)
    assert np.isnan(nm.class_fraction[1]).all()
    np.testing.assert_allclose(nm.fraction, [0.5, (0.25 + 0.5) / 2], **TOL)
    np.testing.assert_allclose(nm.predictability[0], 1.0, **TOL)
    np.testing.assert_allclose(nm.informativeness[0], 1.0, **TOL)
    assert_node_close(nm, naive_node_metrics(counts, sizes))


def test_single_present_class_gives_nan_informativeness() -> None:
    for sizes in (np.array([30]), np.array([0, 30, 0])):
        counts = np.zeros((sizes.shape[0], 3), np.int64)
        counts[sizes > 0] = [0, 15, 30]
        nm = node_metrics_np(counts, sizes)
        assert np.isnan(nm.informativeness).all()
        np.testing.assert_allclose(nm.predictability[1], 0.0, **TOL)
        np.testing.assert_allclose(nm.h_y_given_z[1], 0.0, **TOL)
        assert math.isnan(LayerMetrics.from_nodes(nm).informativeness)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint8, np.uint32, np.uint64])
def test_integer_dtypes_agree(dtype: type) -> None:
    counts, sizes = random_table(7, 5, 30, 100, absent=1)
    want = node_metrics_np(counts, sizes)
    got = node_metrics_np(counts.astype(dtype), sizes.astype(dtype))
    for name in NODE_FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_outputs_are_read_only_float64() -> None:
    counts, sizes = random_table(3, 4, 10, 20, absent=0)
    nm = node_metrics_np(counts, sizes)
    for name in NODE_FIELDS:
        a = getattr(nm, name)
        assert not a.flags.writeable, name
        assert a.dtype == (bool if name in ("dead", "always_active") else np.float64), name


# --------------------------------------------------------------------------
# Against the naive transcription.
# --------------------------------------------------------------------------

TABLES = [
    # (seed, classes, nodes, max class size, classes with no samples)
    (0, 1, 6, 20, 0),
    (1, 2, 9, 30, 0),
    (2, 3, 40, 5, 1),
    (3, 10, 60, 50, 0),
    (4, 10, 60, 50, 3),
    (5, 7, 200, 3, 2),
    (6, 4, 5, 2000, 0),  # few nodes, large classes: the per-element log path
    (7, 25, 30, 1000, 5),
    (8, 3, 4, 1, 1),
]


@pytest.mark.parametrize("seed, num_classes, num_nodes, max_size, absent", TABLES,
                         ids=[f"C={t[1]},N={t[2]},max|S_c|={t[3]},absent={t[4]}" for t in TABLES])
def test_matches_naive_transcription(seed: int, num_classes: int, num_nodes: int,
                                     max_size: int, absent: int) -> None:
    counts, sizes = random_table(seed, num_classes, num_nodes, max_size, absent)
    ref = naive_node_metrics(counts, sizes)
    nm = node_metrics_np(counts, sizes)
    assert_node_close(nm, ref)
    assert_layer_close(LayerMetrics.from_nodes(nm), naive_layer_metrics(ref))
    assert_layer_close(layer_metrics_np(counts, sizes), naive_layer_metrics(ref))


@pytest.mark.parametrize("seed, num_classes, num_nodes, max_size", [
    (0, 1, 50, 10), (1, 10, 500, 60), (2, 6, 40, 3000),
], ids=["C=1", "C=10", "large-classes"])
def test_entropy_table_and_log_paths_agree(seed: int, num_classes: int, num_nodes: int,
                                           max_size: int) -> None:
    counts, sizes = random_table(seed, num_classes, num_nodes, max_size, absent=0)
    np.testing.assert_allclose(_sum_class_entropies(counts, sizes, True),
                               _sum_class_entropies(counts, sizes, False), **TOL)


# --------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------

@st.composite
def count_tables(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    num_classes = draw(st.integers(1, 6))
    num_nodes = draw(st.integers(1, 8))
    sizes = draw(st.lists(st.integers(0, 40), min_size=num_classes, max_size=num_classes)
                 .filter(lambda s: sum(s) > 0))
    counts = [[draw(st.integers(0, s)) for _ in range(num_nodes)] for s in sizes]
    class_perm = draw(st.permutations(range(num_classes)))
    node_perm = draw(st.permutations(range(num_nodes)))
    return (np.array(counts, np.int64).reshape(num_classes, num_nodes), np.array(sizes, np.int64),
            class_perm, node_perm)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count_tables())
def test_properties(table: tuple[np.ndarray, np.ndarray, list[int], list[int]]) -> None:
    counts, sizes, class_perm, node_perm = table
    nm = node_metrics_np(counts, sizes)
    present = sizes > 0
    undefined = nm.dead | nm.always_active
    n_node = counts.sum(axis=0)
    np.testing.assert_array_equal(nm.dead, n_node == 0)
    np.testing.assert_array_equal(nm.always_active, n_node == sizes.sum())

    for name in ("predictability", "h_z_given_y", "h_y_given_z"):
        np.testing.assert_array_equal(np.isnan(getattr(nm, name)), undefined, err_msg=name)
    u_undefined = undefined | (np.count_nonzero(present) == 1)
    np.testing.assert_array_equal(np.isnan(nm.informativeness), u_undefined)
    for name in ("predictability", "informativeness"):
        v = getattr(nm, name)
        v = v[~np.isnan(v)]
        assert np.all((v >= -1e-12) & (v <= 1 + 1e-12)), (name, v)
    assert np.all((nm.fraction >= 0) & (nm.fraction <= 1))
    cf = nm.class_fraction
    assert np.isnan(cf[~present]).all()
    assert np.all((cf[present] >= 0) & (cf[present] <= 1))

    lm = LayerMetrics.from_nodes(nm)
    by_class = node_metrics_np(counts[class_perm], sizes[class_perm])
    for name in NODE_FIELDS:
        want = getattr(nm, name)[class_perm] if name == "class_fraction" else getattr(nm, name)
        np.testing.assert_allclose(getattr(by_class, name), want, err_msg=name, **TOL)
    assert_layer_close(LayerMetrics.from_nodes(by_class), lm.__dict__)

    by_node = node_metrics_np(counts[:, node_perm], sizes)
    for name in NODE_FIELDS:
        np.testing.assert_allclose(getattr(by_node, name), getattr(nm, name)[..., node_perm],
                                   err_msg=name, **TOL)
    assert_layer_close(LayerMetrics.from_nodes(by_node), lm.__dict__)


# --------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------

def _exceeding() -> tuple[np.ndarray, np.ndarray]:
    sizes = np.full(10, 100)
    counts = np.zeros((10, 20), np.int64)
    counts[3, 17] = 120
    counts[5, 2] = 101  # later in row-major order: the first offender is reported
    return counts, sizes


BAD_INPUTS = [
    ("counts-1d", np.zeros(4, np.int64), np.array([4]), ValueError, r"^counts must be 2-D"),
    ("counts-3d", np.zeros((2, 3, 4), np.int64), np.array([4, 4]), ValueError,
     r"^counts must be 2-D, got shape \(2, 3, 4\)"),
    ("class_sizes-2d", np.zeros((2, 3), np.int64), np.array([[4, 4]]), ValueError,
     r"^class_sizes must be 1-D"),
    ("class_sizes-0d", np.zeros((1, 3), np.int64), np.array(4), ValueError, r"^class_sizes must be 1-D"),
    ("length-mismatch", np.zeros((10, 3), np.int64), np.full(9, 5), ValueError,
     r"^class_sizes has 9 entries but counts has 10 classes \(rows\)$"),
    ("counts-float", np.zeros((2, 3)), np.array([4, 4]), TypeError,
     r"^counts must have an integer dtype .* got float64"),
    ("counts-bool", np.zeros((2, 3), bool), np.array([4, 4]), TypeError, r"^counts .* got bool"),
    ("class_sizes-float", np.zeros((2, 3), np.int64), np.array([4.0, 4.0]), TypeError,
     r"^class_sizes must have an integer dtype .* got float64"),
    ("counts-negative", np.array([[0, 0, 0], [0, 0, -1]]), np.array([4, 4]), ValueError,
     r"^counts\[1, 2\] = -1 is negative$"),
    ("class_sizes-negative", np.zeros((3, 2), np.int64), np.array([4, -3, 5]), ValueError,
     r"^class_sizes\[1\] = -3 is negative$"),
    ("count-exceeds", *_exceeding(), ValueError, r"^counts\[3, 17\] = 120 exceeds class_sizes\[3\] = 100$"),
    ("no-samples", np.zeros((3, 2), np.int64), np.zeros(3, np.int64), ValueError,
     r"^class_sizes sums to 0"),
    ("no-classes", np.zeros((0, 2), np.int64), np.zeros(0, np.int64), ValueError,
     r"^class_sizes sums to 0"),
    ("uint64-overflow", np.zeros((1, 2), np.uint64), np.array([2**63], np.uint64), ValueError,
     r"^class_sizes\[0\] = 9223372036854775808 does not fit in int64"),
]


@pytest.mark.parametrize("fn", [node_metrics_np, layer_metrics_np], ids=["node", "layer"])
@pytest.mark.parametrize("counts, sizes, exc, match", [b[1:] for b in BAD_INPUTS],
                         ids=[b[0] for b in BAD_INPUTS])
def test_validation(fn, counts: np.ndarray, sizes: np.ndarray, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match) as info:
        fn(counts, sizes)
    assert "\n" not in str(info.value)
