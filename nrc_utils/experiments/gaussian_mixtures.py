"""Chapter 4, Gaussian mixtures: the experiments (the paper's Section 4, arXiv:2402.03991).

The statements are the book's {prf:ref}`prop-input-tcv`, {prf:ref}`prop-propagation`,
{prf:ref}`prop-norm-budget` and {prf:ref}`thm-mixture-tail`; their formulas and the code that
evaluates them are in :mod:`nrc_utils.mixture_bounds`. This module runs the chapter's experiments
and returns tidy tables:

- :func:`input_tcv`: no network; the measured ``TCV_p(X)`` of sampled mixtures against
  ``E TCV_2 = s^2 d (N - K)`` and ``E TCV_1 = N s sqrt(1 - 1/n) chi_d``.
- :func:`train_grid`: one network per ``(s, lambda, seed)``, full-batch gradient descent batched
  over the lambda grid (``ensemble.train_ensemble``, cached) and float64 L-BFGS to the residual
  target (``train.polish``), as in chapter 3.
- :func:`measure_grid`: every layer of every network: spectrum, numerical rank, tail
  ``dist_F(W_l, M_K)``, the one-step propagation bounds and the chain and a priori bounds.
- :func:`bound_checks`, :func:`phase_summary`, :func:`slope_fits`: what the chapter reads off
  those tables (the hypotheses and inequalities, the corners and steps of the phase diagram in
  ``(s, lambda)``, the log-log slopes against the exponents ``s^1 lambda^{-(L+1)/2}`` of the
  a priori bound).

The sentences are built by :mod:`nrc_utils.prose.gaussian_mixtures`, the figures drawn by
:mod:`nrc_utils.figures.gaussian_mixtures`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import collapse, data, ensemble, mixture_bounds, models, params, spectral, train
from .. import device as _device
from ..report import subscript

STEM = "04_gaussian_mixtures"

#: The columns of the slope tables of :func:`slope_fits` after the fixed variable.
SLOPE_COLUMNS = ["layer", "seed", "points", "tail", "chain bound", "a priori bound"]


def _relations(v: Mapping[str, Any]) -> None:
    """What involves several parameters: ``K`` against the dimensions, a slope against the grids."""
    smallest = min(v["d"], *v["widths"])
    if v["K"] >= smallest:
        PARAMETERS.refuse("K", v["K"], f"expected an integer < {smallest}, below d and every width (a layer "
                                       "with at most K rows or columns is of rank at most K whatever it learns)")
    longest = max(len(v["s_grid"]), len(v["lambdas"]))
    if v["min_fit_points"] > longest:
        PARAMETERS.refuse("min_fit_points", v["min_fit_points"],
                          f"expected an integer <= {longest}, the length of the longer of s_grid and "
                          "lambdas (a slope is fitted along one of them)")


#: The rules of the chapter's parameters (``profile`` aside), checked by ``ci/build_book.py``
#: before papermill and by the chapter's first code cell.
PARAMETERS = params.Rules(STEM, {
    "seed": params.integer(ge=0),
    "n_seeds": params.integer(ge=1),
    "K": params.integer(ge=1),
    "d": params.integer(ge=1),
    # class means need two points per class (one point is its own mean: TCV = 0, E TCV = 0)
    "n_per_class": params.integer(ge=2),
    "mean_scale": params.number(ge=0),
    "widths": params.grid(params.integer(ge=1)),
    "activation": params.one_of(*mixture_bounds.LIPSCHITZ),
    # the a priori bound of thm-mixture-tail is stated for the square loss only
    "loss": params.one_of("mse"),
    "lr": params.number(gt=0),
    "gd_steps": params.integer(ge=0),
    "polish_tol": params.number(gt=0),
    "polish_max_iter": params.integer(ge=1),
    "polish_max_seconds": params.number(gt=0),
    "newton_tol": params.number(gt=0),
    "train_device": params.one_of("cpu", "auto", "cuda"),
    # log-log axes and slopes: s > 0 and lambda > 0 (the norm budget divides by lambda)
    "s_grid": params.grid(params.number(gt=0), distinct=True),
    "lambdas": params.grid(params.number(gt=0), distinct=True),
    "rank_rtol": params.number(gt=0, lt=1),
    "floor_factor": params.number(ge=0),
    "min_fit_points": params.integer(ge=2),
    "tcv_d_grid": params.grid(params.integer(ge=1), distinct=True),
    "tcv_s_grid": params.grid(params.number(gt=0), distinct=True),
    "tcv_draws": params.integer(ge=1),
}, relations=_relations)


@dataclass(frozen=True)
class Spec:
    """The chapter's parameters (the names of :data:`PARAMETERS`), with what follows from them."""

    seed: int
    n_seeds: int
    K: int
    d: int
    n_per_class: int
    mean_scale: float
    widths: Sequence[int]
    activation: str
    loss: str
    lr: float
    gd_steps: int
    polish_tol: float
    polish_max_iter: int
    polish_max_seconds: float
    newton_tol: float
    train_device: str
    s_grid: Sequence[float]
    lambdas: Sequence[float]
    rank_rtol: float
    floor_factor: float
    min_fit_points: int
    tcv_d_grid: Sequence[int]
    tcv_s_grid: Sequence[float]
    tcv_draws: int

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> "Spec":
        """Check ``values`` (e.g. a notebook's ``globals()``) by :data:`PARAMETERS` and keep them."""
        return cls(**PARAMETERS.check(values))

    @property
    def L(self) -> int:
        """Depth: ``W_1 .. W_L`` with ``L = len(widths) + 1``."""
        return len(self.widths) + 1

    @property
    def N(self) -> int:
        """Samples: ``N = K n``."""
        return self.K * self.n_per_class

    @property
    def seeds(self) -> list[int]:
        """Starting seeds ``seed, seed + 1, ..., seed + n_seeds - 1``."""
        return [self.seed + j for j in range(self.n_seeds)]

    @property
    def hidden(self) -> list[int]:
        """``1 .. L-1``: the layers whose rank is not capped by ``K`` (``W_L`` has ``K`` rows)."""
        return list(range(1, self.L))

    @property
    def exponents(self) -> dict[str, float]:
        """``{"s": 1, "lambda": -(L+1)/2}``: the a priori bound's scaling (``mixture_bounds.predicted_exponents``)."""
        return mixture_bounds.predicted_exponents(self.L)

    def config(self) -> train.TrainConfig:
        """The training configuration of every network (``lam`` and ``seed`` are set per member)."""
        return train.TrainConfig(lam=self.lambdas[0], loss=self.loss, lr=self.lr, steps=self.gd_steps,
                                 record_every=max(1, self.gd_steps // 5), polish_tol=self.polish_tol,
                                 polish_max_iter=self.polish_max_iter, polish_max_seconds=self.polish_max_seconds,
                                 newton_tol=self.newton_tol)


def training_device(seed: int, train_device: str) -> torch.device:
    """Seed everything, one torch thread (networks a few tens wide on a few hundred samples run
    fastest so), and the device: ``train_device`` unless it is ``"auto"`` (then CUDA when present)."""
    dev = _device.setup(seed, max_threads=1)
    return dev if train_device == "auto" else torch.device(train_device)


# ----------------------------------------------------------------------------- input layer

@dataclass
class InputTCV:
    """:func:`input_tcv`'s result.

    ``draws``: one row per ``(d, s, draw)``: ``tcv1``, ``tcv2``, the normalised ``tcv2_norm``
    (``TCV_2 / (N s^2 d)``) and ``tcv1_norm`` (``TCV_1 / (N s sqrt d)``), and the ratios to the
    expectations ``tcv2_ratio``, ``tcv1_ratio``. ``expected``: one row per ``d``, the expectations
    of the normalised columns, ``(N - K)/N`` and ``sqrt(1 - 1/n) chi_d / sqrt d``. ``summary``:
    the scalars the chapter glues (keys as its glue keys without ``ch4_``).
    """

    draws: pd.DataFrame
    expected: pd.DataFrame
    summary: dict[str, float] = field(default_factory=dict)


def input_tcv(K: int, n_per_class: int, d_grid: Sequence[int], s_grid: Sequence[float], draws: int,
              mean_scale: float = 1.0) -> InputTCV:
    """Measured ``TCV_p(X)`` (``collapse.collapse_stats``, empirical class means) of ``draws`` mixtures
    ``data.gaussian_mixture(K, d, n_per_class, s, seed=draw)`` per ``(d, s)``, against
    ``mixture_bounds.expected_tcv`` ({prf:ref}`prop-input-tcv`)."""
    N = K * n_per_class
    rows = []
    for d in d_grid:
        for s in s_grid:
            exp = mixture_bounds.expected_tcv(K, d, n_per_class, s)
            for draw in range(draws):
                m = data.gaussian_mixture(K, d, n_per_class, s, mean_scale=mean_scale, seed=draw)
                c = collapse.collapse_stats(m.X, m.y, K)
                rows.append({"d": d, "s": s, "draw": draw, "tcv1": c.tcv1, "tcv2": c.tcv2,
                             "tcv2_norm": c.tcv2 / (N * s ** 2 * d), "tcv1_norm": c.tcv1 / (N * s * math.sqrt(d)),
                             "tcv2_ratio": c.tcv2 / exp["tcv2"], "tcv1_ratio": c.tcv1 / exp["tcv1"]})
    df = pd.DataFrame(rows)
    # E TCV at s = 1, divided by N d (resp. N sqrt d): the normalised columns' expectations
    unit = {d: mixture_bounds.expected_tcv(K, d, n_per_class, 1.0) for d in d_grid}
    expected = pd.DataFrame({"d": list(d_grid),
                             "tcv2_norm": [unit[d]["tcv2"] / (N * d) for d in d_grid],
                             "tcv1_norm": [unit[d]["tcv1"] / (N * math.sqrt(d)) for d in d_grid]})
    worst = df.groupby("d")["tcv2_ratio"].agg(lambda v: float(np.abs(v - 1).max()))  # sorted by d
    d_min = min(d_grid)
    summary = {
        "tcv_draws": draws,
        "tcv2_ratio_mean": float(df["tcv2_ratio"].mean()), "tcv1_ratio_mean": float(df["tcv1_ratio"].mean()),
        "tcv2_ratio_min": float(df["tcv2_ratio"].min()), "tcv2_ratio_max": float(df["tcv2_ratio"].max()),
        "tcv2_spread_small_d": float(worst.iloc[0]), "tcv2_spread_large_d": float(worst.iloc[-1]),
        "tcv_d_min": d_min, "tcv_d_max": max(d_grid),
        "chi_ratio_small_d": float(expected.loc[expected["d"] == d_min, "tcv1_norm"].iloc[0]),
    }
    return InputTCV(df, expected, summary)


# ----------------------------------------------------------------------------- trained grid

@dataclass
class GridRun:
    """:func:`train_grid`'s result: ``mixes[s]`` the data set of noise level ``s``; ``results[(s, lam, seed)]``
    the ``train.TrainResult`` of that network; ``networks`` one row per network (:func:`networks_table`)."""

    spec: Spec
    mixes: dict[float, data.Dataset]
    results: dict[tuple[float, float, int], train.TrainResult]
    networks: pd.DataFrame


def networks_table(results: Mapping[tuple[float, float, int], train.TrainResult]) -> pd.DataFrame:
    """One row per network: ``s, lambda, seed``, ``max_l ρ_l`` (largest relative residual), ``target``,
    ``stopped by`` (``TrainResult.stop``, the last polishing stage), ``reached`` (stopped at the target),
    ``λ_min(H)`` (the smallest Hessian eigenvalue of ``L_lambda``), ``train accuracy``, ``L_lambda``."""
    cols = ["s", "lambda", "seed", "max_l ρ_l", "target", "stopped by", "reached", "λ_min(H)", "train accuracy",
            "L_lambda"]
    return pd.DataFrame([{"s": s, "lambda": lam, "seed": sd, "max_l ρ_l": r.max_residual,
                          "target": r.target, "stopped by": r.stop,
                          "reached": r.reached, "λ_min(H)": float("nan") if r.min_eigenvalue is None else r.min_eigenvalue, "train accuracy": r.final["acc"],
                          "L_lambda": r.final["loss"]} for (s, lam, sd), r in results.items()], columns=cols)


def train_grid(spec: Spec, device: str | torch.device = "cpu", use_cache: bool = True) -> GridRun:
    """Train one network per ``(s, lambda, seed)`` of the grid: for each ``s`` one mixture (data seed
    ``spec.seed``, the same noise draws for every ``s``) and one ``ensemble.train_ensemble`` call over
    every ``(lambda, seed)``, the same starting weights for every ``(s, lambda)`` (per seed)."""
    lam_list, seed_list = ensemble.grid(spec.lambdas, spec.seeds)
    mixes, results = {}, {}
    for s in spec.s_grid:
        mixes[s] = data.gaussian_mixture(spec.K, spec.d, spec.n_per_class, s, mean_scale=spec.mean_scale,
                                         seed=spec.seed)
        out = ensemble.train_ensemble(spec.d, list(spec.widths), spec.K, lam_list, seed_list, mixes[s].X,
                                      mixes[s].y, spec.config(), activation=spec.activation, bias=False,
                                      device=str(device), use_cache=use_cache)
        for r in out:
            results[(s, r.config.lam, r.config.seed)] = r
    return GridRun(spec, mixes, results, networks_table(results))


@dataclass
class Measurements:
    """:func:`measure_grid`'s result.

    ``propagation``: one row per ``(network, hidden layer l)``, the keys of
    ``mixture_bounds.propagation`` with ``s, lambda, seed, reached``. ``tails``: one row per
    ``(network, layer l = 1 .. L)``, the keys of ``mixture_bounds.mixture_bounds`` with ``s, lambda,
    seed, reached``, ``rank`` (numerical, at ``rank_rtol``), ``relative tail`` (``tail / ||W_l||_F``),
    ``residual`` (the network's ``max_l ρ_l``), ``resolved`` (``tail > floor_factor ||R_l||_F / lambda``)
    and ``hidden`` (``l < L``).
    """

    propagation: pd.DataFrame
    tails: pd.DataFrame

    @property
    def hidden_tails(self) -> pd.DataFrame:
        """The rows of :attr:`tails` of the hidden layers ``W_1 .. W_{L-1}``."""
        return self.tails[self.tails["hidden"]]


def measure_grid(run: GridRun) -> Measurements:
    """Measure every network of ``run``: ``mixture_bounds.propagation`` (one-step bounds of
    {prf:ref}`prop-propagation`), ``mixture_bounds.mixture_bounds`` (chain and a priori bounds of
    {prf:ref}`thm-mixture-tail`, from the starting network ``models.MLP(..., seed=seed)``) and the
    spectrum of every ``W_l`` (``spectral``)."""
    spec = run.spec
    prop_rows, tail_rows = [], []
    for (s, lam, sd), r in run.results.items():
        X, y = run.mixes[s].X, run.mixes[s].y
        key = {"s": s, "lambda": lam, "seed": sd, "reached": r.reached}
        model0 = models.MLP(spec.d, list(spec.widths), spec.K, activation=spec.activation, bias=False, seed=sd)
        prop_rows += [{**key, **row} for row in mixture_bounds.propagation(r.model, X, y, spec.K)]
        bounds = mixture_bounds.mixture_bounds(r.model, model0, X, y, lam, spec.loss, spec.K)
        for W, b in zip(models.weight_matrices(r.model), bounds):
            sv = spectral.singular_values(W)
            tail_rows.append({**key, "rank": spectral.numerical_rank(sv, spec.rank_rtol),
                              "relative tail": b["tail"] / np.linalg.norm(sv), "residual": r.max_residual, **b})
    tails = pd.DataFrame(tail_rows)
    tails["resolved"] = tails["tail"] > spec.floor_factor * tails["residual_term"]
    tails["hidden"] = tails["layer"] < spec.L
    return Measurements(pd.DataFrame(prop_rows), tails)


def bound_checks(m: Measurements, rel: float = 1e-12, rel_bounds: float = 1e-9) -> dict[str, Any]:
    """The hypotheses and proven inequalities on every network (keys as the chapter's glue keys without ``ch4_``).

    ``n_networks``; ``n_descended``: networks with ``L_lambda(Theta) <= L_lambda(Theta_0)`` (the hypothesis of
    {prf:ref}`prop-norm-budget` and of the a priori bound); ``norm_ratio_max``: the largest
    ``sum_l ||W_l||_F^2 / (2 L_lambda(Theta_0) / lambda)`` over those (NaN when none);
    ``prop_holds``: both one-step bounds of {prf:ref}`prop-propagation` hold everywhere (up to
    ``rel``); ``bounds_hold``: the chain bound holds for every layer and the a priori bound for
    every layer of every network that descended (up to ``rel_bounds``); ``prop2_ratio_min/max``,
    ``prop1_ratio_max``: measured/bound; ``chain_ratio_med``, ``prior_ratio_min``: bound/tail on
    the hidden layers (the a priori one on networks that descended).
    """
    p, t = m.propagation, m.tails
    desc = t[t["descended"]]
    th = m.hidden_tails
    th_desc = th[th["descended"]]
    r2 = np.sqrt(p["tcv2_out"]) / p["bound_sqrt_tcv2"]
    prop_holds = bool((np.sqrt(p["tcv2_out"]) <= p["bound_sqrt_tcv2"] * (1 + rel)).all()
                      and (p["tcv1_out"] <= p["bound_tcv1"] * (1 + rel)).all())
    bounds_hold = bool((t["tail"] <= t["chain"] * (1 + rel_bounds)).all()
                       and (desc["tail"] <= desc["a_priori"] * (1 + rel_bounds)).all())
    per_network = t.groupby(["s", "lambda", "seed"])["descended"].first()
    return {
        "n_networks": int(len(per_network)), "n_descended": int(per_network.sum()),
        "norm_ratio_max": float((desc["sq_norms"] / desc["budget"]).max()) if len(desc) else math.nan,
        "prop_holds": prop_holds, "bounds_hold": bounds_hold,
        "prop2_ratio_max": float(r2.max()), "prop2_ratio_min": float(r2.min()),
        "prop1_ratio_max": float((p["tcv1_out"] / p["bound_tcv1"]).max()),
        "chain_ratio_med": float((th["chain"] / th["tail"]).median()),
        "prior_ratio_min": float((th_desc["a_priori"] / th_desc["tail"]).min()) if len(th_desc) else math.nan,
    }


# ----------------------------------------------------------------------------- phase diagram

@dataclass
class Phase:
    """:func:`phase_summary`'s result. ``stationary``: the hidden-layer rows of the networks that reached
    the target; ``corner_lo`` / ``corner_hi``: those at ``(min s, max lambda)`` / ``(max s, min lambda)``;
    ``pairs``: the two corners side by side per ``(layer, seed)`` (``tail_lo, rank_lo, tail_hi, rank_hi``);
    ``counts``: the scalars the chapter glues."""

    stationary: pd.DataFrame
    corner_lo: pd.DataFrame
    corner_hi: pd.DataFrame
    pairs: pd.DataFrame
    counts: dict[str, int]


def steps_up(stationary: pd.DataFrame, var: str, fixed: str) -> tuple[int, int]:
    """``(increases, steps)`` of the tail between consecutive values of ``var`` at each fixed ``fixed``,
    layer and seed (consecutive among the rows given: the stationary networks)."""
    up = n = 0
    for _, g in stationary.groupby([fixed, "layer", "seed"]):
        t = g.sort_values(var)["tail"].to_numpy()
        up, n = up + int((np.diff(t) > 0).sum()), n + max(len(t) - 1, 0)
    return up, n


def phase_summary(m: Measurements, spec: Spec) -> Phase:
    """The phase diagram in ``(s, lambda)`` read off the stationary hidden layers: how many have
    numerical rank at most ``K``, the two corners, and the steps of the tail along ``s`` and ``lambda``."""
    th = m.hidden_tails
    st = th[th["reached"]]
    lo = st[(st["s"] == min(spec.s_grid)) & (st["lambda"] == max(spec.lambdas))]
    hi = st[(st["s"] == max(spec.s_grid)) & (st["lambda"] == min(spec.lambdas))]
    cols = ["layer", "seed", "tail", "rank"]
    pairs = lo[cols].merge(hi[cols], on=["layer", "seed"], suffixes=("_lo", "_hi"))
    up_s, n_s = steps_up(st, "s", "lambda")
    up_l, n_l = steps_up(st, "lambda", "s")
    counts = {"n_cells_rankK": int((st["rank"] <= spec.K).sum()), "n_cells": int(len(st)),
              "steps_s_up": up_s, "steps_s": n_s, "steps_lam_down": n_l - up_l, "steps_lam": n_l}
    return Phase(st, lo, hi, pairs, counts)


# ----------------------------------------------------------------------------- slopes

@dataclass
class Slopes:
    """:func:`slope_fits`' result: ``in_s`` (one row per ``(lambda, layer, seed)``, slopes in ``s``) and
    ``in_lambda`` (one row per ``(s, layer, seed)``), columns ``[fixed] +`` :data:`SLOPE_COLUMNS`."""

    in_s: pd.DataFrame
    in_lambda: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """Both, stacked, with ``slope in`` (``s`` / ``λ``) and ``at`` (``λ = 0.01`` / ``s = 0.1``) first."""
        a = self.in_s.assign(**{"slope in": "s", "at": self.in_s["lambda"].map(lambda v: f"λ = {v:g}")})
        b = self.in_lambda.assign(**{"slope in": "λ", "at": self.in_lambda["s"].map(lambda v: f"s = {v:g}")})
        return pd.concat([a, b])[["slope in", "at", *SLOPE_COLUMNS]]


def fit_points(tails: pd.DataFrame) -> pd.DataFrame:
    """The rows that enter a slope fit: hidden layers of networks at their target whose tail is resolved
    (above ``floor_factor`` times the solver floor ``||R_l||_F / lambda``)."""
    return tails[tails["hidden"] & tails["reached"] & tails["resolved"]]


def fit_slopes(points: pd.DataFrame, var: str, fixed: str, min_points: int) -> pd.DataFrame:
    """Least-squares log-log slopes (``spectral.loglog_slope``) in ``var`` of the tail and of the chain
    and a priori bounds, per ``(fixed, layer, seed)`` with at least ``min_points`` points."""
    out = []
    for (fv, l, sd), g in points.groupby([fixed, "layer", "seed"]):
        if len(g) >= min_points:
            out.append({fixed: fv, "layer": "W" + subscript(l), "seed": sd, "points": len(g),
                        "tail": spectral.loglog_slope(g[var], g["tail"]),
                        "chain bound": spectral.loglog_slope(g[var], g["chain"]),
                        "a priori bound": spectral.loglog_slope(g[var], g["a_priori"])})
    return pd.DataFrame(out, columns=[fixed, *SLOPE_COLUMNS])


def slope_fits(m: Measurements, spec: Spec) -> Slopes:
    """Slopes in ``s`` at each ``lambda`` and in ``lambda`` at each ``s`` (:func:`fit_slopes` on :func:`fit_points`)."""
    pts = fit_points(m.tails)
    return Slopes(fit_slopes(pts, "s", "lambda", spec.min_fit_points),
                  fit_slopes(pts, "lambda", "s", spec.min_fit_points))


__all__ = ["GridRun", "InputTCV", "Measurements", "PARAMETERS", "Phase", "SLOPE_COLUMNS", "STEM", "Slopes", "Spec",
           "bound_checks", "fit_points", "fit_slopes", "input_tcv", "measure_grid", "networks_table",
           "phase_summary", "slope_fits", "steps_up", "train_grid", "training_device"]
