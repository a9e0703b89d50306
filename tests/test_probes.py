"""Tests of nnphases.probes on synthetic data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnphases.probes import ProbeError, RidgeProbe, train_paper_probes


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The problems are tiny: extra intra-op threads only add overhead and contention.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _separable(n: int, seed: int, k: int = 3, f: int = 10, sep: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian clusters: class c centred at sep * e_c."""
    g = _gen(seed)
    y = torch.randint(0, k, (n,), generator=g)
    x = 0.3 * torch.randn(n, f, generator=g)
    x[torch.arange(n), y] += sep
    return x, y


def _feed(probe: RidgeProbe, fn: str, acts: torch.Tensor, y: torch.Tensor, r: torch.Tensor, nb: int) -> None:
    for a, b, c in zip(acts.chunk(nb), y.chunk(nb), r.chunk(nb)):
        getattr(probe, fn)(a, b, c)


def _fast(train: tuple, test: tuple, k: int, nb: int = 10, **kw) -> dict:
    a, y, r = train
    p = RidgeProbe(math.prod(a.shape[1:]), k, math.prod(r.shape[1:]), **kw)
    _feed(p, "update_train", a, y, r, nb)
    p.fit()
    _feed(p, "update_test", *test, nb=4)
    _feed(p, "score_train", a, y, r, nb)
    return p.result()


def test_separable_accuracy_one():
    x, y = _separable(500, 0)
    xt, yt = _separable(200, 1)
    res = _fast((x, y, x), (xt, yt, xt), 3)
    assert res["test_accuracy"] == 1.0 and res["train_accuracy"] == 1.0
    assert res["n_train"] == 500 and res["n_test"] == 200
    assert res["reduction"] == "none" and res["features"] == 10


def test_random_labels_near_chance():
    g = _gen(2)
    x, xt = torch.randn(2000, 20, generator=g), torch.randn(2000, 20, generator=g)
    y, yt = torch.randint(0, 4, (2000,), generator=g), torch.randint(0, 4, (2000,), generator=g)
    res = _fast((x, y, x), (xt, yt, xt), 4)
    assert abs(res["test_accuracy"] - 0.25) < 0.05


