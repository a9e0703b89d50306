"""Trained probes of source 002: a dense classifier and a decoder retrained at every measurement, by one of two
protocols (:mod:`nnphases.probes.protocols`): ``text``, as the paper states it (the classifier trained 20 epochs by
SGD at lr 0.003, a decoder shaped like an auto-encoder's trained 30 epochs by Adam at lr 3e-4), or ``code``, as the
authors' released code runs it (SGD at lr 0.01 with momentum 0.9 and two lr drops; a linear decoder trained 20
epochs by Adam at lr 3e-4 with weight decay 1e-5 on standardised inputs). Both train on the layer's activations
over the training subset, held in memory; the decoders are :mod:`nnphases.probes.decoders`'.

The text does not give its decoder's widths; 64 channels at the bottleneck of the ``conv`` decoder keep a CPU
measurement affordable and are a parameter (``channels``). With ``warm_start`` a probe starts from the previous
step's trained models instead of from scratch (the source retrains). Results have the keys of
:meth:`nnphases.probes.RidgeProbe.result` and the same normalisation, in the inputs' own units whatever the
decoder learnt.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._common import Moments, ProbeError, check_batch
from .decoders import DECODERS, build_decoder
from .protocols import Protocol
from .protocols import protocol as named_protocol

__all__ = ["PaperProbe", "train_paper_probes"]

# Rows per forward pass when scoring stored activations: bounds the memory of an evaluation.
_SCORE_BATCH = 4096


def _train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable,
    x: torch.Tensor,
    target: torch.Tensor,
    epochs: int,
    batch: int,
    gen: torch.Generator,
    what: str,
    lr_drops: tuple[int, ...] = (),
) -> None:
    """Minibatch training, shuffled each epoch by ``gen``, the learning rate x0.1 after each epoch (from 1) in
    ``lr_drops``; a non-finite loss raises ProbeError."""
    model.train()
    for epoch in range(1, epochs + 1):
        for idx in torch.randperm(x.shape[0], generator=gen).split(batch):
            idx = idx.to(x.device)
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), target[idx])
            loss.backward()
            opt.step()
        if not math.isfinite(float(loss.detach())):
            raise ProbeError(f"trained-probe {what} diverged (loss {float(loss.detach())})")
        if epoch in lr_drops:
            for group in opt.param_groups:
                group["lr"] *= 0.1
    model.eval()


class PaperProbe:
    """Trained probes of one layer by a protocol of source 002 (``protocol``: ``"text"`` or ``"code"``), fed like
    :class:`~nnphases.probes.RidgeProbe`.

    :meth:`update_train` keeps the training batches (float32, on ``device``), :meth:`fit` trains the
    classifier and the decoder on them, scores the training accuracy and frees them, :meth:`update_test`
    scores test batches, :meth:`result` reports. :meth:`score_train` is a no-op (``scores_in_fit``): the
    training accuracy comes from the kept activations. ``act_shape``/``input_shape`` are per sample.
    Every training setting not given (None) is the protocol's: the classifier's ``classifier_epochs``,
    ``classifier_lr``, ``classifier_momentum`` and ``classifier_lr_drops`` (epochs from 1 after which its lr is
    x0.1), the decoder's ``decoder`` kind (:data:`~nnphases.probes.decoders.DECODERS`; ``"auto"`` picks ``conv``
    for [C, h, w] activations of [Cin, H, W] inputs, else ``dense``), ``decoder_epochs``, ``decoder_lr``,
    ``decoder_weight_decay`` and ``standardize_targets``, and the minibatch size ``batch``.
    ``warm_start`` (a fitted PaperProbe or its :meth:`state`) initialises the models from it when the
    shapes agree. ``reduce`` (a :class:`RidgeProbe` or a callable [B, ...] -> [B, F]) maps activations to features
    for the classifier and a dense or linear decoder. Training is deterministic for ``seed`` and leaves the global
    RNG as it was. Memory: the training activations and inputs, ``n_train * (prod(act_shape) +
    prod(input_shape))`` float32 values, until :meth:`fit` returns.
    """

    scores_in_fit = True

    def __init__(
        self,
        act_shape: tuple[int, ...],
        num_classes: int,
        input_shape: tuple[int, ...],
        *,
        protocol: str = "text",
        classifier_epochs: int | None = None,
        classifier_lr: float | None = None,
        classifier_momentum: float | None = None,
        classifier_lr_drops: tuple[int, ...] | None = None,
        decoder_epochs: int | None = None,
        decoder_lr: float | None = None,
        decoder_weight_decay: float | None = None,
        standardize_targets: bool | None = None,
        batch: int | None = None,
        decoder: str | None = None,
        hidden: int = 256,
        channels: int = 64,
        reduce: Any = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        warm_start: PaperProbe | dict | None = None,
    ) -> None:
        p = named_protocol(protocol).with_overrides(
            dict(
                classifier_epochs=classifier_epochs,
                classifier_lr=classifier_lr,
                classifier_momentum=classifier_momentum,
                classifier_lr_drops=None if classifier_lr_drops is None else tuple(classifier_lr_drops),
                decoder=decoder,
                decoder_epochs=decoder_epochs,
                decoder_lr=decoder_lr,
                decoder_weight_decay=decoder_weight_decay,
                standardize_targets=standardize_targets,
                batch=batch,
            )
        )
        for name, val in (
            ("classifier_epochs", p.classifier_epochs),
            ("decoder_epochs", p.decoder_epochs),
            ("batch", p.batch),
            ("num_classes", num_classes),
            ("hidden", hidden),
            ("channels", channels),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        for name, rate in (("classifier_lr", p.classifier_lr), ("decoder_lr", p.decoder_lr)):
            if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate) and rate > 0):
                raise ValueError(f"{name} must be a positive float, got {rate!r}")
        for name, nonneg in (
            ("classifier_momentum", p.classifier_momentum),
            ("decoder_weight_decay", p.decoder_weight_decay),
        ):
            ok = isinstance(nonneg, (int, float)) and not isinstance(nonneg, bool)
            if not (ok and math.isfinite(nonneg) and nonneg >= 0):
                raise ValueError(f"{name} must be a float >= 0, got {nonneg!r}")
        if p.classifier_momentum >= 1:
            raise ValueError(f"classifier_momentum must be below 1, got {p.classifier_momentum!r}")
        drops = p.lr_drops()
        if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in drops):
            raise ValueError(f"classifier_lr_drops must be epochs counted from 1, got {drops!r}")
        if not isinstance(p.standardize_targets, bool):
            raise ValueError(f"standardize_targets must be true or false, got {p.standardize_targets!r}")
        if p.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {p.decoder!r}")
        self.act_shape, self.input_shape = tuple(act_shape), tuple(input_shape)
        kind = p.decoder
        if kind == "auto":
            kind = "conv" if len(self.act_shape) == 3 and len(self.input_shape) == 3 and reduce is None else "dense"
        if kind == "conv" and (len(self.act_shape) != 3 or len(self.input_shape) != 3 or reduce is not None):
            raise ValueError(
                f"decoder='conv' needs unreduced conv activations [C, H, W] and image inputs "
                f"[C, H, W]; got act_shape={self.act_shape}, input_shape={self.input_shape}"
                f"{', with reduce' if reduce is not None else ''}"
            )
        if kind == "cladec":
            if reduce is not None:
                raise ValueError("decoder='cladec' reads the unreduced activations; drop reduce")
            build_decoder(kind, 1, self.act_shape, self.input_shape)  # its shape checks, before any data
        if reduce is None:
            self._features: Callable[[torch.Tensor], torch.Tensor] = lambda a: a.reshape(a.shape[0], -1)
            self.reduction: str | None = "none"  # None until fit() reads a RidgeProbe's choice
        elif hasattr(reduce, "reduce") and hasattr(reduce, "reduction"):  # a RidgeProbe: its reduction
            self._features, self.reduction = reduce.reduce, None
            self._reducer = reduce
        elif callable(reduce):
            self._features, self.reduction = reduce, "custom"
        else:
            raise ValueError(f"reduce must be a RidgeProbe, a callable or None, got {reduce!r}")
        self.protocol: Protocol = p
        self.num_classes, self.decoder = num_classes, kind
        self.classifier_epochs, self.classifier_lr = p.classifier_epochs, float(p.classifier_lr)
        self.decoder_epochs, self.decoder_lr = p.decoder_epochs, float(p.decoder_lr)
        self.batch, self.hidden, self.channels, self.seed = p.batch, hidden, channels, seed
        self.device = torch.device(device)
        self.input_dim = math.prod(self.input_shape)
        self.warm_start = warm_start.state() if isinstance(warm_start, PaperProbe) else warm_start
        self.classifier: nn.Module | None = None
        self.decoder_model: nn.Module | None = None
        self._acts: list[torch.Tensor] = []
        self._inputs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.n_train = 0
        self.features: int | None = None
        self.train_accuracy: float | None = None
        self._test_n = self._test_correct = 0
        self._test_sse = 0.0
        self._test_moments = Moments(self.input_dim, self.device)
        # The decoder's targets are (r - shift) / scale: the identity unless the protocol standardises them.
        self._shift = torch.zeros((), device=self.device)
        self._scale = torch.ones((), device=self.device)

    def _prepare(
        self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = acts.shape[0]
        if tuple(acts.shape[1:]) != self.act_shape and math.prod(acts.shape[1:]) != math.prod(self.act_shape):
            raise ValueError(f"acts must be [B, *{self.act_shape}], got shape {tuple(acts.shape)}")
        y = check_batch(acts, labels, inputs, self.num_classes, self.input_shape, self.device)
        a = acts.detach().to(self.device, torch.float32).reshape(b, *self.act_shape)
        r = inputs.detach().to(self.device, torch.float32).reshape(b, *self.input_shape)
        return a, y, r

    def update_train(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Keep one training batch (copied: the caller's buffers may be reused)."""
        if self.classifier is not None:
            raise RuntimeError("update_train after fit(); create a new PaperProbe to refit")
        a, y, r = self._prepare(acts, labels, inputs)
        self._acts.append(a.clone())
        self._labels.append(y.clone())
        self._inputs.append(r.clone())
        self.n_train += a.shape[0]

    def score_train(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Nothing to do: :meth:`fit` scores the training accuracy on the kept activations."""

    def _feats(self, a: torch.Tensor) -> torch.Tensor:
        return self._features(a).to(self.device, torch.float32)

    def _decoder_in(self, a: torch.Tensor) -> torch.Tensor:
        return a if self.decoder in ("conv", "cladec") else self._feats(a)

    def _target(self, r: torch.Tensor) -> torch.Tensor:
        """Inputs [B, *input_shape] as the decoder outputs them (images or flat), in the decoder's units."""
        r = (r - self._shift) / self._scale
        return r if self.decoder in ("conv", "cladec") else r.reshape(r.shape[0], -1)

    def _standardizer(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation of the training inputs (one of each for inputs without
        channels), broadcastable to [B, *input_shape]; a constant channel keeps scale 1."""
        if len(self.input_shape) == 3:
            dims: tuple[int, ...] = (0, 2, 3)
            shape: tuple[int, ...] = (self.input_shape[0], 1, 1)
        else:
            dims, shape = tuple(range(r.dim())), ()
        r64 = r.double()
        mean = r64.mean(dims)
        std = r64.std(dims, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return mean.float().reshape(shape), std.float().reshape(shape)

    def _build(self, features: int) -> tuple[nn.Module, nn.Module]:
        """The classifier and the decoder, also kept as ``self.classifier`` and ``self.decoder_model``."""
        self.classifier = classifier = nn.Linear(features, self.num_classes)
        self.decoder_model = decoder_model = build_decoder(
            self.decoder, features, self.act_shape, self.input_shape, hidden=self.hidden, channels=self.channels
        )
        prev = self.warm_start
        if prev is not None and prev["features"] == features and prev["decoder"] == self.decoder:
            classifier.load_state_dict(prev["classifier"])
            decoder_model.load_state_dict(prev["decoder_model"])
        classifier.to(self.device)
        decoder_model.to(self.device)
        return classifier, decoder_model

    def _models(self, what: str) -> tuple[nn.Module, nn.Module]:
        """The trained classifier and decoder; RuntimeError before :meth:`fit`."""
        if self.classifier is None:
            raise RuntimeError(f"{what} needs fit() first")
        assert self.decoder_model is not None  # _build makes both
        return self.classifier, self.decoder_model

    def fit(self) -> None:
        """Train the classifier and the decoder on the kept batches, score the training accuracy, free them."""
        if self.n_train < 2:
            raise ProbeError(f"cannot fit: need at least 2 training samples, got n_train={self.n_train}")
        acts, y, r = torch.cat(self._acts), torch.cat(self._labels), torch.cat(self._inputs)
        self._acts, self._labels, self._inputs = [], [], []
        feats = self._feats(acts)
        self.features = feats.shape[1]
        if self.reduction is None:
            self.reduction = str(self._reducer.reduction)
        if self.protocol.standardize_targets:
            self._shift, self._scale = self._standardizer(r)
        p = self.protocol
        fork = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork), torch.enable_grad():
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            classifier, decoder_model = self._build(self.features)
            _train(
                classifier,
                torch.optim.SGD(classifier.parameters(), lr=self.classifier_lr, momentum=p.classifier_momentum),
                nn.functional.cross_entropy,
                feats,
                y,
                self.classifier_epochs,
                self.batch,
                gen,
                "classifier",
                p.lr_drops(),
            )
            _train(
                decoder_model,
                torch.optim.Adam(decoder_model.parameters(), lr=self.decoder_lr, weight_decay=p.decoder_weight_decay),
                nn.functional.mse_loss,
                self._decoder_in(acts),
                self._target(r),
                self.decoder_epochs,
                self.batch,
                gen,
                "decoder",
            )
        with torch.no_grad():
            correct = sum(
                int((classifier(f).argmax(1) == t).sum())
                for f, t in zip(feats.split(_SCORE_BATCH), y.split(_SCORE_BATCH), strict=True)
            )
        self.train_accuracy = correct / self.n_train
        self.warm_start = None  # keep no chain of earlier probes alive

    def state(self) -> dict | None:
        """The trained models (CPU copies) for ``warm_start`` of a later probe; None before :meth:`fit`."""
        if self.classifier is None:
            return None
        classifier, decoder_model = self._models("state")
        return {
            "features": self.features,
            "decoder": self.decoder,
            "classifier": {k: v.detach().cpu().clone() for k, v in classifier.state_dict().items()},
            "decoder_model": {k: v.detach().cpu().clone() for k, v in decoder_model.state_dict().items()},
        }

    @torch.no_grad()
    def update_test(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Accumulate the test accuracy, the reconstruction squared error (in the inputs' units) and the test
        inputs' moments."""
        classifier, decoder_model = self._models("update_test")
        a, y, r = self._prepare(acts, labels, inputs)
        for ab, yb, rb in zip(a.split(_SCORE_BATCH), y.split(_SCORE_BATCH), r.split(_SCORE_BATCH), strict=True):
            self._test_correct += int((classifier(self._feats(ab)).argmax(1) == yb).sum())
            out = decoder_model(self._decoder_in(ab)).reshape(rb.shape).double()
            err = out * self._scale.double() + self._shift.double() - rb.double()
            self._test_sse += float((err**2).sum())
            self._test_moments.add(rb.reshape(rb.shape[0], -1).double())
        self._test_n += a.shape[0]

    def result(self) -> dict[str, Any]:
        if self.classifier is None:
            raise RuntimeError("result needs fit() first")
        if self._test_n == 0:
            raise ProbeError("no test data scored (n_test=0); call update_test first")
        mse = self._test_sse / (self._test_n * self.input_dim)
        acc = self._test_correct / self._test_n
        if not math.isfinite(mse):
            raise ProbeError("paper-mode decoder gives non-finite reconstructions")
        return {
            "test_accuracy": acc,
            "train_accuracy": self.train_accuracy,
            "reconstruction_mse": mse,
            "reconstruction_nmse": self._test_moments.normalised(mse),
            "ridge": None,
            "ridge_search": None,
            "features": self.features,
            "reduction": self.reduction,
            "decoder": self.decoder,
            "n_train": self.n_train,
            "n_test": self._test_n,
        }


def train_paper_probes(
    train_acts: torch.Tensor,
    train_y: torch.Tensor,
    train_inputs: torch.Tensor,
    test_acts: torch.Tensor,
    test_y: torch.Tensor,
    test_inputs: torch.Tensor,
    num_classes: int,
    **options: Any,
) -> dict[str, Any]:
    """Paper-mode probes on in-memory activations in one call: :class:`PaperProbe` fed with all of them.

    ``options`` are :class:`PaperProbe`'s keywords (epochs, learning rates, ``batch``, ``decoder``,
    ``reduce``, ``seed``, ``device``...). Returns the keys of :meth:`PaperProbe.result`.
    """
    if train_acts.shape[0] < 2:
        raise ProbeError(f"cannot fit: need at least 2 training samples, got n_train={train_acts.shape[0]}")
    if test_acts.shape[0] < 1:
        raise ProbeError("no test data (n_test=0)")
    if tuple(train_inputs.shape[1:]) != tuple(test_inputs.shape[1:]):
        raise ValueError(
            f"train_inputs and test_inputs differ per sample: {tuple(train_inputs.shape[1:])} vs "
            f"{tuple(test_inputs.shape[1:])}"
        )
    probe = PaperProbe(tuple(train_acts.shape[1:]), num_classes, tuple(train_inputs.shape[1:]), **options)
    probe.update_train(train_acts, train_y, train_inputs)
    probe.fit()
    probe.update_test(test_acts, test_y, test_inputs)
    return probe.result()
