"""tau, p(tau) and Eq. 2: sampling frequencies and the direction of the update."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import chisquare

from dha_train.policy import AugmentPolicy


def test_uniform_start_and_entropy() -> None:
    policy = AugmentPolicy()
    p = policy.probs()
    assert p.shape == (14, 14)
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))
    assert abs(policy.entropy() - math.log(196)) < 1e-5
    assert len(policy.top_pairs(5)) == 5


def test_sampled_pair_frequencies_match_p_tau() -> None:
    torch.manual_seed(0)
    policy = AugmentPolicy(num_ops=4)  # 16 pairs, so 40k draws fill every cell well
    with torch.no_grad():
        policy.tau.copy_(torch.randn(4, 4) * 0.8)
    g = torch.Generator().manual_seed(1)
    pairs = torch.cat([policy.sample(4000, g) for _ in range(10)])
    flat = (pairs[:, 0] * 4 + pairs[:, 1]).numpy()
    observed = np.bincount(flat, minlength=16)
    expected = policy.probs().detach().flatten().double().numpy() * len(flat)
    result = chisquare(observed, expected)
    assert result.pvalue > 0.01, result
    # and a wrong distribution (uniform) is rejected by the same test
    assert chisquare(observed, np.full(16, len(flat) / 16)).pvalue < 1e-6


def test_per_sample_draws_differ_within_a_batch() -> None:
    pairs = AugmentPolicy().sample(256, torch.Generator().manual_seed(0))
    assert pairs.shape == (256, 2)
    assert len({tuple(p) for p in pairs.tolist()}) > 100


def test_eq2_update_raises_probability_of_high_loss_pair() -> None:
    policy = AugmentPolicy()
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    pairs = torch.tensor([[2, 3], [5, 7]])
    losses = torch.tensor([3.0, 0.5], requires_grad=True)  # pair (2,3) gives the higher loss
    before = policy.probs().detach()
    loss = policy.loss(pairs, losses)
    # Eq. 2 value: -sum p_k L_k
    torch.testing.assert_close(loss, -(before[2, 3] * 3.0 + before[5, 7] * 0.5))
    opt.zero_grad()
    loss.backward()
    assert losses.grad is None  # per-sample losses are constants for tau
    opt.step()
    after = policy.probs().detach()
    assert after[2, 3] > before[2, 3]
    assert after[2, 3] / after[5, 7] > before[2, 3] / before[5, 7]
    # the analytic gradient: dL/dtau_j = -sum_k L_k p_k (1[j=k] - p_j)
    p = before.flatten()
    grad = torch.zeros(196)
    for (i, j), lk in zip(pairs.tolist(), [3.0, 0.5], strict=True):
        k = i * 14 + j
        onehot = torch.zeros(196)
        onehot[k] = 1.0
        grad += -lk * p[k] * (onehot - p)
    torch.testing.assert_close(policy.tau.grad.flatten(), grad)
