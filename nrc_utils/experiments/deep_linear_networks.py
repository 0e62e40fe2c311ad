"""Chapter 5 (``05_deep_linear_networks``): deep linear networks trained to stationarity against
the forecast of their global minimiser.

The science is :mod:`nrc_utils.deep_linear` (the book's chapter 5): for the square loss on whitened
inputs, ``(1/N) X^T X = I``, the weight-decayed loss of ``f(x) = W_L ... W_1 x`` is
``(1/2)||W - A||_F^2 + c + (lambda/2) sum_l ||W_l||_F^2`` with the target map ``A = (1/N) Y^T X``
(proposition ``prop-ch5-whitened``), and its global minimiser has the end-to-end matrix
``W* = sum_i s_L(sigma_i(A)) u_i v_i^T`` (theorem ``thm-ch5-forecast``), where ``s_L`` solves the
scalar problem (definition ``def-ch5-scalar``, proposition ``prop-ch5-scalar``). Every stationary
point has ``W = sum_i c_i u_i v_i^T`` with each ``c_i`` on a branch of stationary values of the scalar
problem (proposition ``prop-ch5-stationary``) and balanced layers (proposition ``prop-ch5-balanced``).

The functions train the grid depths x lambdas x seeds (:func:`nrc_utils.train.train`, cached) and
return tidy ``pandas`` tables: one row per network, per singular value of ``A``, per layer singular
value, per pair of layers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import deep_linear, models, params, train


def _check_relations(v: Mapping[str, Any]) -> None:
    """What involves several parameters: the whitened data of :func:`nrc_utils.deep_linear.whitened_data`
    and the forecast's width condition (theorem ``thm-ch5-forecast``)."""
    r, K, d = len(v["sigma_A"]), v["K"], v["d"]
    if r != min(K, d):
        PARAMETERS.refuse("sigma_A", v["sigma_A"], f"one singular value per dimension of the K x d target map "
                          f"A: min(K, d) = {min(K, d)} values, got {r}")
    if math.sqrt(K) * max(v["sigma_A"]) >= 1:
        PARAMETERS.refuse("sigma_A", v["sigma_A"], f"values below 1/sqrt(K) = {1 / math.sqrt(K):.4g} "
                          "(whitened inputs need it)")
    if K * v["n_per_class"] - K < d:
        PARAMETERS.refuse("n_per_class", v["n_per_class"], f"at least (d + K) / K = {(d + K) / K:g} "
                          f"(whitened inputs need N - K >= d, N = K n_per_class)")
    if v["width"] < r:
        PARAMETERS.refuse("width", v["width"], f"at least rank A = {r} (the forecast needs hidden widths "
                          "at least rank A)")


PARAMETERS = params.Rules("05_deep_linear_networks", {
    "seed": params.integer(ge=0),
    "n_seeds": params.integer(ge=1),
    "K": params.integer(ge=1),
    "d": params.integer(ge=1),
    "n_per_class": params.integer(ge=1),
    # distinct positive values: proposition prop-ch5-stationary assumes them
    "sigma_A": params.grid(params.number(gt=0), distinct=True),
    "width": params.integer(ge=1),
    "depths": params.grid(params.integer(ge=2), distinct=True),
    "init_scale": params.number(gt=0),
    "lambdas": params.grid(params.number(gt=0), distinct=True),
    "lr": params.number(gt=0),
    "gd_steps": params.integer(ge=1),
    "polish_tol": params.number(gt=0),
    "polish_max_iter": params.integer(ge=1),
    "polish_max_seconds": params.number(gt=0),
    "newton_tol": params.number(gt=0),
    "match_rtol": params.number(gt=0, lt=1),
}, relations=_check_relations)


@dataclass
class Problem:
    """Whitened data with a target map of known spectrum.

    ``X`` (``N x d``, float64 torch), ``y`` (``N``, int64 torch), ``A`` (``K x d`` numpy, the target
    map the data were built for), ``sigma`` (its singular values, as given), ``const`` (the constant
    ``c`` of the whitened loss, :func:`nrc_utils.deep_linear.whitened_loss_constant`),
    ``whitening_error`` (``||(1/N) X^T X - I||_2``) and ``target_error`` (the largest entry of
    ``|(1/N) Y^T X - A|``)."""

    X: torch.Tensor
    y: torch.Tensor
    A: np.ndarray
    sigma: np.ndarray
    const: float
    whitening_error: float
    target_error: float

    @property
    def K(self) -> int:
        return self.A.shape[0]

    @property
    def d(self) -> int:
        return self.A.shape[1]


