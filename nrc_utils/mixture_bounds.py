"""Gaussian-mixture data through a network: how clustered each layer stays, and what that
bounds (the book's chapter 4, Gaussian mixtures: {prf:ref}`prop-input-tcv`,
{prf:ref}`prop-propagation`, {prf:ref}`prop-norm-budget`, {prf:ref}`thm-mixture-tail`; the
paper's Section 4, Zangrando et al., arXiv:2402.03991).

The statements and constants below are the book's formulation (the paper's own are not
available to us). Data ``x_i = m_{y_i} + s xi_i``, ``xi_i ~ N(0, I_d)``, ``K`` balanced
classes of ``n`` samples, ``N = K n``. Network ``f(x) = W_L s(W_{L-1} ... s(W_1 x))`` without
biases, ``h_0 = x``, ``z_l = W_l h_{l-1}``, ``h_l = s(z_l)``; ``H_l`` stacks the ``h_{l,i}``.
``TCV_p(H) = sum_i ||h_i - mu_{y_i}||^p`` with the *empirical* class means ``mu_c`` (the
definition of ``nrc_utils.collapse``); ``Lip`` is the Lipschitz constant of ``s``.

1. Input layer (:func:`expected_tcv`). Around the empirical class means,
   ``e_i = s (xi_i - mean of xi over the class) ~ N(0, s^2 (1 - 1/n) I_d)``, so
       E TCV_2(X) = s^2 d (N - K),     E TCV_1(X) = N s sqrt(1 - 1/n) chi_d,
   with ``chi_d = E ||xi|| = sqrt(2) Gamma((d+1)/2) / Gamma(d/2)``, and
   ``d / sqrt(d + 1) <= chi_d <= sqrt(d)`` (:func:`chi_mean`). Around the true means
   ``m_c`` the factors ``(N - K)/N`` and ``sqrt(1 - 1/n)`` disappear: ``E TCV_2 = N s^2 d``.
2. Propagation (:func:`propagation`). The class mean minimises ``sum_{i in c} ||h_i - v||^2``
   over ``v``, so with ``v = s(W_l mu_c^{(l-1)})``
       sqrt(TCV_2(H_l)) <= Lip ||W_l||_2 sqrt(TCV_2(H_{l-1})),
   and, since ``sum_{i in c} ||h_i - mu_c|| <= 2 sum_{i in c} ||h_i - v||`` for every ``v``,
       TCV_1(H_l) <= 2 Lip ||W_l||_2 TCV_1(H_{l-1}).
3. Weight decay (:func:`norm_budget`). ``L_0 >= 0``, so ``L_lambda(Theta) <= L_lambda(Theta_0)``
   implies ``sum_l ||W_l||_F^2 <= 2 L_lambda(Theta_0) / lambda``.
4. The bound of chapter 3 (form (c) of {prf:ref}`thm-neural-rank-collapse`,
   ``nrc_utils.gradients.certificate``),
   ``dist_F(W_l, M_K) <= ||D_l||_F sqrt(TCV_2(H_{l-1})) / (lambda N) + ||R_l||_F / lambda``,
   combined with 2 gives the *chain* bound (valid for any weights; :func:`mixture_bounds`)
       dist_F(W_l, M_K) <= ||D_l||_F Lip^{l-1} prod_{k<l} ||W_k||_2 sqrt(TCV_2(X)) / (lambda N)
                           + ||R_l||_F / lambda,
   and, for the square loss ``(1/2)||f - y||^2`` (``||D_L||_F^2 = 2 N L_0``, and
   ``||D_l||_F <= Lip ||W_{l+1}||_2 ||D_{l+1}||_F``) with 3 and the AM-GM inequality
   ``prod_{k != l} ||W_k||_2 <= (sum_{k != l} ||W_k||_F^2 / (L-1))^{(L-1)/2}``, the *a priori*
   bound, valid whenever ``L_lambda(Theta) <= L_lambda(Theta_0)``:
       dist_F(W_l, M_K) <= (Lip^{L-1} / lambda) (B / (L - 1))^{(L-1)/2}
                           sqrt(2 L_lambda(Theta_0) / N) sqrt(TCV_2(X)) + ||R_l||_F / lambda,
   with ``B = 2 L_lambda(Theta_0) / lambda``. With ``E TCV_2(X) = s^2 d (N - K)`` this is
   ``O(s lambda^{-(L+1)/2})`` when ``lambda ||Theta_0||^2 << L_0(Theta_0)``
   (:func:`predicted_exponents`).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .collapse import collapse_stats
from .gradients import certificate, layer_signals
from .spectral import singular_values, tail_distance
from .train import penalty, regularised_loss

__all__ = ["LIPSCHITZ", "chi_mean", "expected_tcv", "initial_loss", "mixture_bounds", "norm_budget",
           "predicted_exponents", "propagation", "spectral_norm"]

#: Lipschitz constants of the activations of ``nrc_utils.models`` (``sup |s'|``). GELU's
#: derivative ``Phi(z) + z phi(z)`` peaks at ``z = sqrt(2)``.
LIPSCHITZ: dict[str, float] = {
    "tanh": 1.0,
    "relu": 1.0,
    "softplus": 1.0,
    "identity": 1.0,
    "gelu": 0.5 * (1.0 + math.erf(1.0)) + math.sqrt(2.0) * math.exp(-1.0) / math.sqrt(2.0 * math.pi),
}


def chi_mean(d: int) -> float:
    """``E ||xi||`` for ``xi ~ N(0, I_d)``: ``sqrt(2) Gamma((d+1)/2) / Gamma(d/2)``, between
    ``d / sqrt(d+1)`` and ``sqrt(d)``."""
    if d < 1:
        raise ValueError(f"d must be a positive integer, got {d}")
    return math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


def expected_tcv(K: int, d: int, n_per_class: int, s: float, around: str = "empirical") -> dict[str, float]:
    """``E TCV_1(X)`` and ``E TCV_2(X)`` of a balanced Gaussian mixture ``x = m_c + s xi``.

    ``around="empirical"`` (the class means of the sample, as ``nrc_utils.collapse`` uses):
    ``E TCV_2 = s^2 d (N - K)``, ``E TCV_1 = N s sqrt(1 - 1/n) chi_d``. ``around="true"``
    (the means ``m_c``): ``E TCV_2 = N s^2 d``, ``E TCV_1 = N s chi_d``.
    """
    N = K * n_per_class
    if around == "empirical":
        shrink = 1.0 - 1.0 / n_per_class
    elif around == "true":
        shrink = 1.0
    else:
        raise ValueError(f"around must be 'empirical' or 'true', got {around!r}")
    return {"tcv1": N * s * math.sqrt(shrink) * chi_mean(d), "tcv2": N * s * s * d * shrink}


def _activation(model: nn.Module) -> str:
    cfg = getattr(model, "config", {})
    if cfg.get("bias"):
        raise ValueError("these bounds are stated for networks without biases (models.MLP(..., bias=False))")
    name = cfg.get("activation")
    if name not in LIPSCHITZ:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(LIPSCHITZ)}")
    return name


def spectral_norm(W: torch.Tensor) -> float:
    """``||W||_2 = sigma_1(W)``, the largest singular value (:func:`nrc_utils.spectral.singular_values`,
    float64); the Lipschitz constant of ``h -> W h`` used by 2. and 4. above."""
    return float(singular_values(W)[0])


def propagation(model: nn.Module, X: torch.Tensor, labels: Any, K: int | None = None) -> list[dict[str, float]]:
    """For each hidden layer ``l = 1 .. L-1``: TCV of ``H_{l-1}`` and ``H_l`` and the one-step bounds.

    Keys: ``layer`` (``l``), ``spec_norm`` (``||W_l||_2``), ``tcv1_in``, ``tcv2_in`` (of
    ``H_{l-1}``), ``tcv1_out``, ``tcv2_out`` (of ``H_l``), ``bound_sqrt_tcv2``
    (``Lip ||W_l||_2 sqrt(TCV_2(H_{l-1}))``, an upper bound on ``sqrt(tcv2_out)``),
    ``bound_tcv1`` (``2 Lip ||W_l||_2 TCV_1(H_{l-1})``, an upper bound on ``tcv1_out``) and
    ``chain_sqrt_tcv2`` (``Lip^l prod_{k<=l} ||W_k||_2 sqrt(TCV_2(X))``). float64 throughout.
    """
    lip = LIPSCHITZ[_activation(model)]
    lab = torch.as_tensor(np.asarray(labels)).long()
    K = int(lab.max()) + 1 if K is None else int(K)
    with torch.no_grad():
        m64 = _double_copy(model)
        hs, _ = m64.features(X.double())
    Ws = [layer.weight.detach() for layer in m64.layers]
    tcv = [collapse_stats(h, lab, K) for h in hs]
    sqrt_tcv2_x = math.sqrt(tcv[0].tcv2)
    rows, chain = [], sqrt_tcv2_x
    for l in range(1, len(hs)):
        norm = spectral_norm(Ws[l - 1])
        chain *= lip * norm
        rows.append({
            "layer": l, "spec_norm": norm,
            "tcv1_in": tcv[l - 1].tcv1, "tcv2_in": tcv[l - 1].tcv2,
            "tcv1_out": tcv[l].tcv1, "tcv2_out": tcv[l].tcv2,
            "bound_sqrt_tcv2": lip * norm * math.sqrt(tcv[l - 1].tcv2),
            "bound_tcv1": 2.0 * lip * norm * tcv[l - 1].tcv1,
            "chain_sqrt_tcv2": chain,
        })
    return rows


def _double_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()


def initial_loss(model0: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str) -> float:
    """``L_lambda(Theta_0) = L_0(Theta_0) + (lambda/2) sum_l ||W_l||_F^2`` of the starting network (float64)."""
    with torch.no_grad():
        return float(regularised_loss(_double_copy(model0), X.double(), y, lam, loss)[0])


def norm_budget(model0: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str) -> float:
    """``2 L_lambda(Theta_0) / lambda``: a bound on ``sum_l ||W_l||_F^2`` for every ``Theta`` with
    ``L_lambda(Theta) <= L_lambda(Theta_0)`` (``L_0 >= 0``)."""
    if lam <= 0:
        raise ValueError(f"the budget divides by lambda; it needs lambda > 0, got {lam}")
    return 2.0 * initial_loss(model0, X, y, lam, loss) / lam


def mixture_bounds(model: nn.Module, model0: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float,
                   loss: str, K: int | None = None) -> list[dict[str, float]]:
    """Per layer ``l = 1 .. L``: the measured tail ``dist_F(W_l, M_K)`` and the chain and a priori bounds.

    Keys: ``layer``, ``tail``, ``bound_tcv2`` (chapter 3's form (c) with the residual term),
    ``chain`` (form (c) with ``sqrt(TCV_2(H_{l-1}))`` replaced by its propagation bound from
    the input), ``a_priori`` (square loss only, NaN otherwise; needs
    ``L_lambda(Theta) <= L_lambda(Theta_0)``, reported as ``descended``), ``residual_term``
    (``||R_l||_F / lambda``), ``loss`` (``L_lambda(Theta)``), ``loss_init``
    (``L_lambda(Theta_0)``), ``sq_norms`` (``sum_l ||W_l||_F^2``) and ``budget``
    (``2 L_lambda(Theta_0) / lambda``). Formulas: module docstring.
    """
    lip = LIPSCHITZ[_activation(model)]
    y = torch.as_tensor(y).long()
    K = int(y.max()) + 1 if K is None else int(K)
    m64 = _double_copy(model)
    X64 = X.double()
    N = X64.shape[0]
    cert = certificate(m64, X64, y, lam, loss, K=K)
    sigs = layer_signals(m64, X64, y, loss)
    Ws = [layer.weight.detach() for layer in m64.layers]
    L = len(Ws)
    norms = [spectral_norm(W) for W in Ws]
    sqrt_tcv2_x = math.sqrt(collapse_stats(X64, y, K).tcv2)
    loss_init = initial_loss(model0, X, y, lam, loss)
    with torch.no_grad():
        loss_now = float(regularised_loss(m64, X64, y, lam, loss)[0])
        sq_norms = 2.0 * float(penalty(m64))
    budget = 2.0 * loss_init / lam
    if loss == "mse":
        prior = (lip ** (L - 1) / lam) * (budget / (L - 1)) ** ((L - 1) / 2) \
            * math.sqrt(2.0 * loss_init / N) * sqrt_tcv2_x if L > 1 else math.nan
    else:
        prior = math.nan
    rows = []
    for l in range(1, L + 1):
        c = cert[l - 1]
        D_norm = float(sigs[l - 1].D.norm())
        chain = D_norm * lip ** (l - 1) * math.prod(norms[: l - 1]) * sqrt_tcv2_x / (lam * N)
        rows.append({
            "layer": l, "tail": tail_distance(Ws[l - 1], K), "bound_tcv2": c["bound_tcv2"],
            "chain": chain + c["residual_term"], "a_priori": prior + c["residual_term"],
            "residual_term": c["residual_term"], "loss": loss_now, "loss_init": loss_init,
            "descended": loss_now <= loss_init, "sq_norms": sq_norms,
            "budget": budget,
        })
    return rows


def predicted_exponents(L: int) -> dict[str, float]:
    """Exponents of the a priori bound ``O(s^a lambda^b)`` for depth ``L``: ``a = 1``, ``b = -(L+1)/2``
    (in the regime ``lambda ||Theta_0||^2 << L_0(Theta_0)``)."""
    return {"s": 1.0, "lambda": -(L + 1) / 2.0}
