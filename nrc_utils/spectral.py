"""Singular values and rank measures of weight matrices (the rank measures of chapter 3).

The paper's Theorem 3.1 (Zangrando et al., arXiv:2402.03991; the book's form is chapter 3's
``thm-neural-rank-collapse``) bounds the distance of a weight matrix ``W_l`` from the set
``M_K`` of matrices of rank at most ``K``; by the Eckart-Young theorem that distance is

    dist_F(W, M_K) = (sum_{j > K} sigma_j(W)^2)^(1/2),

the *tail distance*, which is the headline quantity of the book. The other measures
here summarise "how low-rank" a matrix is in the usual ways.

Conventions, shared by every function:

- Input is either a 2-D matrix (``numpy.ndarray`` or ``torch.Tensor``, any dtype,
  any device) or a 1-D vector that is taken to *be* its singular values. There is no
  other reading of a 1-D input: a single row must be passed as a ``(1, n)`` matrix.
  Convolution kernels ``(out, in, kh, kw)`` are reshaped by the caller, normally to
  ``(out, in * kh * kw)``.
- Everything is computed in float64; singular values are sorted in descending order,
  ``sigma_1 >= sigma_2 >= ... >= 0``.
- The zero matrix (and an empty one) has every rank equal to 0 and tail distance 0;
  no function returns NaN for it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

__all__ = [
    "singular_values",
    "numerical_rank",
    "stable_rank",
    "effective_rank",
    "energy_rank",
    "tail_distance",
    "rank_report",
    "loglog_slope",
    "ratio",
    "top_k_projection",
    "outside_top_k",
]

#: Default relative tolerance of :func:`numerical_rank`: a singular value counts when it
#: exceeds ``1e-3 * sigma_1``. This is far above float32/float64 round-off (so trained
#: float32 weights are not inflated by noise) and well below the singular values that
#: carry the function of a trained layer; the book states it wherever a rank is shown.
DEFAULT_RTOL = 1e-3

#: Default energy fraction of :func:`energy_rank`.
DEFAULT_ENERGY = 0.99


def _to_float64(A: Any) -> np.ndarray:
    """``A`` (numpy array, torch tensor or nested sequence) as a float64 numpy array."""
    if isinstance(A, torch.Tensor):
        return A.detach().to(device="cpu", dtype=torch.float64).numpy()
    A = np.asarray(A)
    if A.dtype == object or np.iscomplexobj(A):
        raise TypeError(
            f"expected a real numeric matrix or vector of singular values, got dtype {A.dtype}"
        )
    return A.astype(np.float64, copy=False)


def singular_values(W: Any) -> np.ndarray:
    """Singular values ``sigma_1 >= sigma_2 >= ... >= 0`` of ``W`` in float64.

    ``W`` is a 2-D matrix (numpy or torch). A 1-D input is treated as a vector of
    singular values already: it is checked (finite, non-negative) and returned sorted
    in descending order, so every function below accepts either form.
    """
    A = _to_float64(W)
    if A.ndim == 1:
        if not np.all(np.isfinite(A)):
            raise ValueError("singular values must be finite; got NaN or inf")
        if np.any(A < 0):
            raise ValueError(
                "a 1-D input is read as singular values, which must be >= 0; "
                "pass a single row as a (1, n) matrix"
            )
        return np.sort(A)[::-1].copy()
    if A.ndim != 2:
        raise ValueError(
            f"expected a 2-D matrix or a 1-D vector of singular values, got shape "
            f"{tuple(A.shape)}; reshape conv kernels to (out, in*kh*kw) first"
        )
    if A.size == 0:
        return np.zeros(0, dtype=np.float64)
    if not np.all(np.isfinite(A)):
        raise ValueError("the matrix has NaN or inf entries; its singular values are undefined")
    return np.linalg.svd(A, compute_uv=False)


def numerical_rank(W_or_sv: Any, rtol: float = DEFAULT_RTOL) -> int:
    """Numerical rank ``#{j : sigma_j > rtol * sigma_1}``.

    The tolerance is relative to the largest singular value, so the rank is invariant
    under ``W -> c W``; the default ``rtol = 1e-3`` is :data:`DEFAULT_RTOL`. The zero
    matrix has rank 0.
    """
    if not rtol >= 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    s = singular_values(W_or_sv)
    if s.size == 0 or s[0] == 0:
        return 0
    return int(np.count_nonzero(s > rtol * s[0]))


def stable_rank(W_or_sv: Any) -> float:
    """Stable rank ``||W||_F^2 / ||W||_2^2 = sum_j sigma_j^2 / sigma_1^2``.

    It lies in ``[1, rank(W)]`` for a nonzero matrix (Rudelson and Vershynin 2007);
    0 for the zero matrix.
    """
    s = singular_values(W_or_sv)
    if s.size == 0 or s[0] == 0:
        return 0.0
    r = s / s[0]
    return float(np.sum(r * r))


def effective_rank(W_or_sv: Any) -> float:
    """Effective rank ``exp(H(p))`` with ``p_j = sigma_j / sum_k sigma_k``.

    Roy and Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007. ``H(p) = -sum_j p_j log p_j`` (with ``0 log 0 = 0``). It equals ``r``
    when the nonzero singular values are ``r`` equal values; 0 for the zero matrix.
    """
    s = singular_values(W_or_sv)
    total = float(np.sum(s))
    if total == 0:
        return 0.0
    p = s / total
    p = p[p > 0]  # 0 log 0 = 0 (also for values that underflow in the division)
    return float(np.exp(-np.sum(p * np.log(p))))


def energy_rank(W_or_sv: Any, energy: float = DEFAULT_ENERGY) -> int:
    """Smallest ``k`` with ``sum_{j <= k} sigma_j^2 >= energy * sum_j sigma_j^2``.

    The number of leading singular directions that hold a fraction ``energy`` of
    ``||W||_F^2``; ``energy`` lies in ``(0, 1]``. With ``energy = 1`` exact zeros are not
    counted, but round-off-sized singular values are. 0 for the zero matrix.
    """
    if not 0 < energy <= 1:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    s = singular_values(W_or_sv)
    if s.size == 0 or s[0] == 0:
        return 0
    cumulative = np.cumsum((s / s[0]) ** 2)
    k = int(np.searchsorted(cumulative, energy * cumulative[-1], side="left")) + 1
    return min(k, s.size)


def tail_distance(W_or_sv: Any, K: int) -> float:
    """Frobenius distance from ``W`` to the matrices of rank at most ``K``.

    By the Eckart-Young(-Mirsky) theorem,
    ``dist_F(W, M_K) = ||W - W_K||_F = (sum_{j > K} sigma_j^2)^(1/2)``, where ``W_K`` is
    the truncated SVD of rank ``K``. This is the quantity bounded by Theorem 3.1 of
    Zangrando et al. (arXiv:2402.03991).
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 0:
        raise ValueError(f"K must be a non-negative integer, got {K!r}")
    s = singular_values(W_or_sv)
    tail = s[int(K):]
    if tail.size == 0:
        return 0.0
    scale = tail[0]
    if scale == 0:
        return 0.0
    return float(scale * math.sqrt(float(np.sum((tail / scale) ** 2))))