def whitened_problem(sigma_A: Sequence[float], K: int, d: int, n_per_class: int, seed: int) -> Problem:
    """:func:`nrc_utils.deep_linear.whitened_data` with its checks: ``K`` balanced classes of
    ``n_per_class`` inputs in ``R^d`` whose target map has the singular values ``sigma_A``."""
    X, y, A = deep_linear.whitened_data(sigma_A, K, d, n_per_class, seed=seed)
    return Problem(torch.as_tensor(X), torch.as_tensor(y), A, np.asarray(sigma_A, dtype=float),
                   deep_linear.whitened_loss_constant(A), deep_linear.whitening_error(X),
                   float(np.abs(deep_linear.target_map(X, y, K) - A).max()))


def train_networks(problem: Problem, *, depths: Sequence[int], lambdas: Sequence[float], seeds: Sequence[int],
                   width: int, init_scale: float, lr: float, gd_steps: int, polish_tol: float,
                   polish_max_iter: int, polish_max_seconds: float, newton_tol: float, device: str = "cpu",
                   **_: Any) -> dict[tuple[int, float, int], train.TrainResult]:
    """``{(L, lambda, seed): TrainResult}``: a deep linear network of depth ``L`` and hidden width
    ``width`` (:func:`nrc_utils.models.deep_linear`, weights ``N(0, init_scale^2 / fan_in)`` from
    ``seed``) trained on the square loss by ``gd_steps`` steps of full-batch gradient descent in
    float64, then float64 L-BFGS until every layer's relative residual is below ``polish_tol``
    and Newton's method to ``newton_tol`` (:func:`nrc_utils.train.train`, cached). Extra keyword arguments
    are ignored."""
    runs = {}
    for L in depths:
        for lam in lambdas:
            for sd in seeds:
                model = models.deep_linear(problem.d, width, L, problem.K, seed=sd, init_scale=init_scale)
                cfg = train.TrainConfig(lam=lam, loss="mse", lr=lr, steps=gd_steps, seed=sd, dtype="float64",
                                        record_every=max(1, gd_steps // 5), polish_tol=polish_tol,
                                        polish_max_iter=polish_max_iter, polish_max_seconds=polish_max_seconds,
                                        newton_tol=newton_tol)
                runs[(L, lam, sd)] = train.train(model, problem.X, problem.y, cfg, device=device)
    return runs


# ---------------------------------------------------------------------------------------------
# the scalar problem (no training)
# ---------------------------------------------------------------------------------------------

def scalar_maps(lam: float, sigma_max: float, depths: Sequence[int] = (1, 2, 3, 4), n: int = 1500) -> pd.DataFrame:
    """The solution ``s_L(sigma)`` of the scalar problem and, for ``L > 2`` where they exist, its two
    positive stationary points, on ``n`` values ``sigma`` from ``1e-4`` to ``sigma_max``: one row per
    ``(L, sigma, branch)`` with ``branch`` ``"global"`` (:func:`nrc_utils.deep_linear.scalar_minimiser`),
    ``"local minimum"`` (the larger root) or ``"local maximum"`` (the smaller), and ``s``."""
    rows = []
    for L in depths:
        for sg in np.linspace(1e-4, sigma_max, n):
            rows.append({"L": L, "sigma": sg, "branch": "global", "s": deep_linear.scalar_minimiser(float(sg), lam, L)})
            roots = deep_linear.scalar_stationary_points(float(sg), lam, L)
            if L > 2 and len(roots) == 2:
                rows.append({"L": L, "sigma": sg, "branch": "local minimum", "s": roots[1]})
                rows.append({"L": L, "sigma": sg, "branch": "local maximum", "s": roots[0]})
    return pd.DataFrame(rows)


def thresholds(lam: float, depths: Sequence[int]) -> pd.DataFrame:
    """One row per depth: ``sigma_c`` and ``s_c`` (:func:`nrc_utils.deep_linear.jump_threshold`) and
    ``sigma_e`` (:func:`nrc_utils.deep_linear.existence_threshold`) at weight decay ``lam``."""
    rows = []
    for L in depths:
        sigma_c, s_c = deep_linear.jump_threshold(lam, L)
        rows.append({"L": L, "lam": lam, "sigma_c": sigma_c, "s_c": s_c,
                     "sigma_e": deep_linear.existence_threshold(lam, L)})
    return pd.DataFrame(rows)


def forecast_curves(lambdas: Sequence[float], depths: Sequence[int], sigma_max: float, n: int = 800) -> pd.DataFrame:
    """The forecast ``s_L(sigma)`` on ``n`` values ``sigma`` from 0 to ``sigma_max``, per ``(L, lam)``:
    columns ``L``, ``lam``, ``sigma``, ``s`` and ``s_local``, the positive local minimum where it exists
    but loses to ``0`` (NaN elsewhere; only for ``L > 2``)."""
    rows = []
    for L in depths:
        for lam in lambdas:
            for sg in np.linspace(0, sigma_max, n):
                s = deep_linear.scalar_minimiser(float(sg), lam, L)
                roots = deep_linear.scalar_stationary_points(float(sg), lam, L) if L > 2 and sg > 0 else []
                local = roots[1] if len(roots) == 2 and s == 0 else math.nan
                rows.append({"L": L, "lam": lam, "sigma": sg, "s": s, "s_local": local})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# trained networks against the forecast
# ---------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    """The tables of :func:`compare_with_forecast`.

    ``nets``: one row per network, columns ``L, lam, seed, residual`` (``max_l rho_l``), ``stop``
    (why L-BFGS stopped), ``reached``, ``loss_gap`` (``L_lambda`` minus the forecast minimum),
    ``max_error`` (``max_i |c_i - s_i|``), ``off_diagonal`` (the relative rest of ``W`` outside the
    singular bases of ``A``), ``forecast_zeros``, ``trained_zeros`` (``c_i <= match_tol``),
    ``at_forecast`` (every ``|c_i - s_i| <= match_tol``), ``max_imbalance``.
    ``svs``: one row per ``(network, i)``: ``sigma_A``, ``forecast`` ``s_i``, ``trained`` ``c_i = u_i^T W v_i``,
    ``error``, ``stationary_distance`` (:func:`nrc_utils.deep_linear.stationary_set_distance`),
    ``reached``, ``at_forecast``, ``window`` (:func:`nrc_utils.deep_linear.in_window`).
    ``layers``: one row per ``(network, layer, j)``: ``layer`` (``"$W_l$"``), ``sigma`` ``sigma_j(W_l)``
    and ``forecast`` ``s_j^(1/L)`` (corollary ``cor-ch5-shared``), for ``j <= min(K, d)``.
    ``balance``: one row per ``(network, pair l)``: ``imbalance`` (:func:`nrc_utils.deep_linear.balancedness`)
    and ``certificate``, the bound of :func:`nrc_utils.deep_linear.balancedness_certificate` on the same
    relative scale, and ``reached``. ``match_tol = match_rtol * sigma_1(A)``.
    """

    nets: pd.DataFrame
    svs: pd.DataFrame
    layers: pd.DataFrame
    balance: pd.DataFrame
    match_tol: float


def compare_with_forecast(runs: Mapping[tuple[int, float, int], train.TrainResult], problem: Problem,
                          match_rtol: float) -> Comparison:
    """Every network of :func:`train_networks` against the forecast (see :class:`Comparison`)."""
    A, sig = problem.A, problem.sigma
    tol = match_rtol * sig.max()
    net_rows, sv_rows, layer_rows, bal_rows = [], [], [], []
    for (L, lam, sd), r in runs.items():
        key = {"L": L, "lam": lam, "seed": sd}
        Ws = [W.detach().double().numpy() for W in models.weight_matrices(r.model)]
        c, off = deep_linear.in_basis_of(deep_linear.end_to_end(Ws), A)  # (min(K, d),)
        s_fc = deep_linear.forecast_spectrum(sig, lam, L)
        reached = r.reached
        at_forecast = np.abs(c - s_fc) <= tol
        for i, (ci, si, sa) in enumerate(zip(c, s_fc, sig), start=1):
            sv_rows.append({**key, "i": i, "sigma_A": sa, "forecast": si, "trained": ci, "error": abs(ci - si),
                            "stationary_distance": deep_linear.stationary_set_distance(ci, float(sa), lam, L),
                            "reached": reached, "at_forecast": bool(at_forecast[i - 1]),
                            "window": deep_linear.in_window(float(sa), lam, L)})
        for l, Wl in enumerate(Ws, start=1):
            sv = np.linalg.svd(Wl, compute_uv=False)
            for j, v in enumerate(sv[:min(problem.K, problem.d)], start=1):
                layer_rows.append({**key, "layer": f"$W_{l}$", "j": j, "sigma": v,
                                   "forecast": s_fc[j - 1] ** (1 / L) if j <= len(s_fc) else 0.0})
        cert = deep_linear.balancedness_certificate(Ws, deep_linear.residual_matrices(Ws, A, lam), lam)
        imb = deep_linear.balancedness(Ws)
        for l in range(L - 1):
            scale = max(np.linalg.norm(Ws[l + 1].T @ Ws[l + 1]), np.linalg.norm(Ws[l] @ Ws[l].T))
            bal_rows.append({**key, "pair": l + 1, "imbalance": imb[l], "certificate": cert[l] / scale,
                             "reached": reached})
        net_rows.append({**key, "residual": r.max_residual, "stop": r.stop, "reached": reached,
                         "min_eigenvalue": float("nan") if r.min_eigenvalue is None else r.min_eigenvalue,
                         "loss_gap": r.final["loss"] - deep_linear.forecast_loss(sig, lam, L, problem.const),
                         "max_error": float(np.abs(c - s_fc).max()), "off_diagonal": off,
                         "forecast_zeros": int(np.sum(s_fc == 0)), "trained_zeros": int(np.sum(c <= tol)),
                         "at_forecast": bool(at_forecast.all()),
                         "max_imbalance": float(np.nanmax(imb)) if len(imb) else math.nan})
    return Comparison(pd.DataFrame(net_rows), pd.DataFrame(sv_rows), pd.DataFrame(layer_rows),
                      pd.DataFrame(bal_rows), float(tol))


#: The headers of the chapter's table of networks (:func:`network_table`).
NETWORK_HEADERS = {"L": "L", "lam": "λ", "seed": "seed", "residual": "max_l ρ_l", "stop": "stopped by",
                   "min_eigenvalue": "λ_min(H)",
                   "loss_gap": "L_λ − forecast min", "max_error": "max_i |c_i − s_i|",
                   "off_diagonal": "off-diagonal", "forecast_zeros": "forecast zeros",
                   "trained_zeros": "trained zeros", "at_forecast": "at forecast", "max_imbalance": "max imbalance"}


def network_table(nets: pd.DataFrame) -> pd.DataFrame:
    """``Comparison.nets`` for display: the chapter's headers (:data:`NETWORK_HEADERS`), ``reached`` left out."""
    return nets[list(NETWORK_HEADERS)].rename(columns=NETWORK_HEADERS)


def forecast_summary(cmp: Comparison) -> dict[str, float]:
    """The numbers the chapter quotes, over the networks that reached their residual target (``ok``)
    unless said otherwise; a maximum over nothing is NaN.

    ``n_nets``, ``n_reached``; ``res_max`` (all networks), ``res_ok_max``; ``n_at_forecast``;
    ``n_forecast_zeros`` (singular values the forecast sets to zero), ``n_zeros_found`` (of those, trained
    ``c_i <= match_tol``) and ``zero_max`` (their largest ``|c_i|``); ``err_at_max`` (largest ``|c_i - s_i|``
    of the values at the forecast); ``off_max``; ``statset_max`` (largest distance to the stationary set);
    ``gap_min``; ``gap_global_max`` (largest ``|loss gap|`` of the networks at the forecast); ``n_window``,
    ``n_window_kept`` (values in the window ``sigma_e < sigma_i < sigma_c`` and those trained above
    ``match_tol``); ``trained_rank_never_lower`` (no network has more trained zeros than forecast ones);
    ``bal_max`` (largest imbalance of the networks that reached the target; all networks below);
    ``bal_cert_ok`` (every imbalance within its certificate, up to ``1e-9`` relative);
    ``bal_ratio_med`` (median certificate / imbalance)."""
    nets, svs, bal, tol = cmp.nets, cmp.svs, cmp.balance, cmp.match_tol
    ok, ok_sv = nets[nets["reached"]], svs[svs["reached"]]

    def top(series: pd.Series) -> float:
        return float(series.max()) if len(series) else math.nan

    zeros = ok_sv[ok_sv["forecast"] == 0]
    found = zeros[zeros["trained"] <= tol]
    window = ok_sv[ok_sv["window"]]
    return {
        "n_nets": len(nets), "n_reached": len(ok), "res_max": top(nets["residual"]), "res_ok_max": top(ok["residual"]),
        "n_at_forecast": int(ok["at_forecast"].sum()), "n_forecast_zeros": int(ok["forecast_zeros"].sum()),
        "n_zeros_found": len(found), "zero_max": top(found["trained"].abs()),
        "err_at_max": top(ok_sv[ok_sv["at_forecast"]]["error"]), "off_max": top(ok["off_diagonal"]),
        "statset_max": top(ok_sv["stationary_distance"]),
        "gap_min": float(ok["loss_gap"].min()) if len(ok) else math.nan,
        "gap_global_max": top(ok[ok["at_forecast"]]["loss_gap"].abs()),
        "n_window": len(window), "n_window_kept": int((window["trained"] > tol).sum()),
        "trained_rank_never_lower": bool((ok["trained_zeros"] <= ok["forecast_zeros"]).all()),
        "bal_max": top(bal[bal["reached"]]["imbalance"]),
        "bal_cert_ok": bool((bal["imbalance"] <= bal["certificate"] * (1 + 1e-9)).all()),
        "bal_ratio_med": float((bal["certificate"] / bal["imbalance"]).median()) if len(bal) else math.nan,
    }


__all__ = ["Comparison", "NETWORK_HEADERS", "PARAMETERS", "Problem", "compare_with_forecast", "forecast_curves",
           "forecast_summary", "network_table", "scalar_maps", "thresholds", "train_networks", "whitened_problem"]
