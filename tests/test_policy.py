"""tau, p(tau) and Eq. 2: sampling frequencies and the direction of the update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from dha_train.da.policy import AugmentPolicy, policy_stats


def test_uniform_start_and_entropy() -> None:
    policy = AugmentPolicy()
    p = policy.probs()
    assert p.shape == (14, 14)
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))
    stats = policy.stats()
    assert abs(stats["tau_entropy"] - math.log(196)) < 1e-5 and stats["tau_kl_uniform"] < 1e-9
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


def test_collapse_guard_bounds_the_likeliest_pair() -> None:
    """With the clamp, Eq. 2 pushing one pair for many steps leaves it <= exp(2 clip) times as
    likely as any other; without the clamp (clip = 0) the same updates collapse p(tau)."""
    pairs = torch.tensor([[2, 3]] * 8 + [[5, 7]] * 8)
    losses = torch.tensor([3.0] * 8 + [0.5] * 8)
    result = {}
    for clip in (1.0, 0.0):
        policy = AugmentPolicy(clip=clip)
        opt = torch.optim.Adam(policy.parameters(), lr=0.1)
        for _ in range(200):
            opt.zero_grad()
            policy.loss(pairs, losses).backward()
            opt.step()
            policy.clamp_()
        result[clip] = policy.stats()
    bounded = result[1.0]
    assert bounded["tau_max_x_uniform"] / bounded["tau_min_x_uniform"] <= math.exp(2.0) + 1e-6
    assert bounded["tau_max_x_uniform"] * 1 / 196 < 0.10  # no pair above 10% of the mass
    assert bounded["tau_kl_uniform"] > 1e-3  # and it did move
    assert result[0.0]["tau_max_x_uniform"] / 196 > 0.5  # unguarded: one pair takes over


def test_policy_stats_against_a_hand_computed_distribution() -> None:
    p = torch.full((14, 14), 1.0 / 392)
    p[0, 0] += 0.5 - 1.0 / 392  # half the mass on one pair, the rest spread evenly
    p = p / p.sum()
    stats = policy_stats(p)
    flat = p.flatten().double()
    kl = float((flat * torch.log(flat * 196)).sum())
    assert stats["tau_kl_uniform"] == pytest.approx(kl, rel=1e-9)
    assert stats["tau_max_x_uniform"] == pytest.approx(float(flat.max()) * 196)
    assert stats["tau_min_x_uniform"] == pytest.approx(float(flat.min()) * 196)
