"""Deep linear networks with weight decay: the forecast of the minimiser (the book's chapter
``05_deep_linear_networks``, theorem ``thm-ch5-forecast``).

The paper's Section 5 (Zangrando et al., arXiv:2402.03991) treats deep linear networks
``f(x) = W_L ... W_1 x``. Everything below is the book's formulation (chapter
``05_deep_linear_networks``), in the book's notation (inputs as rows):

- End-to-end matrix ``W = W_L ... W_1``; ``L_lambda = L_0 + (lambda/2) sum_l ||W_l||_F^2``.
- Square loss ``loss(f, y) = (1/2)||f - y||^2`` with one-hot targets ``y`` (as
  :mod:`nrc_utils.losses`). With inputs ``X`` (``N x d``, rows ``x_i``) and one-hot ``Y``
  (``N x K``), the *target map* is ``A = (1/N) Y^T X`` (``K x d``; with samples as columns
  the same map reads ``(1/N) Y X^T``). For *whitened* inputs, ``(1/N) X^T X = I``
  (proposition ``prop-ch5-whitened``),

      L_0 = (1/2)||W - A||_F^2 + c,    c = (1/(2N))||Y||_F^2 - (1/2)||A||_F^2
                                         (:func:`whitened_loss_constant`; ``c = 1/2 - ||A||_F^2/2`` for one-hot ``Y``),

  so ``grad_W L_0 = W - A`` and ``grad_{W_l} L_0 = (W_L..W_{l+1})^T (W - A) (W_{l-1}..W_1)^T``.
- *Schatten reduction*: ``min_{W_L..W_1 = W} (lambda/2) sum_l ||W_l||_F^2
  = (lambda L/2) sum_i sigma_i(W)^(2/L)``, attained by balanced factorisations.
- *Scalar problem*: the minimiser shares the singular vectors of ``A`` and has singular values
  ``s_i = argmin_{s >= 0} phi(s) = (1/2)(s - sigma_i(A))^2 + (lambda L/2) s^(2/L)``.
  ``L = 1``: ``s = sigma/(1 + lambda)``; ``L = 2``: soft thresholding ``max(sigma - lambda, 0)``;
  ``L > 2``: ``phi`` is non-convex, its positive stationary points solve
  ``s - sigma + lambda s^(2/L - 1) = 0``, and the minimiser jumps from ``0`` to
  ``s_c = (lambda (L - 2))^(L/(2L - 2))`` at ``sigma_c = s_c + lambda s_c^(2/L - 1)``
  (:func:`jump_threshold`; proposition ``prop-ch5-scalar``). Between the existence threshold
  ``sigma_e`` (:func:`existence_threshold`) and ``sigma_c`` a positive local minimum exists but
  loses to ``0`` (:func:`in_window`): a network can be stationary there on the wrong branch
  (proposition ``prop-ch5-stationary``; :func:`stationary_set_distance`).
- *Balancedness*: ``W_{l+1}^T W_{l+1} = W_l W_l^T`` at every stationary point, and for any
  weights ``lambda (W_{l+1}^T W_{l+1} - W_l W_l^T) = W_{l+1}^T R_{l+1} - R_l W_l^T`` with the
  residuals ``R_l = grad_{W_l} L_0 + lambda W_l`` (:func:`balancedness_certificate`;
  proposition ``prop-ch5-balanced``).

Arrays are numpy float64 (torch tensors are accepted and converted).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.optimize import brentq


def _np(M: Any) -> np.ndarray:
    """A float64 numpy copy of a numpy array or torch tensor."""
    if hasattr(M, "detach"):
        M = M.detach().cpu().numpy()
    return np.asarray(M, dtype=np.float64)


def _check(sigma: float, lam: float, L: int) -> None:
    if not (isinstance(L, (int, np.integer)) and L >= 1):
        raise ValueError(f"depth L must be a positive integer, got {L!r}")
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lambda must be a finite number > 0, got {lam!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")


# ---------------------------------------------------------------------------------------------
# the scalar problem
# ---------------------------------------------------------------------------------------------

def scalar_objective(s: Any, sigma: float, lam: float, L: int) -> np.ndarray:
    """``phi(s) = (1/2)(s - sigma)^2 + (lambda L / 2) s^(2/L)`` for ``s >= 0`` (vectorised in ``s``)."""
    s = np.asarray(s, dtype=np.float64)
    return 0.5 * (s - sigma) ** 2 + 0.5 * lam * L * s ** (2.0 / L)


def scalar_stationary_points(sigma: float, lam: float, L: int) -> np.ndarray:
    """The positive stationary points of :func:`scalar_objective`, ascending.

    They solve ``s - sigma + lambda s^(2/L - 1) = 0``: for ``L = 1`` the single root
    ``sigma/(1 + lambda)`` (when ``sigma > 0``), for ``L = 2`` the root ``sigma - lambda`` when
    ``sigma > lambda``, for ``L > 2`` none, one or two roots: ``g(s) = s + lambda s^(2/L - 1)`` is
    convex on ``s > 0`` with its minimum at ``s* = (lambda (1 - 2/L))^(L/(2L - 2))``; when
    ``g(s*) < sigma`` there is a root below ``s*`` (a local maximum of ``phi``) and one in
    ``(s*, sigma)`` (a local minimum). Roots are found by bracketing (Brent) to machine precision.
    """
    _check(sigma, lam, L)
    if L == 1:
        return np.array([sigma / (1.0 + lam)]) if sigma > 0 else np.empty(0)
    if L == 2:
        return np.array([sigma - lam]) if sigma > lam else np.empty(0)
    p = 2.0 / L
    s_star = (lam * (1.0 - p)) ** (1.0 / (2.0 - p))

    def h(s: float) -> float:
        return s - sigma + lam * s ** (p - 1.0)

    h_star = h(s_star)
    if h_star > 0:
        return np.empty(0)
    if h_star == 0:
        return np.array([s_star])
    # h(sigma) = lambda sigma^(p-1) > 0 and h(s_lo) >= sigma (2^(1-p) - 1) > 0 below s*
    s_lo = 0.5 * (lam / sigma) ** (1.0 / (1.0 - p))
    kw = dict(xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    small = brentq(h, s_lo, s_star, **kw)
    large = brentq(h, s_star, sigma, **kw)
    return np.array([small, large])


#: Relative tolerance of a tie between ``phi(0)`` and a positive local minimum in
#: :func:`scalar_minimiser`: ``64 eps``, relative to ``phi(0) = sigma^2 / 2``. At the jump threshold
#: the two values agree exactly in real arithmetic but differ by round-off in floating point; within
#: this tolerance ``0`` is returned. The ``sigma`` it affects lie within about ``64 eps sigma`` (relative)
#: of ``sigma_c``.
TIE_RTOL = 64 * np.finfo(float).eps


def scalar_minimiser(sigma: float, lam: float, L: int) -> float:
    """``argmin_{s >= 0} phi(s)``, exactly: ``0`` compared with the positive stationary points.

    ``L <= 2``: ``phi`` is convex and its positive stationary point, when there is one, is the
    minimiser. ``L > 2``: on a tie the smaller minimiser, ``0``, is returned: at the jump threshold
    ``sigma_c`` (:func:`jump_threshold`), where ``phi(0) = phi(s_c)`` in real arithmetic, a positive
    stationary point counts as better only when ``phi(s) < phi(0) - TIE_RTOL * phi(0)``
    (:data:`TIE_RTOL`), so that round-off in the two values cannot decide.
    """
    roots = scalar_stationary_points(sigma, lam, L)
    if len(roots) == 0:
        return 0.0
    if L <= 2:  # phi is convex: its one positive stationary point is the minimiser
        return float(roots[0])
    zero = float(scalar_objective(0.0, sigma, lam, L))
    values = scalar_objective(roots, sigma, lam, L)
    best = int(np.argmin(values))
    return float(roots[best]) if values[best] < zero - TIE_RTOL * zero else 0.0


def soft_threshold(sigma: Any, lam: float) -> np.ndarray:
    """``max(sigma - lambda, 0)``: the minimiser of the scalar problem for ``L = 2``."""
    return np.maximum(np.asarray(sigma, dtype=np.float64) - lam, 0.0)


def jump_threshold(lam: float, L: int) -> tuple[float, float]:
    """``(sigma_c, s_c)``: singular values of ``A`` below ``sigma_c`` are set to zero, those above
    it are kept, at least ``s_c``.

    ``L > 2``: at the threshold ``phi(s_c) = phi(0)`` and ``phi'(s_c) = 0``; subtracting the two
    equations gives ``s_c = (lambda (L - 2))^(L/(2L - 2))`` and ``sigma_c = s_c + lambda s_c^(2/L - 1)``
    (``L = 3``: ``sigma_c = 2 lambda^(3/4)``; ``L = 4``: ``sigma_c = (3/2)(2 lambda)^(2/3)``).
    ``L = 2``: ``(lambda, 0)`` (soft thresholding, continuous). ``L = 1``: ``(0, 0)`` (nothing is
    set to zero).
    """
    _check(0.0, lam, L)
    if L == 1:
        return 0.0, 0.0
    if L == 2:
        return float(lam), 0.0
    s_c = (lam * (L - 2)) ** (L / (2.0 * L - 2.0))
    return float(s_c + lam * s_c ** (2.0 / L - 1.0)), float(s_c)


def existence_threshold(lam: float, L: int) -> float:
    """The smallest ``sigma`` for which :func:`scalar_objective` has a positive stationary point.

    ``L > 2``: ``g(s*)`` with ``g(s) = s + lambda s^(2/L - 1)`` and ``s* = (lambda (1 - 2/L))^(L/(2L - 2))``.
    Between this and :func:`jump_threshold` the positive local minimum exists but ``s = 0`` is better:
    a network can be stationary there without being a global minimiser.
    """
    _check(0.0, lam, L)
    if L == 1:
        return 0.0
    if L == 2:
        return float(lam)
    p = 2.0 / L
    s_star = (lam * (1.0 - p)) ** (1.0 / (2.0 - p))
    return float(s_star + lam * s_star ** (p - 1.0))


def in_window(sigma: float, lam: float, L: int) -> bool:
    """Whether ``sigma_e < sigma < sigma_c`` (:func:`existence_threshold`, :func:`jump_threshold`) for
    ``L > 2``: there the scalar problem has a positive local minimum that loses to ``s = 0``, so a
    stationary network can keep what the forecast sets to zero. Always ``False`` for ``L <= 2``
    (the scalar problem is convex)."""
    _check(sigma, lam, L)
    return bool(L > 2 and existence_threshold(lam, L) < sigma < jump_threshold(lam, L)[0])


def stationary_set_distance(c: float, sigma: float, lam: float, L: int) -> float:
    """``min |c - t|`` over the stationary values ``t`` of the scalar problem, ``{0}`` together with
    :func:`scalar_stationary_points`: zero for every ``c_i = u_i^T W v_i`` of a stationary network
    (proposition ``prop-ch5-stationary``)."""
    crit = np.concatenate([[0.0], scalar_stationary_points(sigma, lam, L)])
    return float(np.abs(crit - float(c)).min())


def whitened_loss_constant(A: Any, Y: Any = None) -> float:
    """``c = (1/(2N)) ||Y||_F^2 - (1/2) ||A||_F^2``, the constant of the whitened square loss
    ``L_0 = (1/2)||W - A||_F^2 + c`` (proposition ``prop-ch5-whitened``), for the target map ``A``
    (``K x d``) and the targets ``Y`` (``N x K``); ``Y = None`` means one-hot targets, for which
    ``(1/N)||Y||_F^2 = 1`` and ``c = 1/2 - ||A||_F^2 / 2``."""
    A = _np(A)
    mean_sq = 1.0 if Y is None else float(np.sum(_np(Y) ** 2) / _np(Y).shape[0])
    return 0.5 * mean_sq - 0.5 * float(np.sum(A ** 2))


def forecast_spectrum(sigma_A: Sequence[float], lam: float, L: int) -> np.ndarray:
    """The singular values ``s_i`` of the global minimiser's end-to-end matrix, one per ``sigma_i(A)``."""
    return np.array([scalar_minimiser(float(s), lam, L) for s in np.asarray(sigma_A, dtype=np.float64)])


