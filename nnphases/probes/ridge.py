"""Fast-mode probes: closed-form ridge read-out and linear input decoder from streamed float64 statistics."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._common import Moments, ProbeError, check_batch

__all__ = ["RidgeProbe", "RIDGE_EXPONENTS", "HOLDOUT_EVERY", "DECODERS"]

# Candidate ridges are lam0 * 10**k for these k (spec'd grid).
RIDGE_EXPONENTS: tuple[int, ...] = tuple(range(-6, 3))
# Training sample s goes to the ridge-search holdout when s % HOLDOUT_EVERY == HOLDOUT_EVERY - 1: by its index in
# the training data, so the split does not depend on how the samples are batched or shared between processes.
HOLDOUT_EVERY = 5
# Exponent used when "auto" has no holdout sample to search on (fewer than 5 training samples).
DEFAULT_EXPONENT = -3
_REDUCTIONS = ("auto", "none", "pool", "project")
DECODERS = ("linear", "random-features")


class _Stats:
    """Float64 sums of one part of the training stream: X^T X, X^T Y, X^T R and the sample count."""

    def __init__(self, d: int, k: int, r: int, device: torch.device) -> None:
        self.xtx = torch.zeros(d, d, dtype=torch.float64, device=device)
        self.xty = torch.zeros(d, k, dtype=torch.float64, device=device)
        self.xtr = torch.zeros(d, r, dtype=torch.float64, device=device)
        self.rr = 0.0  # sum of squared targets R: the holdout error of a decoder needs it
        self.n = 0

    def add(self, x: torch.Tensor, y: torch.Tensor | None, r: torch.Tensor) -> None:
        self.xtx += x.T @ x
        if y is not None:
            self.xty += x.T @ y
        self.xtr += x.T @ r
        self.rr += float((r * r).sum())
        self.n += x.shape[0]

    def sums(self) -> dict[str, torch.Tensor]:
        """The sums as tensors (the float64 matrices themselves, so a reduction in place is no copy)."""
        return {
            "xtx": self.xtx,
            "xty": self.xty,
            "xtr": self.xtr,
            "rr": torch.tensor([self.rr], dtype=torch.float64, device=self.xtx.device),
            "n": torch.tensor([self.n], dtype=torch.int64, device=self.xtx.device),
        }

    def load(self, sums: dict[str, torch.Tensor]) -> None:
        """Take :meth:`sums` back, e.g. added across processes."""
        self.xtx, self.xty, self.xtr = sums["xtx"], sums["xty"], sums["xtr"]
        self.rr, self.n = float(sums["rr"][0]), int(sums["n"][0])

    def error(self, w: torch.Tensor, rhs: torch.Tensor, target_ss: float) -> float:
        """||X W - T||^2 over this part from its sums: tr(W^T XtX W) - 2 tr(W^T XtT) + ||T||^2."""
        return float((w * (self.xtx @ w)).sum() - 2 * (w * rhs).sum() + target_ss)


def _ridge_solve(xtx: torch.Tensor, rhs: torch.Tensor, lam: float) -> torch.Tensor:
    """Solve (X^T X + lam P) W = rhs by Cholesky, P the identity with a zero on the bias (last) entry."""
    a = xtx.clone()
    idx = torch.arange(a.shape[0] - 1, device=a.device)
    a[idx, idx] += lam
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) != 0:
        raise ProbeError(f"ridge system is singular or not positive definite (ridge={lam!r})")
    # Cholesky of a numerically singular PSD matrix can "succeed" with tiny pivots;
    # a pivot ratio below float64 resolution means the solution is noise.
    diag = torch.diagonal(chol)
    if float((diag.min() / diag.max()) ** 2) < 1e-15:
        raise ProbeError(f"ridge system is numerically singular (ridge={lam!r}); use a larger ridge")
    w = torch.cholesky_solve(rhs, chol)
    if not bool(torch.isfinite(w).all()):
        raise ProbeError(f"ridge solve gave non-finite weights (ridge={lam!r})")
    return w


class RidgeProbe:
    """Streamed closed-form probes of one layer: a ridge one-hot classifier and a ridge linear input decoder.

    Feed training batches with :meth:`update_train`, call :meth:`fit`, then feed test batches with
    :meth:`update_test` (and optionally training batches with :meth:`score_train`) and read
    :meth:`result`. Features are the per-sample flattened activations, reduced when there are more
    than ``max_features``: ``"pool"`` (per-channel spatial mean of [B, C, H, W] activations, when
    C <= max_features) or ``"project"`` (a fixed seeded Gaussian projection to ``max_features``
    dims, entries N(0, 1/max_features)); a bias column of ones is appended. ``ridge="auto"`` picks
    lam = lam0 * 10**k, k in -6..2, lam0 = trace of the feature block of X^T X divided by the number
    of features, by the holdout squared error of the one-hot regression on the training samples with
    index % 5 == 4 (fitted on the rest; a sample's index is its place in the whole training data, see
    :meth:`update_train`, so the split does not depend on batching or sharding); the chosen k is then
    applied to lam0 of all training data and both problems are refitted on all of it with that one ridge
    (the decoder shares it). With no holdout sample (fewer than 5 training samples) k = -3 is used
    (``result()["ridge_search"]`` says which). The bias is never penalised. Per-sample shape ``act_shape``
    may be given to decide the reduction up front; otherwise it is decided on the first batch when it
    depends on the shape.
    ``decoder``: ``"linear"`` (the default; the reconstruction function of the source's theory, sharing the
    classifier's ridge) or ``"random-features"``: a closed-form stand-in for a trained one-hidden-layer decoder,
    ridge regression of the input on ``[relu(z W + b), features, 1]`` with ``decoder_width`` fixed random ReLU
    features (see :meth:`_decoder_features`) and its own ridge, searched the same way on the decoder's holdout
    squared error. It costs ``(decoder_width + features)^2`` per sample instead of ``features^2``.
    ``keep_features`` keeps the reduced training features (float64, ``n_train x (features + 1)``) until
    :meth:`fit`, which then scores the training accuracy itself, exactly as :meth:`score_train` would: no
    second pass over the data.

    Across processes (:meth:`sums`, :meth:`load_sums`): each process feeds its shard, with each batch's ``start``
    in the whole training data; the statistics of a pass are added across processes before :meth:`fit` (and
    before :meth:`result`), so every process fits and reports the probe one process fits from the same samples,
    up to the order of float64 additions (not bit for bit: about 1e-14 relative in the tests). The
    random-features decoder cannot be shared: its standardisation comes from each process's first batch.
    """

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        input_dim: int,
        *,
        max_features: int = 2048,
        reduction: str = "auto",
        ridge: float | str = "auto",
        seed: int = 0,
        device: str | torch.device = "cpu",
        act_shape: tuple[int, ...] | None = None,
        keep_features: bool = False,
        decoder: str = "linear",
        decoder_width: int = 1024,
    ) -> None:
        for name, val in (
            ("num_features", num_features),
            ("num_classes", num_classes),
            ("input_dim", input_dim),
            ("max_features", max_features),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if not isinstance(decoder_width, int) or isinstance(decoder_width, bool) or decoder_width < 1:
            raise ValueError(f"decoder_width must be a positive int, got {decoder_width!r}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if isinstance(ridge, str):
            if ridge != "auto":
                raise ValueError(f"ridge must be 'auto' or a non-negative float, got {ridge!r}")
        elif not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge >= 0):
            raise ValueError(f"ridge must be 'auto' or a finite non-negative float, got {ridge!r}")
        self.num_features = num_features
        self.num_classes = num_classes
        self.input_dim = input_dim
        self.max_features = max_features
        self.requested_reduction = reduction
        self.ridge_setting = ridge
        self.seed = seed
        self.device = torch.device(device)
        self.decoder, self.decoder_width = decoder, decoder_width
        self.decoder_ridge: float | None = None
        self._rf: tuple[torch.Tensor, torch.Tensor] | None = None  # random features' weights and offsets
        self._rf_scale: tuple[torch.Tensor, torch.Tensor] | None = None  # standardisation from the first batch
        self._dec_train: _Stats | None = None
        self._dec_hold: _Stats | None = None
        self.reduction: str | None = None
        self.features: int | None = None
        self._proj: torch.Tensor | None = None
        self._train: _Stats | None = None
        self._hold: _Stats | None = None
        self._seen = 0  # training samples fed so far: the default index of the next batch's first sample
        self.ridge: float | None = None
        self.ridge_search: str | None = None
        self.w_cls: torch.Tensor | None = None
        self.w_dec: torch.Tensor | None = None
        self._test_n = 0
        self._test_correct = 0
        self._test_sse = 0.0
        self._test_moments = Moments(input_dim, self.device)
        self._score_n = 0
        self._score_correct = 0
        # With keep_features the training features (float64, as scored) and labels are kept until fit() scores the
        # training accuracy, so no second pass over the training data is needed.
        self.scores_in_fit = bool(keep_features)
        self._kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        if act_shape is not None:
            self._decide(tuple(act_shape))
        elif reduction in ("none", "project") or (reduction == "auto" and num_features <= max_features):
            # These choices do not depend on the activations' shape.
            self._decide(None)

    # -- reduction ---------------------------------------------------------------------------------

    def _decide(self, shape: tuple[int, ...] | None) -> None:
        """Fix the reduction from the per-sample activation shape (None when it is not needed)."""
        if shape is not None and math.prod(shape) != self.num_features:
            raise ValueError(
                f"activations per sample have shape {shape} ({math.prod(shape)} values), "
                f"but num_features={self.num_features}"
            )
        req = self.requested_reduction
        channels = shape[0] if shape is not None and len(shape) == 3 else None  # conv activations [C, H, W]
        if req == "auto":
            if self.num_features <= self.max_features:
                req = "none"
            elif channels is not None and channels <= self.max_features:
                req = "pool"
            else:
                req = "project"
        if req == "pool" and channels is None:
            raise ValueError(f"reduction='pool' needs conv activations [B, C, H, W]; got per-sample shape {shape}")
        if req == "none":
            f = self.num_features
        elif req == "pool":
            assert channels is not None  # refused above otherwise
            f = channels
        else:
            f = self.max_features
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
            # Generated on CPU so the projection is the same on every device for a seed.
            self._proj = (torch.randn(self.num_features, f, generator=gen, dtype=torch.float64) / math.sqrt(f)).to(
                self.device
            )
        self.reduction = req
        self.features = f
        d = f + 1
        self._train = _Stats(d, self.num_classes, self.input_dim, self.device)
        self._hold = _Stats(d, self.num_classes, self.input_dim, self.device)
        if self.decoder == "random-features":
            gen = torch.Generator(device="cpu").manual_seed(self.seed + 1)
            w = torch.randn(f, self.decoder_width, generator=gen, dtype=torch.float64) / math.sqrt(f)
            b = torch.randn(self.decoder_width, generator=gen, dtype=torch.float64)
            self._rf = (w.to(self.device), b.to(self.device))
            dd = self.decoder_width + d
            self._dec_train = _Stats(dd, 0, self.input_dim, self.device)
            self._dec_hold = _Stats(dd, 0, self.input_dim, self.device)

    def reduce(self, acts: torch.Tensor) -> torch.Tensor:
        """Reduced float64 features [B, features] of a batch of activations [B, ...] (no bias column)."""
        if acts.ndim < 1:
            raise ValueError(f"acts must have a batch dimension, got shape {tuple(acts.shape)}")
        if self.reduction is None:
            self._decide(tuple(acts.shape[1:]))
        if math.prod(acts.shape[1:]) != self.num_features:
            raise ValueError(
                f"acts has {math.prod(acts.shape[1:])} values per sample "
                f"(shape {tuple(acts.shape)}), but num_features={self.num_features}"
            )
        a = acts.detach().to(self.device, torch.float64)
        if self.reduction == "pool":
            if a.ndim != 4:
                raise ValueError(f"reduction='pool' needs acts [B, C, H, W], got shape {tuple(acts.shape)}")
            return a.mean(dim=(2, 3))
        x = a.reshape(a.shape[0], -1)
        if self.reduction == "project":
            assert self._proj is not None  # _decide made it with the "project" reduction
            return x @ self._proj
        return x

    def _prepare(
        self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features with bias column, int64 labels and flattened float64 inputs, validated."""
        y = check_batch(acts, labels, inputs, self.num_classes, (self.input_dim,), self.device)
        b = acts.shape[0]
        f = self.reduce(acts)
        x = torch.cat([f, torch.ones(b, 1, dtype=torch.float64, device=self.device)], dim=1)
        r = inputs.detach().to(self.device, torch.float64).reshape(b, self.input_dim)
        return x, y, r

    def _decoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's features of a batch (bias column last): x itself for the linear decoder; for random
        features ``[relu(z W + b), x]``, z the features standardised by the first training batch's mean and
        standard deviation (floored at 1e-3 of their mean), W ~ N(0, 1/features), b ~ N(0, 1), seeded."""
        if self._rf is None:
            return x
        f = x[:, :-1]
        if self._rf_scale is None:
            sd = f.std(0) if f.shape[0] > 1 else torch.ones_like(f[0])
            floor = max(float(sd.mean()) * 1e-3, 1e-12)
            self._rf_scale = (f.mean(0), sd.clamp_min(floor))
        mu, sd = self._rf_scale
        w, b = self._rf
        return torch.cat([torch.relu(((f - mu) / sd) @ w + b), x], dim=1)

    # -- training ----------------------------------------------------------------------------------

    def update_train(
        self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor, start: int | None = None
    ) -> None:
        """Accumulate one training batch whose first sample has index ``start`` in the training data (default:
        the number of samples fed so far); samples with index % 5 == 4 form the ridge-search holdout."""
        if self.w_cls is not None:
            raise RuntimeError("update_train after fit(); create a new RidgeProbe to refit")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool) or start < 0):
            raise ValueError(f"start must be a non-negative int, got {start!r}")
        x, y, r = self._prepare(acts, labels, inputs)
        yh = torch.nn.functional.one_hot(y, self.num_classes).to(torch.float64)
        b = x.shape[0]
        first = self._seen if start is None else start
        is_hold = torch.arange(first, first + b) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
        dec = self._decoder_features(x) if self._rf is not None else None
        for part, dec_part, m in ((self._train, self._dec_train, ~is_hold), (self._hold, self._dec_hold, is_hold)):
            if not bool(m.any()):
                continue
            idx = torch.nonzero(m).reshape(-1).to(self.device)  # built on the host: selecting rows needs no sync
            xs, ys, rs = (t.index_select(0, idx) for t in (x, yh, r))
            assert part is not None  # _prepare's reduce() decided the reduction, which made the statistics
            part.add(xs, ys, rs)
            if dec is not None:
                assert dec_part is not None  # made with _rf, from which dec comes
                dec_part.add(dec.index_select(0, idx), None, rs)
        self._seen += b
        if self.scores_in_fit:
            self._kept.append((x, y))

    def statistics(self) -> dict[str, Any]:
        """All training statistics so far (fit part plus holdout): xtx, xty, xtr (float64) and n."""
        if self._train is None or self._hold is None:
            raise ProbeError("no training data seen yet")
        t, h = self._train, self._hold
        return {"xtx": t.xtx + h.xtx, "xty": t.xty + h.xty, "xtr": t.xtr + h.xtr, "n": t.n + h.n}

    def sums(self, p: str, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
        """What pass ``p`` added, as tensors to be added across ``world`` processes (this one is ``rank``) and
        handed back to :meth:`load_sums` before :meth:`fit` (``"train"``) or :meth:`result` (``"rescore"``,
        ``"eval"``). ``"train"``: the float64 statistics of the fit part and the holdout with their sample
        counts; ``"rescore"``: the train-accuracy counts; ``"eval"``: the test counts, squared error and input
        moments (:meth:`Moments.packed`), plus the train-accuracy counts when :meth:`fit` scored them."""
        if p not in ("train", "rescore", "eval"):
            raise ValueError(f"p must be 'train', 'rescore' or 'eval', got {p!r}")
        if not (isinstance(world, int) and isinstance(rank, int) and 0 <= rank < world):
            raise ValueError(f"rank must lie in [0, world), got rank={rank!r}, world={world!r}")
        if self._rf is not None:
            raise ValueError(
                "decoder 'random-features' cannot be summed across processes: its features are "
                "standardised by each process's first training batch; use decoder 'linear'"
            )
        if self._train is None or self._hold is None:
            raise ValueError("sums need the reduction decided before any data: pass act_shape")
        dev = self.device

        def ints(*v: int) -> torch.Tensor:
            return torch.tensor(v, dtype=torch.int64, device=dev)

        out: dict[str, torch.Tensor] = {}
        if p == "train":
            for name, part in (("fit", self._train), ("hold", self._hold)):
                out.update({f"{name}.{k}": t for k, t in part.sums().items()})
        # The train-accuracy counts: fit() scores kept features after the train pass's reduction, so they travel
        # with the eval pass's sums; otherwise the rescore pass made them.
        if p == ("eval" if self.scores_in_fit else "rescore"):
            out["score"] = ints(self._score_n, self._score_correct)
        if p == "eval":
            out["test"] = ints(self._test_n, self._test_correct)
            out["test_sse"] = torch.tensor([self._test_sse], dtype=torch.float64, device=dev)
            out["test_moments"] = self._test_moments.packed(rank, world)
        return out

    def load_sums(self, p: str, sums: dict[str, torch.Tensor]) -> None:
        """Take back :meth:`sums` of pass ``p`` once added across processes."""
        if p == "train":
            for name, part in (("fit", self._train), ("hold", self._hold)):
                assert part is not None  # sums() of the train pass required them
                keys = ("xtx", "xty", "xtr", "rr", "n")
                part.load({k: sums[f"{name}.{k}"] for k in keys})
        if "score" in sums:
            self._score_n, self._score_correct = (int(v) for v in sums["score"].tolist())
        if p == "eval":
            self._test_n, self._test_correct = (int(v) for v in sums["test"].tolist())
            self._test_sse = float(sums["test_sse"][0])
            self._test_moments.merge_packed(sums["test_moments"])

    @staticmethod
    def _lam0(xtx: torch.Tensor) -> float:
        f = xtx.shape[0] - 1
        lam0 = float(torch.diagonal(xtx)[:f].sum()) / f
        # All-zero features: any positive scale works, the bias alone carries the fit.
        return lam0 if lam0 > 0 else 1.0

    def _search(self, t: _Stats, h: _Stats, rhs: str, target_ss: Callable[[_Stats], float]) -> tuple[int, str]:
        """The ridge exponent k with the least holdout error for the problem with right-hand side ``rhs``."""
        if h.n == 0 or t.n < 2:
            return DEFAULT_EXPONENT, "default"
        lam0_fit = self._lam0(t.xtx)
        best: tuple[float, int] | None = None
        for k in RIDGE_EXPONENTS:
            try:
                w = _ridge_solve(t.xtx, getattr(t, rhs), lam0_fit * 10.0**k)
            except ProbeError:
                continue  # too small a ridge for this data; larger ones are still candidates
            err = h.error(w, getattr(h, rhs), target_ss(h))
            if math.isfinite(err) and (best is None or err < best[0]):
                best = (err, k)
        if best is None:
            raise ProbeError("ridge search failed: every candidate ridge gave a singular solve")
        return best[1], "holdout"

    def fit(self) -> None:
        """Choose the ridge (unless given) and solve both ridge problems on all training statistics."""
        if self._train is None or self._hold is None:
            raise ProbeError("cannot fit: no training data (n_train=0)")
        stats = self.statistics()
        n = stats["n"]
        if n < 2:
            raise ProbeError(f"cannot fit: need at least 2 training samples, got n_train={n}")
        if isinstance(self.ridge_setting, str):
            # One-hot targets: ||Y||^2 is the sample count.
            k, self.ridge_search = self._search(self._train, self._hold, "xty", lambda h: float(h.n))
            lam = self._lam0(stats["xtx"]) * 10.0**k
        else:
            lam, self.ridge_search = float(self.ridge_setting), "given"
        self.w_cls = _ridge_solve(stats["xtx"], stats["xty"], lam)
        if self._rf is None:
            self.w_dec, self.decoder_ridge = _ridge_solve(stats["xtx"], stats["xtr"], lam), lam
        else:
            t, h = self._dec_train, self._dec_hold
            assert t is not None and h is not None  # _decide made them with _rf
            xtx, xtr = t.xtx + h.xtx, t.xtr + h.xtr
            if isinstance(self.ridge_setting, str):
                kd, _ = self._search(t, h, "xtr", lambda part: part.rr)
                lam_dec = self._lam0(xtx) * 10.0**kd
            else:
                lam_dec = float(self.ridge_setting)
            self.w_dec, self.decoder_ridge = _ridge_solve(xtx, xtr, lam_dec), lam_dec
        self.ridge = lam
        if self.scores_in_fit:
            for x, y in self._kept:
                self._score_correct += int(((x @ self.w_cls).argmax(1) == y).sum())
                self._score_n += x.shape[0]
            self._kept = []

    # -- scoring -----------------------------------------------------------------------------------

    def _fitted(self, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's and the decoder's weights, which :meth:`fit` sets; RuntimeError before it."""
        if self.w_cls is None or self.w_dec is None:
            raise RuntimeError(f"{what} needs fit() first")
        return self.w_cls, self.w_dec

    def update_test(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Accumulate test accuracy, reconstruction squared error and the test inputs' moments."""
        w_cls, w_dec = self._fitted("update_test")
        x, y, r = self._prepare(acts, labels, inputs)
        self._test_correct += int(((x @ w_cls).argmax(1) == y).sum())
        self._test_sse += float(((self._decoder_features(x) @ w_dec - r) ** 2).sum())
        self._test_moments.add(r)
        self._test_n += x.shape[0]

    def score_train(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Accumulate training accuracy of the fitted classifier (a second pass over training data); a no-op
        with ``keep_features``, where :meth:`fit` has scored the kept training features."""
        w_cls, _ = self._fitted("score_train")
        if self.scores_in_fit:
            return
        x, y, _ = self._prepare(acts, labels, inputs)
        self._score_correct += int(((x @ w_cls).argmax(1) == y).sum())
        self._score_n += x.shape[0]

    def result(self) -> dict[str, Any]:
        """The probe's scores; ``train_accuracy`` is None unless :meth:`score_train` was called."""
        self._fitted("result")
        if self._test_n == 0:
            raise ProbeError("no test data scored (n_test=0); call update_test first")
        mse = self._test_sse / (self._test_n * self.input_dim)
        return {
            "test_accuracy": self._test_correct / self._test_n,
            "train_accuracy": self._score_correct / self._score_n if self._score_n else None,
            "reconstruction_mse": mse,
            "reconstruction_nmse": self._test_moments.normalised(mse),
            "ridge": self.ridge,
            "ridge_search": self.ridge_search,
            "decoder": "linear" if self._rf is None else f"random-features-{self.decoder_width}",
            "decoder_ridge": self.decoder_ridge,
            "features": self.features,
            "reduction": self.reduction,
            "n_train": self.statistics()["n"],
            "n_test": self._test_n,
        }
