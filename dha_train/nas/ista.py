"""ISTA-NAS encoding of architecture parameters (DHA Eqs. 5-7), batched over decision units.

Per unit u: a fixed measurement matrix A_u (m_u x n_u, m_u < n_u, entries U[0, 1) from a
seeded generator, never trained) and a trainable compressed vector b_u (m_u). alpha is
recovered from b by ISTA on the LASSO 0.5 ||A x - b||^2 + lambda ||x||_1 (Eq. 6); the support
is the top-k |x| per unit; Eq. 7 gives alpha on the support as a function of b with the
correction term held constant, so dL/db = A_S dL/dalpha_S. Units of different sizes are
padded with zero rows/columns to the largest one (padded entries of x stay exactly 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "measurement_size",
    "measurement_matrices",
    "lipschitz",
    "ista",
    "lasso",
    "top_k_support",
    "eq7_alpha",
    "eq7_weights",
]


def measurement_size(n: int) -> int:
    """m for a unit of n candidates: 7 as in ISTA-NAS, and always fewer than n."""
    return max(1, min(7, n - 1))


def measurement_matrices(sizes: Sequence[int], *, seed: int) -> tuple[Tensor, Tensor]:
    """Padded A (U, m_max, n_max), U[0, 1) on each unit's (m_u, n_u) block and 0 elsewhere,
    and the row mask (U, m_max) of real measurements. Deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    ms = [measurement_size(n) for n in sizes]
    a = torch.zeros(len(sizes), max(ms), max(sizes))
    rows = torch.zeros(len(sizes), max(ms), dtype=torch.bool)
    for u, (m, n) in enumerate(zip(ms, sizes, strict=True)):
        a[u, :m, :n] = torch.rand(m, n, generator=gen)
        rows[u, :m] = True
    return a, rows


def lipschitz(a: Tensor) -> Tensor:
    """L = ||A_u||_2^2 per unit, the step-size constant of Eq. 6, shape (U,)."""
    return torch.linalg.matrix_norm(a, ord=2).square()


def ista(
    a: Tensor,
    b: Tensor,
    *,
    lam: float = 1e-5,
    x0: Tensor | None = None,
    lip: Tensor | None = None,
    max_iters: int = 2000,
    tol: float = 1e-9,
    check_every: int = 10,
) -> Tensor:
    """Eq. 6 batched: x <- soft(x - A^T (A x - b) / L, lambda / L) for every unit at once.

    ``a`` (U, m, n), ``b`` (U, m), warm start ``x0`` (U, n). Stops when no entry moved more
    than ``tol`` over ``check_every`` iterations, or after ``max_iters``. No gradient.
    The update is computed as z = (I - A^T A / L) x + A^T b / L and soft(z, t) = z - clamp(z,
    -t, t): the same iterate in three tensor operations, which sets the speed of the loop.
    """
    with torch.no_grad():
        lip = lipschitz(a) if lip is None else lip
        step = (1.0 / lip).view(-1, 1, 1)  # (U, 1, 1)
        threshold = lam * step
        at = a.transpose(1, 2)
        eye = torch.eye(a.shape[2], dtype=a.dtype).expand(a.shape[0], -1, -1)
        contraction = eye - step * torch.bmm(at, a)  # (U, n, n)
        offset = step * torch.bmm(at, b.unsqueeze(2))  # (U, n, 1)
        x = torch.zeros(a.shape[0], a.shape[2], 1, dtype=a.dtype) if x0 is None else x0.unsqueeze(2)
        last = x
        for it in range(1, max_iters + 1):
            z = torch.baddbmm(offset, contraction, x)
            x = z - torch.clamp(z, -threshold, threshold)
            if it % check_every == 0:
                if (x - last).abs().max() <= tol:
                    break
                last = x
        return x.squeeze(2)


def top_k_support(
    x: Tensor, sizes: Sequence[int], topk: Sequence[int]
) -> tuple[tuple[int, ...], ...]:
    """Indices of the k largest |x| of each unit (ties broken by index), largest first."""
    mags = x.abs().tolist()
    out = []
    for row, n, k in zip(mags, sizes, topk, strict=True):
        order = sorted(range(n), key=lambda i, r=row: (-r[i], i))
        out.append(tuple(order[:k]))
    return tuple(out)


def eq7_alpha(a: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """Eq. 7 for every candidate: alpha = A^T b - E^T x with E = A^T A - I and x held constant.

    ``a`` (U, m, n) and ``x`` (U, n) are constants on b's device; ``b`` (U, m) carries the
    gradient, so dL/db_u = A_u dL/dalpha_u. At the LASSO solution of a noise-free b = A x this
    returns x itself. Returns (U, n); padded candidates (zero columns of A) get alpha = x = 0.
    This is the one place Eq. 7 is written: the forward weights (:func:`eq7_weights`) and the
    search's expected cost both use it.
    """
    x = x.detach()
    correction = torch.bmm(a.transpose(1, 2), torch.bmm(a, x.unsqueeze(2))).squeeze(2) - x
    return torch.bmm(a.transpose(1, 2), b.unsqueeze(2)).squeeze(2) - correction


def eq7_weights(a: Tensor, b: Tensor, x: Tensor, support: Sequence[Sequence[int]]) -> list[Tensor]:
    """:func:`eq7_alpha` restricted to each unit's support (alpha_S of Eq. 7): one tensor of
    len(support[u]) per unit, differentiable in b."""
    index = torch.tensor([list(s) for s in support], device=a.device)  # (U, k)
    return list(torch.gather(eq7_alpha(a, b, x), 1, index).unbind(0))


def lasso(
    a: Tensor,
    b: Tensor,
    *,
    lam: float = 1e-5,
    stages: int = 12,
    iters_per_stage: int = 200,
    tol: float = 1e-10,
) -> Tensor:
    """Solve the LASSO of Eq. 5 by Eq. 6 with continuation on lambda (batched over units).

    With the small lambda of ISTA-NAS (1e-5), plain ISTA from zero first reaches a dense
    least-squares fit and then moves towards the sparse solution by lambda / L per iteration.
    Starting at lambda_max = max |A^T b| (where x = 0) and shrinking lambda geometrically to
    ``lam``, each stage warm-started, reaches the sparse solution in a few hundred iterations.
    """
    with torch.no_grad():
        lip = lipschitz(a)
        lam_max = torch.bmm(a.transpose(1, 2), b.unsqueeze(2)).abs().max().item()
        x = torch.zeros(a.shape[0], a.shape[2], dtype=a.dtype)
        start = max(lam_max, lam)
        for s in range(stages + 1):
            lam_s = start * (lam / start) ** (s / stages)
            x = ista(a, b, lam=lam_s, x0=x, lip=lip, max_iters=iters_per_stage, tol=tol)
        return x
