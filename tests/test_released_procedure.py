"""Tests of the transcription of the released probe procedure (tests/released_procedure.py) on tiny synthetic data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from released_procedure import classifier_lr, read_activations, released_probes
from torch import nn

CLASSES = 4


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The tensors are tiny: one intra-op thread is faster than several, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images 1x8x8: one of four random +-1 prototypes (the label) plus a little noise; linearly separable."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randint(0, 2, (CLASSES, 64), generator=g).float() * 2 - 1
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = prototypes[y] + 0.3 * torch.randn(n, 64, generator=g)
    return x.reshape(n, 1, 8, 8), y


def low_rank(n: int, seed: int, rank: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images 1x8x8 on a ``rank``-dimensional affine plane (Gaussian mixtures of +-1 patterns) and random labels.

    The decoder's optimiser (Adam, lr 3e-4) needs thousands of steps to learn a full-rank identity; on a plane of a few
    dimensions spread over all pixels, a few hundred suffice.
    """
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randint(0, 2, (rank, 64), generator=g).float() * 2 - 1
    x = torch.randn(n, rank, generator=g) @ patterns + 0.5
    return x.reshape(n, 1, 8, 8), torch.randint(0, CLASSES, (n,), generator=g)


def probes(prefix: nn.Module, x: torch.Tensor, y: torch.Tensor, n_train: int, **kwargs: object) -> dict[str, float]:
    """``released_probes`` on the split ``x[:n_train]`` / ``x[n_train:]``, targets standardised with x's own stats."""
    return released_probes(
        prefix,
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        num_classes=CLASSES,
        mean=float(x[:n_train].mean()),
        std=float(x[:n_train].std()),
        **kwargs,  # type: ignore[arg-type]
    )


def test_same_seed_replays_and_leaves_global_rng_alone() -> None:
    x, y = separable(400, seed=1)
    state = torch.get_rng_state()
    first = probes(nn.Flatten(), x, y, 300, seed=3, classifier_epochs=2, decoder_epochs=2)
    assert torch.equal(torch.get_rng_state(), state)
    again = probes(nn.Flatten(), x, y, 300, seed=3, classifier_epochs=2, decoder_epochs=2)
    assert first == again
    other = probes(nn.Flatten(), x, y, 300, seed=4, classifier_epochs=2, decoder_epochs=2)
    assert other != first
    assert set(first) == {"test_accuracy", "train_accuracy", "reconstruction_nmse"}


def test_classifier_separates_separable_data() -> None:
    x, y = separable(400, seed=2)
    result = probes(nn.Flatten(), x, y, 300, decoder_epochs=1)
    assert result["test_accuracy"] >= 0.95
    assert result["train_accuracy"] >= 0.95


def test_decoder_reconstructs_through_the_identity() -> None:
    # 2048 training images: 16 batches of 128 a epoch, 320 Adam steps in the released 20 epochs.
    x, y = low_rank(2560, seed=5)
    result = probes(nn.Flatten(), x, y, 2048, classifier_epochs=1)
    assert result["reconstruction_nmse"] < 0.05


def test_decoder_without_information_does_not_reconstruct() -> None:
    # A prefix whose output ignores the input: the best linear decoder predicts the mean, nmse about 1.
    x, y = low_rank(2560, seed=6)
    blind = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
    with torch.no_grad():
        blind[1].weight.zero_()
    result = probes(blind, x, y, 2048, classifier_epochs=1)
    assert result["reconstruction_nmse"] > 0.9


def batchnorm_prefix(train: bool) -> nn.Module:
    """Flatten + BatchNorm1d whose running statistics (mean 3, variance 9) are far from any batch's."""
    prefix = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64))
    prefix[1].running_mean.fill_(3.0)
    prefix[1].running_var.fill_(9.0)
    prefix[1].num_batches_tracked.fill_(7)
    return prefix.train(train)


@pytest.mark.parametrize("caller_training", [True, False])
def test_read_mode_and_caller_model_untouched(caller_training: bool) -> None:
    x, y = separable(400, seed=7)
    prefix = batchnorm_prefix(caller_training)
    before = {k: v.clone() for k, v in prefix.state_dict().items()}

    in_train = read_activations(prefix, x, batch=128, read_mode="train")
    in_eval = read_activations(prefix, x, batch=128, read_mode="eval")
    assert not torch.allclose(in_train, in_eval, atol=1e-2)
    # eval: the running statistics; train: each batch of 128 consecutive rows normalised by its own statistics.
    bn = prefix[1]
    expected_eval = (x.reshape(len(x), -1) - 3.0) / torch.sqrt(torch.tensor(9.0) + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(in_eval, expected_eval.detach())
    for rows in torch.split(in_train, 128):
        torch.testing.assert_close(rows.mean(dim=0), torch.zeros(64), atol=1e-5, rtol=0)

    results = {
        mode: probes(prefix, x, y, 300, classifier_epochs=2, decoder_epochs=2, read_mode=mode)
        for mode in ("train", "eval")
    }
    assert results["train"] != results["eval"]

    assert prefix.training is caller_training
    assert all(m.training is caller_training for m in prefix.modules())
    after = prefix.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_read_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="read_mode"):
        read_activations(nn.Flatten(), torch.zeros(2, 1, 2, 2), read_mode="test")


def test_classifier_lr_schedule() -> None:
    assert [classifier_lr(epoch) for epoch in range(10)] == [0.01] * 10
    assert [classifier_lr(epoch) for epoch in range(10, 20)] == pytest.approx([0.001] * 10, rel=1e-12)
    # Under 16 epochs the released rule also drops after epoch int(3/4 of the epochs): for 8 epochs the period is
    # 8 // 3 + 8 // 10 + 2 = 4, so drops after epochs 3, 6 (= int(8 * 3 / 4)) and 7 (too late to matter).
    assert [classifier_lr(epoch, epochs=8) for epoch in range(8)] == pytest.approx(
        [0.01] * 4 + [0.001] * 3 + [0.0001], rel=1e-12
    )