def rank_report(
    weights: Sequence[Any],
    K: int,
    rtol: float = DEFAULT_RTOL,
    energy: float = DEFAULT_ENERGY,
) -> list[dict]:
    """One dict of rank measures per layer, for weight matrices ``W_1, ..., W_L``.

    Keys: ``layer`` (1-based, as ``W_l`` in the paper), ``shape``, ``numerical_rank``
    (at ``rtol``), ``stable_rank``, ``effective_rank``, ``energy_rank`` (at ``energy``),
    ``tail_distance`` (to rank ``K``), ``relative_tail`` (``tail_distance / ||W||_F``,
    0 for the zero matrix) and ``sigma_max``. Every entry of ``weights`` must be a 2-D
    matrix (reshape conv kernels first); the list is ready for ``pandas.DataFrame``.
    """
    report = []
    for l, W in enumerate(weights, start=1):
        A = _to_float64(W)
        if A.ndim != 2:
            raise ValueError(
                f"layer {l}: expected a 2-D weight matrix, got shape {tuple(A.shape)}; "
                "reshape conv kernels to (out, in*kh*kw) first"
            )
        s = singular_values(A)
        frobenius = tail_distance(s, 0)
        tail = tail_distance(s, K)
        report.append(
            {
                "layer": l,
                "shape": tuple(int(n) for n in A.shape),
                "numerical_rank": numerical_rank(s, rtol),
                "stable_rank": stable_rank(s),
                "effective_rank": effective_rank(s),
                "energy_rank": energy_rank(s, energy),
                "tail_distance": tail,
                "relative_tail": tail / frobenius if frobenius > 0 else 0.0,
                "sigma_max": float(s[0]) if s.size else 0.0,
            }
        )
    return report


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the points with ``x, y > 0`` finite
    (NaN when fewer than two such points or a single distinct ``x``)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.unique(x[ok]).size < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def ratio(num: float, den: float) -> float:
    """``num / den`` for ``num, den >= 0``, with ``x / 0 = inf`` for ``x > 0`` and ``0 / 0 = NaN``
    (undefined). The one ratio of the package: relative residuals, NC1-type ratios and
    normalised TCVs all use it; a caller that gives ``0 / 0`` a meaning says so itself
    (e.g. :func:`nrc_utils.gradients.stationarity_residuals`: a gradient that is exactly zero
    is a stationary point, residual 0)."""
    if den > 0:
        return float(num / den)
    return float("nan") if num == 0 else math.inf