def _recon_data(seed: int, n: int, exact: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    r = torch.randn(n, 2, 2, 2, generator=g)  # image-like input, input_dim 8
    m = torch.randn(8, 8, generator=_gen(99)) + 3 * torch.eye(8)  # fixed, well-conditioned
    acts = r.reshape(n, 8) @ m if exact else torch.randn(n, 8, generator=g)
    y = (r.reshape(n, 8)[:, 0] > 0).long()
    return acts, y, r


def test_reconstruction_nmse_exact_and_noise():
    exact = _fast(_recon_data(0, 1000, True), _recon_data(1, 500, True), 2)
    noise = _fast(_recon_data(0, 1000, False), _recon_data(1, 500, False), 2)
    assert exact["reconstruction_nmse"] < 1e-3
    assert 0.9 < noise["reconstruction_nmse"] < 1.1
    assert noise["reconstruction_mse"] > 0.8  # inputs have unit variance


def test_streaming_equals_one_batch():
    g = _gen(3)
    a, r = torch.randn(300, 4, 3, generator=g), torch.randn(300, 5, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    ps = []
    for nb in (1, 7, 30):
        p = RidgeProbe(12, 3, 5, ridge=0.1)
        _feed(p, "update_train", a, y, r, nb)
        ps.append(p.statistics())
    for s in ps[1:]:
        assert s["n"] == ps[0]["n"] == 300
        for key in ("xtx", "xty", "xtr"):
            ref = ps[0][key]
            assert float((s[key] - ref).abs().max() / ref.abs().max()) < 1e-10


def _parts(p: RidgeProbe) -> dict:
    return {f"{name}.{k}": v for name, part in (("fit", p._train), ("hold", p._hold))
            for k, v in part.sums().items()}


@pytest.mark.parametrize("chunks", [[300], [7] * 42 + [6], [1, 2, 3, 4, 290], [150, 150]])
def test_holdout_split_does_not_depend_on_batching(chunks):
    """Sample s is held out when s % 5 == 4, however the samples are batched: the fit part and the holdout have
    the same sample counts, and statistics equal up to the order of additions."""
    g = _gen(8)
    a, r = torch.randn(300, 6, generator=g, dtype=torch.float64), torch.randn(300, 3, generator=g)
    y = torch.randint(0, 3, (300,), generator=g)
    ref = RidgeProbe(6, 3, 3)
    ref.update_train(a, y, r)
    p = RidgeProbe(6, 3, 3)
    for xa, xy, xr in zip(a.split(chunks), y.split(chunks), r.split(chunks)):
        p.update_train(xa, xy, xr)
    got, want = _parts(p), _parts(ref)
    assert int(got["hold.n"]) == int(want["hold.n"]) == 60 and int(got["fit.n"]) == 240
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)
    ref.fit()
    p.fit()
    assert (p.ridge, p.ridge_search) == (pytest.approx(ref.ridge, rel=1e-12), "holdout")


def _shard_probes(data: tuple, test: tuple, world: int, keep: bool, nb: int = 4) -> list[RidgeProbe]:
    """``world`` probes fed contiguous shards of ``data`` (each batch with its index in the whole set), their
    sums of every pass added as an all_reduce would, then fitted and scored on shards of ``test``."""
    from nnphases.recording.distributed import shard_range

    a, y, r = data
    probes = [RidgeProbe(a.shape[1], 3, r.shape[1], keep_features=keep, act_shape=(a.shape[1],))
              for _ in range(world)]

    def reduce(p: str) -> None:
        sums = [q.sums(p, rank, world) for rank, q in enumerate(probes)]
        total = {k: sum(d[k] for d in sums) for k in sums[0]}
        for q in probes:
            q.load_sums(p, {k: v.clone() for k, v in total.items()})

    for rank, q in enumerate(probes):
        lo, hi = shard_range(len(y), rank, world)
        for s in range(lo, hi, nb):
            e = min(s + nb, hi)
            q.update_train(a[s:e], y[s:e], r[s:e], start=s)
    reduce("train")
    for q in probes:
        q.fit()
    if not keep:
        for rank, q in enumerate(probes):
            lo, hi = shard_range(len(y), rank, world)
            q.score_train(a[lo:hi], y[lo:hi], r[lo:hi])
        reduce("rescore")
    for rank, q in enumerate(probes):
        lo, hi = shard_range(len(test[1]), rank, world)
        if hi > lo:
            q.update_test(*(t[lo:hi] for t in test))
    reduce("eval")
    return probes


@pytest.mark.parametrize("world,keep", [(1, True), (2, False), (3, True), (3, False), (5, True)])
def test_shards_summed_give_the_probe_of_one_process(world, keep):
    """Probes fed shards and summed fit the probe of one process fed everything: sample counts, the ridge's
    exponent and accuracies exactly; float64 results up to the order of additions (1e-12 relative)."""
    g = _gen(9)
    mean = torch.tensor([100.0, -50.0, 3.0])  # inputs far from zero: the moments' exact merge matters

    def make(n: int) -> tuple:
        x, y = _separable(n, int(torch.randint(0, 1000, (1,), generator=g)), f=6, sep=1.5)
        return x, y, x[:, :3] + mean + torch.randn(n, 3, generator=g)
    train, test = make(301), make(103)  # odd: no world divides them
    one = _shard_probes(train, test, 1, keep=False, nb=4)[0].result()
    for q in _shard_probes(train, test, world, keep=keep):
        got = q.result()
        for k in ("n_train", "n_test", "train_accuracy", "test_accuracy", "ridge_search", "features"):
            assert got[k] == one[k], k
        for k in ("ridge", "reconstruction_mse", "reconstruction_nmse", "decoder_ridge"):
            assert got[k] == pytest.approx(one[k], rel=1e-12, abs=0), k


def test_moments_packed_merge_one_stream():
    from nnphases.probes._common import Moments

    g = _gen(10)
    r = 1e4 + torch.randn(100, 5, generator=g, dtype=torch.float64)
    one = Moments(5, torch.device("cpu"))
    one.add(r)
    parts = [Moments(5, torch.device("cpu")) for _ in range(3)]
    for rank, (m, chunk) in enumerate(zip(parts, r.split([40, 0, 60]))):
        m.add(chunk)
    table = sum(m.packed(rank, 3) for rank, m in enumerate(parts))
    parts[1].merge_packed(table)  # a rank that saw nothing gets the whole stream's moments too
    assert parts[1].n == 100
    torch.testing.assert_close(parts[1].mean, one.mean, rtol=1e-14, atol=0)
    torch.testing.assert_close(parts[1].m2, one.m2, rtol=1e-10, atol=0)


@pytest.mark.parametrize("make,call,match", [
    (lambda: RidgeProbe(4, 2, 3, act_shape=(4,)), lambda p: p.sums("test"),
     r"p must be 'train', 'rescore' or 'eval', got 'test'"),
    (lambda: RidgeProbe(4, 2, 3, act_shape=(4,)), lambda p: p.sums("train", 2, 2),
     r"rank must lie in \[0, world\), got rank=2, world=2"),
    (lambda: RidgeProbe(4, 2, 3, act_shape=(4,), decoder="random-features", decoder_width=8),
     lambda p: p.sums("train"), "decoder 'random-features' cannot be summed across processes"),
    (lambda: RidgeProbe(4, 2, 3), lambda p: p.update_train(torch.zeros(2, 4), torch.zeros(2).long(),
                                                            torch.zeros(2, 3), start=-1),
     "start must be a non-negative int, got -1"),
])
def test_sums_bad_arguments(make, call, match):
    with pytest.raises(ValueError, match=match):
        call(make())


def test_ridge_search_larger_for_noisier_problem():
    def k_chosen(f: int, n: int, flip: float, seed: int) -> int:
        g = _gen(seed)
        x = torch.randn(n, f, generator=g, dtype=torch.float64)
        y = (x[:, 0] > 0).long()
        m = torch.rand(n, generator=g) < flip
        y[m] = torch.randint(0, 2, (int(m.sum()),), generator=g)
        p = RidgeProbe(f, 2, 4)
        _feed(p, "update_train", x, y, x[:, :4], 10)
        p.fit()
        s = p.statistics()
        lam0 = float(torch.diagonal(s["xtx"])[:f].sum()) / f
        assert p.ridge_search == "holdout"
        return round(math.log10(p.ridge / lam0))

    for seed in range(3):
        assert k_chosen(5, 500, 0.0, seed) < k_chosen(100, 200, 0.9, seed)


@pytest.mark.parametrize("n,search", [(4, "default"), (5, "holdout"), (50, "holdout")])
def test_default_ridge_without_holdout(n, search):
    """The holdout is every fifth sample (index % 5 == 4), not every fifth batch: one batch of 5 samples already
    has one; with none the default exponent is used."""
    x, y = _separable(n, 0)
    p = RidgeProbe(10, 3, 10)
    p.update_train(x, y, x)
    p.fit()
    assert p.ridge_search == search and p.ridge > 0
    if search == "default":
        assert p.ridge == pytest.approx(RidgeProbe._lam0(p.statistics()["xtx"]) * 1e-3, rel=1e-12)


def test_reduction_pool_and_project():
    g = _gen(4)
    conv = torch.randn(20, 8, 16, 16, generator=g)  # 2048 > max_features 64, C=8 <= 64
    r = torch.randn(20, 3, generator=g)
    y = torch.randint(0, 2, (20,), generator=g)
    p = RidgeProbe(8 * 16 * 16, 2, 3, max_features=64)
    assert p.reduction is None  # shape-dependent choice waits for a batch
    p.update_train(conv, y, r)
    assert p.reduction == "pool" and p.features == 8
    assert torch.allclose(p.reduce(conv), conv.double().mean(dim=(2, 3)))

    wide = torch.randn(20, 100, 2, 2, generator=g)  # C=100 > 64 -> project
    p = RidgeProbe(400, 2, 3, max_features=64, act_shape=(100, 2, 2))
    assert p.reduction == "project" and p.features == 64
    assert p.reduce(wide).shape == (20, 64)
    assert p._proj.std().item() == pytest.approx(1 / 8, rel=0.05)
    p2 = RidgeProbe(400, 2, 3, max_features=64, act_shape=(100, 2, 2))
    assert torch.equal(p.reduce(wide), p2.reduce(wide))  # seeded

    flat = torch.randn(20, 400, generator=g)
    p = RidgeProbe(400, 2, 3, max_features=64)
    p.update_train(flat, y, r)
    assert p.reduction == "project"
    p.fit()
    p.update_test(flat, y, r)
    assert p.result()["reduction"] == "project" and p.result()["features"] == 64

    assert RidgeProbe(400, 2, 3, max_features=64, reduction="none").reduction == "none"
    with pytest.raises(ValueError, match="pool"):
        RidgeProbe(400, 2, 3, reduction="pool", act_shape=(400,))
    with pytest.raises(ValueError, match="reduction"):
        RidgeProbe(400, 2, 3, reduction="pca")


def test_probe_errors():
    x, y = _separable(1, 0)
    p = RidgeProbe(10, 3, 10)
    p.update_train(x, y, x)
    with pytest.raises(ProbeError, match="at least 2"):
        p.fit()
    with pytest.raises(ProbeError, match="n_train=0"):
        RidgeProbe(10, 3, 10).fit()
    x, y = _separable(10, 0)
    x[3, 2] = float("nan")
    with pytest.raises(ProbeError, match="acts"):
        RidgeProbe(10, 3, 10).update_train(x, y, torch.zeros(10, 10))
    x[3, 2] = float("inf")
    with pytest.raises(ProbeError, match="non-finite"):
        RidgeProbe(10, 3, 10).update_train(x, y, torch.zeros(10, 10))
    # Duplicate features with no ridge: singular system.
    x, y = _separable(20, 0)
    x[:, 1] = x[:, 0]
    p = RidgeProbe(10, 3, 10, ridge=0.0)
    p.update_train(x, y, x)
    with pytest.raises(ProbeError, match="singular"):
        p.fit()
    with pytest.raises(ValueError, match="ridge"):
        RidgeProbe(10, 3, 10, ridge=-1.0)


def test_closed_form_matches_lstsq():
    g = np.random.default_rng(5)
    x = g.standard_normal((40, 6))
    y = g.integers(0, 3, 40)
    r = g.standard_normal((40, 4))
    lam = 0.7
    p = RidgeProbe(6, 3, 4, ridge=lam)
    p.update_train(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(r))
    p.fit()
    # Augmented least squares: rows sqrt(lam) * e_j for feature columns only (bias unpenalised).
    xb = np.hstack([x, np.ones((40, 1))])
    aug = np.vstack([xb, np.hstack([math.sqrt(lam) * np.eye(6), np.zeros((6, 1))])])
    onehot = np.eye(3)[y]
    w_cls = np.linalg.lstsq(aug, np.vstack([onehot, np.zeros((6, 3))]), rcond=None)[0]
    w_dec = np.linalg.lstsq(aug, np.vstack([r, np.zeros((6, 4))]), rcond=None)[0]
    np.testing.assert_allclose(p.w_cls.numpy(), w_cls, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(p.w_dec.numpy(), w_dec, rtol=1e-9, atol=1e-12)


def test_paper_mode_agrees_with_fast_mode():
    x, y = _separable(256, 0)
    xt, yt = _separable(200, 1)
    fast = _fast((x, y, x), (xt, yt, xt), 3)
    paper = train_paper_probes(x, y, x, xt, yt, xt, 3, decoder_epochs=1)
    assert abs(paper["test_accuracy"] - fast["test_accuracy"]) <= 0.1
    assert paper["features"] == 10 and paper["ridge"] is None
    small = dict(classifier_epochs=2, decoder_epochs=2, seed=7)
    assert train_paper_probes(x, y, x, xt, yt, xt, 3, **small) == train_paper_probes(x, y, x, xt, yt, xt, 3, **small)

    res = {}
    for exact in (True, False):
        train, test = _recon_data(0, 640, exact), _recon_data(1, 300, exact)
        res[exact] = (_fast(train, test, 2)["reconstruction_nmse"],
                      train_paper_probes(*train, *test, 2, classifier_epochs=1)["reconstruction_nmse"])
    assert res[True][0] < res[False][0] and res[True][1] < res[False][1]


def test_paper_mode_with_reducer():
    g = _gen(6)
    conv = torch.randn(64, 4, 8, 8, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    r = torch.randn(64, 5, generator=g)
    p = RidgeProbe(256, 2, 5, max_features=16, act_shape=(4, 8, 8))
    out = train_paper_probes(conv, y, r, conv, y, r, 2, reduce=p, classifier_epochs=1, decoder_epochs=1)
    assert out["reduction"] == "pool" and out["features"] == 4
    with pytest.raises(ValueError, match="decoder"):
        train_paper_probes(conv, y, r, conv, y, r, 2, decoder="conv")


# -- paper mode: decoders, batching, validation -----------------------------------------------------

from nnphases.probes import PaperProbe, conv_decoder  # noqa: E402


@pytest.mark.parametrize("act_shape,input_shape", [
    ((64, 32, 32), (1, 32, 32)),   # VGG-11's first site: no upsampling
    ((128, 16, 16), (1, 32, 32)),
    ((512, 2, 2), (1, 32, 32)),    # VGG-11's last sites
    ((512, 4, 4), (3, 32, 32)),    # ResNet-10's last sites on CIFAR
    ((8, 7, 7), (1, 28, 28)),
    ((8, 3, 3), (1, 28, 28)),      # 28 is not 3 times a power of two: resized at the end
    ((4, 8, 8), (2, 8, 12)),       # non-square input
])
def test_conv_decoder_output_shape(act_shape, input_shape):
    dec = conv_decoder(act_shape, input_shape, channels=16)
    assert tuple(dec(torch.zeros(2, *act_shape)).shape) == (2, *input_shape)


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blocky images (4x4 random grids upsampled 2x), conv 'activations' that hold them (their 2x2 average
    pool, twice), and labels from them: a decoder can reconstruct the images exactly."""
    g = _gen(seed)
    r = torch.nn.functional.interpolate(torch.rand(n, 1, 4, 4, generator=g), scale_factor=2, mode="nearest")
    y = (r[:, 0, :4].mean((1, 2)) > r[:, 0, 4:].mean((1, 2))).long()
    a = torch.nn.functional.avg_pool2d(r, 2).repeat(1, 2, 1, 1)
    return a, y, r


def test_paper_conv_decoder_learns_and_batches_agree():
    train, test = _images(256, 0), _images(128, 1)
    quick = dict(classifier_epochs=5, decoder_epochs=30, channels=16, batch=32, decoder_lr=3e-3)
    out = train_paper_probes(*train, *test, 2, **quick)
    assert out["decoder"] == "conv" and out["features"] == 2 * 4 * 4
    assert out["reconstruction_nmse"] < 0.3  # the activations hold the whole image
    # Fed in batches, the probe keeps and scores the same samples: identical results.
    p = PaperProbe((2, 4, 4), 2, (1, 8, 8), **quick)
    for chunk in zip(*(t.chunk(5) for t in train)):
        p.update_train(*chunk)
    p.fit()
    for chunk in zip(*(t.chunk(3) for t in test)):
        p.update_test(*chunk)
    got = p.result()
    # The test inputs' variance is merged per batch (Chan et al.): equal up to rounding, the rest exactly.
    assert got.pop("reconstruction_nmse") == pytest.approx(out.pop("reconstruction_nmse"), rel=1e-12)
    assert got == out


def test_paper_mode_decoder_choice():
    a, y, r = _images(16, 0)
    assert train_paper_probes(a, y, r, a, y, r, 2, decoder="dense", classifier_epochs=1,
                              decoder_epochs=1)["decoder"] == "dense"
    flat = train_paper_probes(a.flatten(1), y, r, a.flatten(1), y, r, 2, classifier_epochs=1, decoder_epochs=1)
    assert flat["decoder"] == "dense"


@pytest.mark.parametrize("kwargs,match", [
    (dict(classifier_epochs=0), "classifier_epochs must be a positive int, got 0"),
    (dict(decoder_epochs=2.5), "decoder_epochs must be a positive int, got 2.5"),
    (dict(batch=True), "batch must be a positive int, got True"),
    (dict(classifier_lr=0.0), "classifier_lr must be a positive float, got 0.0"),
    (dict(decoder_lr=float("nan")), "decoder_lr must be a positive float, got nan"),
    (dict(decoder="deconv"), r"decoder must be one of \('auto', 'dense', 'conv', 'linear', 'cladec'\), got 'deconv'"),
    (dict(reduce=3), "reduce must be a RidgeProbe, a callable or None, got 3"),
])
def test_paper_probe_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PaperProbe((2, 4, 4), 2, (1, 8, 8), **kwargs)


@pytest.mark.parametrize("call,match", [
    (lambda p, a, y, r: p.update_train(a[:, :1], y, r), r"acts must be \[B, \*\(2, 4, 4\)\]"),
    (lambda p, a, y, r: p.update_train(a, y[:-1], r), r"labels must have shape \(8,\)"),
    (lambda p, a, y, r: p.update_train(a, y + 2, r), r"labels must lie in \[0, 2\)"),
    (lambda p, a, y, r: p.update_train(a, y, r[:, :, :4]), r"inputs must be \[8, \*\(1, 8, 8\)\]"),
    (lambda p, a, y, r: p.update_train(a * float("nan"), y, r), "acts contains non-finite"),
    (lambda p, a, y, r: p.update_test(a, y, r), r"update_test needs fit\(\) first"),
])
def test_paper_probe_bad_batches(call, match):
    a, y, r = _images(8, 0)
    with pytest.raises((ValueError, RuntimeError), match=match):
        call(PaperProbe((2, 4, 4), 2, (1, 8, 8)), a, y, r)


def test_paper_probe_needs_two_samples():
    a, y, r = _images(1, 0)
    p = PaperProbe((2, 4, 4), 2, (1, 8, 8))
    p.update_train(a, y, r)
    with pytest.raises(ProbeError, match="n_train=1"):
        p.fit()


def test_paper_probe_divergence_is_an_error():
    a, y, r = _images(64, 0)
    with pytest.raises(ProbeError, match="diverged"):
        train_paper_probes(a * 1e30, y, r, a, y, r, 2, classifier_lr=1e30, classifier_epochs=3, decoder_epochs=1)


# -- fast mode's random-features decoder ---------------------------------------------------------------


def _squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs that are even functions of symmetric features: uncorrelated with them, so no linear decoder
    can reconstruct them, while a nonlinear one can."""
    g = _gen(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    r = torch.cat([x**2, x.abs()], dim=1)
    return x, (x[:, 0] > 0).long(), r


@pytest.mark.parametrize("width", [256, 1024])
def test_random_features_decoder_reconstructs_what_linear_cannot(width):
    train, test = _squares(4000, 0), _squares(1000, 1)
    lin = _fast(train, test, 2)
    rf = _fast(train, test, 2, decoder="random-features", decoder_width=width)
    assert lin["reconstruction_nmse"] > 0.95  # the best linear map is ~ the mean
    assert rf["reconstruction_nmse"] < 0.2
    assert (lin["decoder"], rf["decoder"]) == ("linear", f"random-features-{width}")
    # The classifier is the same linear probe in both.
    assert rf["test_accuracy"] == lin["test_accuracy"] and rf["ridge"] == lin["ridge"]
    assert rf["decoder_ridge"] > 0 and lin["decoder_ridge"] == lin["ridge"]


def test_random_features_decoder_is_deterministic_and_seeded():
    train, test = _squares(1000, 2), _squares(300, 3)
    a, b = (_fast(train, test, 2, decoder="random-features", decoder_width=64, seed=5) for _ in range(2))
    c = _fast(train, test, 2, decoder="random-features", decoder_width=64, seed=6)
    assert a == b and a["reconstruction_mse"] != c["reconstruction_mse"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(decoder="mlp"), r"decoder must be one of \('linear', 'random-features'\), got 'mlp'"),
    (dict(decoder="random-features", decoder_width=0), "decoder_width must be a positive int, got 0"),
    (dict(decoder_width=2.0), "decoder_width must be a positive int, got 2.0"),
])
def test_random_features_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RidgeProbe(4, 2, 3, **kwargs)
