"""Eqs. 5-7: recovery of known sparse vectors and the gradient that reaches b."""

from __future__ import annotations

import torch

from dha_train.nas.ista import (
    eq7_alpha,
    eq7_weights,
    ista,
    lasso,
    measurement_matrices,
    top_k_support,
)


def _sparse(units: int, n: int, k: int, gen: torch.Generator, *, signed: bool) -> torch.Tensor:
    alpha = torch.zeros(units, n, dtype=torch.float64)
    for u in range(units):
        idx = torch.randperm(n, generator=gen)[:k]
        mag = torch.rand(k, generator=gen, dtype=torch.float64) + 0.5
        sign = torch.sign(torch.randn(k, generator=gen, dtype=torch.float64)) if signed else 1.0
        alpha[u, idx] = mag * sign
    return alpha


def test_lasso_recovers_known_sparse_vectors_noise_free_and_noisy() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 20, 40, generator=gen, dtype=torch.float64) / 20**0.5
    alpha = _sparse(20, 40, 2, gen, signed=True)
    b = torch.bmm(a, alpha.unsqueeze(2)).squeeze(2)
    x = lasso(a, b, lam=1e-5)
    assert (x - alpha).abs().max() < 1e-3
    noisy = b + 1e-3 * torch.randn(b.shape, generator=gen, dtype=torch.float64)
    x = lasso(a, noisy, lam=1e-5)
    assert (x - alpha).abs().max() < 0.05
    assert top_k_support(x, [40] * 20, [2] * 20) == top_k_support(alpha, [40] * 20, [2] * 20)


def test_project_matrices_recover_the_support_of_one_sparse_units() -> None:
    sizes = [7] * 40  # a MobileNet layer: 7 candidates, m = 6 measurements, top-1
    a, rows = measurement_matrices(sizes, seed=3)
    assert rows.sum(1).tolist() == [6] * 40 and a.min() >= 0.0 and a.max() < 1.0
    gen = torch.Generator().manual_seed(1)
    alpha = _sparse(40, 7, 1, gen, signed=False)
    b = torch.bmm(a.double(), alpha.unsqueeze(2)).squeeze(2)
    x = lasso(a.double(), b)
    pairs = zip(
        top_k_support(x, sizes, [1] * 40), top_k_support(alpha, sizes, [1] * 40), strict=True
    )
    hits = sum(p == q for p, q in pairs)
    assert hits >= 36  # coherent U[0,1) matrices: recovery is frequent, not guaranteed


def test_ista_fixed_point_satisfies_lasso_optimality() -> None:
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(4, 7, 14, generator=gen, dtype=torch.float64)
    b = torch.rand(4, 7, generator=gen, dtype=torch.float64)
    lam = 0.2
    x = ista(a, b, lam=lam, max_iters=3000, tol=1e-13)
    grad = torch.bmm(a.transpose(1, 2), (torch.bmm(a, x.unsqueeze(2)).squeeze(2) - b).unsqueeze(2))
    grad = grad.squeeze(2)
    on = x != 0
    assert torch.allclose(grad[on], -lam * torch.sign(x[on]), atol=1e-4)
    assert (grad[~on].abs() <= lam + 1e-6).all()


def test_eq7_gradient_matches_finite_differences() -> None:
    sizes = [14, 21, 28]
    a, _ = measurement_matrices(sizes, seed=0)
    a = a.double()
    gen = torch.Generator().manual_seed(4)
    b = torch.randn(3, a.shape[1], generator=gen, dtype=torch.float64) * (a.abs().sum(2) > 0)
    x = lasso(a, b)
    support = top_k_support(x, sizes, [2, 2, 2])
    target = torch.randn(3, 2, generator=gen, dtype=torch.float64)

    def loss(bb: torch.Tensor) -> torch.Tensor:
        w = torch.stack(eq7_weights(a, bb, x, support))
        return ((w - target) ** 2).sum() + torch.sin(w).sum()

    bb = b.clone().requires_grad_(True)
    loss(bb).backward()
    numeric = torch.zeros_like(b)
    eps = 1e-6
    for idx in torch.nonzero(a.abs().sum(2) > 0):
        u, i = idx.tolist()
        plus, minus = b.clone(), b.clone()
        plus[u, i] += eps
        minus[u, i] -= eps
        numeric[u, i] = (loss(plus) - loss(minus)) / (2 * eps)
    assert torch.allclose(bb.grad, numeric, atol=1e-6)
    # dL/db = A_S dL/dalpha_S (Eq. 7 with the correction held constant)
    w = torch.stack(eq7_weights(a, b, x, support)).requires_grad_(True)
    (((w - target) ** 2).sum() + torch.sin(w).sum()).backward()
    for u, s in enumerate(support):
        assert torch.allclose(bb.grad[u], a[u][:, list(s)] @ w.grad[u], atol=1e-9)
    # at the LASSO solution Eq. 7's alpha equals x on the support
    w0 = torch.stack(eq7_weights(a, b, x, support))
    xs = torch.stack([x[u, list(s)] for u, s in enumerate(support)])
    assert torch.allclose(w0, xs, atol=1e-3)


def test_eq7_alpha_is_x_at_the_lasso_solution_and_linear_in_b() -> None:
    """Eq. 7 checked against its definition, not against itself: at the LASSO solution x of
    b = A x* (x* 2-sparse; with m < n, x need not be x*), alpha = A^T b - (A^T A - I) x equals
    x up to lambda (the KKT condition A^T (b - A x) = lambda * subgradient), and
    d alpha / d b = A^T exactly."""
    sizes = [14, 21, 28]
    a, rows = measurement_matrices(sizes, seed=3)
    a = a.double()
    gen = torch.Generator().manual_seed(5)
    x_true = torch.zeros(3, a.shape[2], dtype=torch.float64)
    for u, n in enumerate(sizes):
        x_true[u, torch.randperm(n, generator=gen)[:2]] = (
            torch.rand(2, generator=gen, dtype=torch.float64) + 0.5
        )
    b = torch.bmm(a, x_true.unsqueeze(2)).squeeze(2)
    lam = 1e-5
    x = lasso(a, b, lam=lam)
    alpha = eq7_alpha(a, b, x)
    # KKT: |A^T (b - A x)| <= lambda at the optimum; the solver stops a few lambda from it
    assert (alpha - x).abs().max() <= 1e-4
    jac = torch.autograd.functional.jacobian(lambda bb: eq7_alpha(a, bb, x), b)  # (U,n,U,m)
    for u in range(3):
        torch.testing.assert_close(jac[u, :, u, :], a[u].T, rtol=0, atol=1e-12)
    # eq7_weights is the same alpha restricted to the support
    support = top_k_support(x, sizes, [2, 2, 2])
    for u, w in enumerate(eq7_weights(a, b, x, support)):
        torch.testing.assert_close(w, alpha[u, list(support[u])])