def _to_torch64(A: Any) -> torch.Tensor:
    """``A`` as a CPU float64 torch tensor."""
    if isinstance(A, torch.Tensor):
        return A.detach().to(device="cpu", dtype=torch.float64)
    return torch.from_numpy(_to_float64(A))


def top_k_projection(M: Any, W: Any, K: int) -> torch.Tensor:
    """``P_U M P_V``: ``M`` (``m x n``) projected onto the top-``K`` singular subspaces of ``W``
    (``m x n``), with ``P_U = U_K U_K^T`` (``m x m``) and ``P_V = V_K V_K^T`` (``n x n``) from the SVD
    ``W = U diag(sigma) V^T`` (float64, CPU).

    For ``M = W`` this is the truncated SVD ``W_K``, so by Eckart-Young
    ``||W - top_k_projection(W, W, K)||_F = dist_F(W, M_K)`` (:func:`tail_distance`). Chapter 3
    applies it to the class part ``A_l`` and the variability part ``B_l`` of
    ``lambda W_l = A_l + B_l + R_l`` (proof of ``thm-neural-rank-collapse``), to show where the
    bound's slack lies. When ``sigma_K = sigma_{K+1}`` the subspaces are not unique and the SVD's
    choice is used.
    """
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 0:
        raise ValueError(f"K must be a non-negative integer, got {K!r}")
    Mt, Wt = _to_torch64(M), _to_torch64(W)
    if Mt.ndim != 2 or Wt.shape != Mt.shape:
        raise ValueError(f"M and W must be matrices of the same shape, got {tuple(Mt.shape)} and {tuple(Wt.shape)}")
    U, _, Vh = torch.linalg.svd(Wt)
    P, Q = U[:, :K] @ U[:, :K].T, Vh[:K].T @ Vh[:K]
    return P @ Mt @ Q


def outside_top_k(M: Any, W: Any, K: int) -> float:
    """``||M - P_U M P_V||_F``: the Frobenius norm of the part of ``M`` outside the top-``K``
    singular subspaces of ``W`` (:func:`top_k_projection`); ``outside_top_k(W, W, K)`` is the
    tail distance ``dist_F(W, M_K)``."""
    Mt = _to_torch64(M)
    return (Mt - top_k_projection(Mt, W, K)).norm().item()
