"""Probes, fast (closed-form ridge) against paper mode (the source's trained classifier and decoder),
on the same layer activations at the powers-of-two checkpoints of a real training run: the cost of each
per measurement step, measured in this run, and how the two modes' curves over training agree (Spearman
rank correlation over steps). Targets: fast >= 10x cheaper, rank correlation >= 0.9.

The probes are fitted on 24,000 training samples (the source fits on the whole training set): the trained decoder's
level at a step depends on how many Adam updates its 30 epochs give it, and with a few thousand samples it is still
far from converged, so its curve then measures the optimiser more than the layer."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from nnphases.experiments import data, models
from nnphases.recording.capture import ReluCapture
from nnphases.analysis.statistics import spearman
from nnphases.probes import RidgeProbe, train_paper_probes
from nnphases.recording.schedule import powers_of_two


def _layer_acts(model, x, site: str, batch: int = 1000) -> torch.Tensor:
    parts: list[torch.Tensor] = []
    with torch.no_grad(), ReluCapture(model, lambda n, a: parts.append(a.clone()), sites=[site]) as cap:
        for s in range(0, x.shape[0], batch):
            cap(x[s:s + batch])
    return torch.cat(parts)


def _fast(a_tr, y_tr, r_tr, a_te, y_te, r_te, **kw) -> tuple[dict, float]:
    """Fast-mode probes fed in batches of 500 as a run feeds them, and their cost in seconds."""
    t0 = time.perf_counter()
    probe = RidgeProbe(a_tr.shape[1], 10, r_tr.shape[1], **kw)
    for s in range(0, a_tr.shape[0], 500):
        probe.update_train(a_tr[s:s + 500], y_tr[s:s + 500], r_tr[s:s + 500])
    probe.fit()
    probe.update_test(a_te, y_te, r_te)
    return probe.result(), time.perf_counter() - t0


def test_fast_vs_paper(benchmark):
    quick = benchmark.disabled
    try:
        full = data.fashion_mnist()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tr_idx, te_idx = data.stratified_split(full.y, 1000 if quick else 3000, seed=0)
    train, test = full.subset(tr_idx[: 2000 if quick else 24000]), full.subset(te_idx)
    torch.manual_seed(0)
    model = models.fc_bn(784, 3, 256, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    total = 64 if quick else 1024
    steps = powers_of_two(total)
    g = torch.Generator().manual_seed(0)
    rows, t_fast, t_rf_all, t_paper = [], [], [], []
    site = "relu2"
    for step in range(total + 1):
        if step in steps:
            model.eval()
            a_tr, a_te = _layer_acts(model, train.x, site), _layer_acts(model, test.x, site)
            r_tr, r_te = train.x.flatten(1), test.x.flatten(1)
            fast, t_lin = _fast(a_tr, train.y, r_tr, a_te, test.y, r_te)
            rf, t_rf = _fast(a_tr, train.y, r_tr, a_te, test.y, r_te, decoder="random-features",
                             decoder_width=256 if quick else 1024)
            t1 = time.perf_counter()
            paper = train_paper_probes(a_tr, train.y, r_tr, a_te, test.y, r_te, 10,
                                       classifier_epochs=2 if quick else 20, decoder_epochs=2 if quick else 30)
            t2 = time.perf_counter()
            t_fast.append(t_lin)
            t_rf_all.append(t_rf)
            t_paper.append(t2 - t1)
            rows.append((step, fast["test_accuracy"], paper["test_accuracy"], fast["reconstruction_nmse"],
                         rf["reconstruction_nmse"], paper["reconstruction_nmse"]))
            model.train()
        if step == total:
            break
        idx = torch.randint(0, len(train), (128,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
        opt.step()
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    acc_rho = spearman([r[1] for r in rows], [r[2] for r in rows])
    nmse_rho = spearman([r[3] for r in rows], [r[5] for r in rows])
    rf_rho = spearman([r[4] for r in rows], [r[5] for r in rows])
    ratio = float(np.sum(t_paper) / np.sum(t_fast))
    rf_ratio = float(np.sum(t_paper) / np.sum(t_rf_all))
    print(f"\nlayer {site} of a 3x256 FC-BN net on FashionMNIST ({len(train)} train / {len(test)} test samples)")
    print(f"{'step':>6s} {'acc fast':>9s} {'acc paper':>9s} {'nmse fast':>9s} {'nmse rf':>9s} {'nmse paper':>10s}")
    for r in rows:
        print(f"{r[0]:6d} {r[1]:9.3f} {r[2]:9.3f} {r[3]:9.3f} {r[4]:9.3f} {r[5]:10.3f}")
    print(f"per step: fast {np.mean(t_fast) * 1e3:.1f} ms (random-features decoder {np.mean(t_rf_all) * 1e3:.1f} ms), "
          f"paper {np.mean(t_paper) * 1e3:.1f} ms: fast is {ratio:.1f}x cheaper ({rf_ratio:.1f}x with random "
          f"features); Spearman over steps: accuracy {acc_rho:.2f}, reconstruction {nmse_rho:.2f} (linear decoder), "
          f"{rf_rho:.2f} (random features)")
    benchmark.extra_info.update(speedup=ratio, speedup_rf=rf_ratio, spearman_accuracy=acc_rho,
                                spearman_nmse=nmse_rho, spearman_nmse_rf=rf_rho)
    for r in rows:
        assert 0 <= r[1] <= 1 and 0 <= r[2] <= 1 and all(np.isfinite(v) and v >= 0 for v in r[3:])