def forecast_loss(sigma_A: Sequence[float], lam: float, L: int, const: float) -> float:
    """``min L_lambda = c + sum_i phi_i(s_i)`` for whitened inputs (theorem ``thm-ch5-forecast``;
    ``const`` is ``c``, :func:`whitened_loss_constant`)."""
    sigma_A = np.asarray(sigma_A, dtype=np.float64)
    s = forecast_spectrum(sigma_A, lam, L)
    return float(const + sum(scalar_objective(si, sa, lam, L) for si, sa in zip(s, sigma_A)))


# ---------------------------------------------------------------------------------------------
# data: whitened inputs with a chosen target map
# ---------------------------------------------------------------------------------------------

def target_map(X: Any, y: Any, K: int) -> np.ndarray:
    """``A = (1/N) Y^T X`` (``K x d``) with ``Y`` the one-hot labels and ``X`` the ``N x d`` inputs."""
    X, y = _np(X), np.asarray(_np(y), dtype=np.int64)
    Y = np.eye(K)[y]
    return Y.T @ X / len(y)


def whitening_error(X: Any) -> float:
    """``||(1/N) X^T X - I||_2``: zero for whitened inputs."""
    X = _np(X)
    return float(np.linalg.norm(X.T @ X / len(X) - np.eye(X.shape[1]), 2))


def whitened_data(sigma_A: Sequence[float], K: int, d: int, n_per_class: int, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs ``X`` (``N x d``, ``(1/N) X^T X = I`` exactly) and balanced labels ``y`` whose target
    map ``A = (1/N) Y^T X`` has the singular values ``sigma_A`` and random singular vectors.

    Construction (the book's): ``A = U diag(sigma_A) V^T`` with Haar-random ``U`` (``K x r``),
    ``V`` (``d x r``), ``r = len(sigma_A) <= min(K, d)``; then ``X = Y P^{-1} A + sqrt(N) Q C^{1/2}``
    with ``P = (1/N) Y^T Y = I/K``, ``C = I - A^T P^{-1} A`` and ``Q`` (``N x d``) random with
    orthonormal columns orthogonal to the class indicators (``Y^T Q = 0``). Then
    ``(1/N) Y^T X = A`` and ``(1/N) X^T X = A^T P^{-1} A + C = I``: a mixture whose class ``c`` has
    mean ``K A^T e_c`` and whose within-class spread is what whitening leaves. Needs
    ``sqrt(K) sigma_1(A) < 1`` (``C`` positive definite) and ``N - K >= d``, ``N = K n_per_class``.
    Returns ``(X, y, A)``.
    """
    sigma_A = np.asarray(sigma_A, dtype=np.float64)
    r, N = len(sigma_A), K * n_per_class
    if r > min(K, d):
        raise ValueError(f"at most min(K, d) = {min(K, d)} singular values, got {r}")
    if np.any(sigma_A < 0) or math.sqrt(K) * float(sigma_A.max(initial=0.0)) >= 1:
        raise ValueError(f"need 0 <= sigma_i(A) < 1/sqrt(K) = {1 / math.sqrt(K):.4g} (whitened inputs), got {sigma_A}")
    if N - K < d:
        raise ValueError(f"need K * n_per_class - K >= d for whitened inputs, got N = {N}, K = {K}, d = {d}")
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((K, K)))[0][:, :r]
    V = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :r]
    A = U @ np.diag(sigma_A) @ V.T
    y = np.repeat(np.arange(K), n_per_class)
    rng.shuffle(y)
    Y = np.eye(K)[y]
    G = rng.standard_normal((N, d))
    G -= Y @ np.linalg.solve(Y.T @ Y, Y.T @ G)  # orthogonal to the class indicators
    Q = np.linalg.qr(G)[0]
    C = np.eye(d) - K * A.T @ A
    w, E = np.linalg.eigh(C)
    C_half = E @ np.diag(np.sqrt(np.clip(w, 0, None))) @ E.T
    X = K * Y @ A + math.sqrt(N) * Q @ C_half
    return X, y, A


# ---------------------------------------------------------------------------------------------
# factorisations
# ---------------------------------------------------------------------------------------------

def end_to_end(Ws: Sequence[Any]) -> np.ndarray:
    """``W = W_L ... W_1`` from the list ``[W_1, ..., W_L]``."""
    W = _np(Ws[0])
    for M in Ws[1:]:
        W = _np(M) @ W
    return W


def frobenius_penalty(Ws: Sequence[Any], lam: float) -> float:
    """``(lambda/2) sum_l ||W_l||_F^2``."""
    return float(0.5 * lam * sum(np.sum(_np(M) ** 2) for M in Ws))


def schatten_penalty(W: Any, lam: float, L: int) -> float:
    """``(lambda L / 2) sum_i sigma_i(W)^(2/L)``: the least :func:`frobenius_penalty` over factorisations of ``W`` into ``L`` factors."""
    s = np.linalg.svd(_np(W), compute_uv=False)
    return float(0.5 * lam * L * np.sum(s ** (2.0 / L)))


def balanced_factorisation(W: Any, L: int, width: int, seed: int | None = None) -> list[np.ndarray]:
    """A balanced factorisation ``[W_1, ..., W_L]`` of ``W`` (``K x d``) with hidden widths ``width``.

    With the thin SVD ``W = U S V^T`` (rank ``r <= width``, numerical rank at the round-off level): ``W_1 = [S^{1/L} V^T; 0]``,
    ``W_l = diag(S^{1/L}, 0)``, ``W_L = [U S^{1/L}, 0]``, each hidden space then rotated by a
    random orthogonal matrix when ``seed`` is given (``W_l -> Q_l W_l Q_{l-1}^T``, which keeps
    the product and the balancedness). Every factor has the singular values ``sigma_i(W)^(1/L)``.
    """
    W = _np(W)
    if L == 1:
        return [W.copy()]
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    # round-off singular values are dropped: their L-th roots would not be small
    r = int(np.sum(S > S.max(initial=0.0) * max(W.shape) * np.finfo(float).eps))
    if r > width:
        raise ValueError(f"rank {r} does not fit through hidden width {width}")
    R = np.zeros((width, width))
    R[:r, :r] = np.diag(S[:r] ** (1.0 / L))
    first = np.zeros((width, W.shape[1]))
    first[:r] = R[:r, :r] @ Vt[:r]
    last = np.zeros((W.shape[0], width))
    last[:, :r] = U[:, :r] @ R[:r, :r]
    Ws = [first] + [R.copy() for _ in range(L - 2)] + [last]
    if seed is not None:
        rng = np.random.default_rng(seed)
        Qs = [np.linalg.qr(rng.standard_normal((width, width)))[0] for _ in range(L - 1)]
        Ws[0] = Qs[0] @ Ws[0]
        for l in range(1, L - 1):
            Ws[l] = Qs[l] @ Ws[l] @ Qs[l - 1].T
        Ws[-1] = Ws[-1] @ Qs[-1].T
    return Ws


def balancedness(Ws: Sequence[Any]) -> np.ndarray:
    """Relative imbalance of each consecutive pair, ``l = 1 .. L-1``:

    ``||W_{l+1}^T W_{l+1} - W_l W_l^T||_F / max(||W_{l+1}^T W_{l+1}||_F, ||W_l W_l^T||_F)``
    (zero for a balanced pair; NaN when both factors vanish).
    """
    out = []
    for a, b in zip(Ws[:-1], Ws[1:]):
        a, b = _np(a), _np(b)
        G1, G2 = b.T @ b, a @ a.T
        den = max(np.linalg.norm(G1), np.linalg.norm(G2))
        out.append(np.linalg.norm(G1 - G2) / den if den > 0 else math.nan)
    return np.array(out)


def residual_matrices(Ws: Sequence[Any], A: Any, lam: float) -> list[np.ndarray]:
    """``R_l = grad_{W_l} L_0 + lambda W_l`` for whitened inputs (square loss, target map ``A``):
    ``grad_{W_l} L_0 = (W_L..W_{l+1})^T (W - A) (W_{l-1}..W_1)^T``."""
    Ws = [_np(M) for M in Ws]
    G = end_to_end(Ws) - _np(A)
    out = []
    for l in range(len(Ws)):
        right = end_to_end(Ws[:l]) if l > 0 else np.eye(Ws[0].shape[1])
        left = end_to_end(Ws[l + 1:]) if l < len(Ws) - 1 else np.eye(Ws[-1].shape[0])
        out.append(left.T @ G @ right.T + lam * Ws[l])
    return out


def balancedness_certificate(Ws: Sequence[Any], Rs: Sequence[Any], lam: float) -> np.ndarray:
    """An upper bound on ``||W_{l+1}^T W_{l+1} - W_l W_l^T||_F`` valid for any weights, ``l = 1 .. L-1``:

    ``(||W_{l+1}||_2 ||R_{l+1}||_F + ||R_l||_F ||W_l||_2) / lambda``, from the identity
    ``lambda (W_{l+1}^T W_{l+1} - W_l W_l^T) = W_{l+1}^T R_{l+1} - R_l W_l^T`` (both sides of
    ``W_{l+1}^T grad_{W_{l+1}} L_0 = grad_{W_l} L_0 W_l^T``, true for any loss of the end-to-end map).
    ``Rs`` are the residual matrices ``R_l`` (:func:`residual_matrices`, or autograd).
    """
    Ws, Rs = [_np(M) for M in Ws], [_np(M) for M in Rs]
    return np.array([(np.linalg.norm(Ws[l + 1], 2) * np.linalg.norm(Rs[l + 1]) + np.linalg.norm(Rs[l])
                      * np.linalg.norm(Ws[l], 2)) / lam for l in range(len(Ws) - 1)])


def in_basis_of(W: Any, A: Any) -> tuple[np.ndarray, float]:
    """``W`` seen in the singular bases of ``A``: ``(c, off)`` with ``c_i = u_i^T W v_i`` for the
    ``r = min(K, d)`` singular pairs of ``A`` (descending ``sigma_i(A)``) and ``off`` the relative
    Frobenius norm of the rest, ``||W - sum_i c_i u_i v_i^T||_F / ||W||_F``. At a stationary point of
    a deep linear network on whitened data (``A`` with distinct singular values) ``off = 0`` and
    every ``c_i`` is ``0`` or a positive stationary point of the scalar problem for ``sigma_i(A)``.
    """
    W, A = _np(W), _np(A)
    U, _, Vt = np.linalg.svd(A, full_matrices=False)
    c = np.sum(U * (W @ Vt.T), axis=0)
    rest = W - U @ np.diag(c) @ Vt
    nW = np.linalg.norm(W)
    return c, float(np.linalg.norm(rest) / nW) if nW > 0 else 0.0
