"""Chapter 4, Gaussian mixtures: the sentences and shown numbers the chapter glues.

Pure functions of the tables of :mod:`nrc_utils.experiments.gaussian_mixtures`; each ``*_values``
function returns ``{glue key without "ch4_": value}`` (numbers stay numbers, text is Markdown for
``report.glue``). "At most" / "at least" numbers are rounded in the safe direction
(``report.rounded``). The statements read are the book's {prf:ref}`prop-input-tcv`,
{prf:ref}`prop-propagation`, {prf:ref}`prop-norm-budget` and {prf:ref}`thm-mixture-tail`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from ..report import hessian_summary, rounded, stop_summary, subscript

#: What a corner shows when its network missed the stationarity target.
NOT_AVAILABLE = "not available (network missed the target)"


def layer_name(l: int) -> str:
    """``"W₂"``: a layer's name where no math is rendered (tables, glued text)."""
    return "W" + subscript(l)


def number_list(values: Iterable[float]) -> str:
    """``"0.05, 0.1, 0.2"``: a grid as text."""
    return ", ".join(f"{v:g}" for v in values)


def architecture(d: int, widths: Sequence[int], K: int) -> str:
    """``"16 → 16 → 3"``: the widths of an MLP from input to output."""
    return " → ".join(map(str, [d, *widths, K]))


def _up(value: float, spec: str) -> str:
    return rounded(value, spec, +1) if math.isfinite(value) else "n/a"


def _down(value: float, spec: str) -> str:
    return rounded(value, spec, -1) if math.isfinite(value) else "n/a"


def setup_values(spec: Any) -> dict[str, Any]:
    """The parameters the text quotes, from a ``gaussian_mixtures.Spec``."""
    expo = spec.exponents
    return {"K": spec.K, "d": spec.d, "n_per_class": spec.n_per_class, "N": spec.N, "mean_scale": spec.mean_scale,
            "L": spec.L, "arch": architecture(spec.d, spec.widths, spec.K), "gd_steps": spec.gd_steps,
            "lr": spec.lr, "tol": spec.polish_tol, "newton_tol": spec.newton_tol, "max_iter": spec.polish_max_iter,
            "max_seconds": spec.polish_max_seconds, "rank_rtol": spec.rank_rtol,
            "s_grid": number_list(spec.s_grid), "lambdas": number_list(spec.lambdas), "n_seeds": spec.n_seeds,
            "floor_factor": spec.floor_factor, "min_fit_points": spec.min_fit_points,
            "expo_s": expo["s"], "expo_lam": expo["lambda"], "expo_lam_abs": -expo["lambda"]}


def training_values(results: Sequence[Any]) -> dict[str, Any]:
    """How the grid's networks (``train.TrainResult``) ended: ``report.stop_summary``, counts, residual
    range (rounded outwards) and the smallest training accuracy."""
    if not results:
        return {"stop_summary": "No network was trained.", "hessian": "", "n_networks": 0, "n_reached": 0,
                "res_max_up": "n/a", "res_min_dn": "n/a", "acc_min": math.nan}
    res = [r.max_residual for r in results]
    return {"stop_summary": stop_summary(list(results), "networks of the grid"),
            "hessian": hessian_summary(list(results), "networks of the grid"), "n_networks": len(results),
            "n_reached": sum(r.reached for r in results),
            "res_max_up": _up(max(res), ".1e"), "res_min_dn": _down(min(res), ".1e"),
            "acc_min": float(min(r.final["acc"] for r in results))}


def propagation_verdict(holds: bool) -> str:
    """Completes "The one-step bound ...": it holds, or (it is a theorem) a bug."""
    return ("holds for every hidden layer of every network" if holds else
            "is violated somewhere — a bug, since it is a theorem; see the table")


def bounds_verdict(holds: bool, n_descended: int, n_networks: int) -> str:
    """Begins "... of the grid": both tail bounds hold (the a priori one where its hypothesis
    ``L_lambda(Theta) <= L_lambda(Theta_0)`` holds: on the ``n_descended`` of ``n_networks`` networks
    that descended), or (they are theorems) a bug."""
    if not holds:
        return "A bound fails somewhere — a bug, since both are theorems; see the table"
    if n_descended == n_networks:
        return "Both bounds hold for every layer of every network"
    if n_descended == 0:
        return ("No network ended below its starting loss, so the a priori bound does not apply; the chain "
                "bound holds for every layer of every network")
    return (f"Both bounds hold for every layer of the {n_descended} networks that ended below their starting "
            "loss (the a priori bound assumes it), the chain bound also for the other networks")


def bound_values(checks: Mapping[str, Any]) -> dict[str, Any]:
    """The propagation and tail-bound checks (``gaussian_mixtures.bound_checks``) as shown: ratios
    rounded in the direction of their sentence ("at most" up, "at least" down; "n/a" when undefined)."""
    return {"n_descended": checks["n_descended"], "norm_ratio_max_up": _up(checks["norm_ratio_max"], ".2f"),
            "prop_verdict": propagation_verdict(checks["prop_holds"]),
            "prop2_ratio_max_up": _up(checks["prop2_ratio_max"], ".2f"),
            "prop2_ratio_min_dn": _down(checks["prop2_ratio_min"], ".2f"),
            "prop1_ratio_max_up": _up(checks["prop1_ratio_max"], ".2f"),
            "chain_ratio_med": checks["chain_ratio_med"],
            "prior_ratio_min_dn": _down(checks["prior_ratio_min"], ".2g"),
            "bounds_verdict": bounds_verdict(checks["bounds_hold"], checks["n_descended"], checks["n_networks"])}


def corner_ranks(corner: pd.DataFrame, seed: int) -> str:
    """``"3, 3, 3"``: the numerical ranks of ``W_1, W_2, ...`` of seed ``seed``'s corner network (the one
    the phase diagram shows), or :data:`NOT_AVAILABLE` when it is not among the stationary rows."""
    c = corner[corner["seed"] == seed].sort_values("layer")
    return ", ".join(str(int(v)) for v in c["rank"]) if len(c) else NOT_AVAILABLE


def phase_verdict(pairs: pd.DataFrame) -> str:
    """Completes "The phase diagram, compared corner to corner, ...": does the low-noise, strong-decay
    corner have, layer by layer and seed by seed, a smaller tail and no larger rank than the opposite one?
    ``pairs``: columns ``layer, tail_lo, rank_lo, tail_hi, rank_hi`` (stationary networks only)."""
    if len(pairs) == 0:
        return "could not be judged: a corner network missed the stationarity target"
    better = (pairs["tail_lo"] < pairs["tail_hi"]) & (pairs["rank_lo"] <= pairs["rank_hi"])
    if better.all():
        return ("goes the way the paper's claim says: in every hidden layer (and seed), small s with large λ gives "
                "a smaller tail and no larger rank than large s with small λ")
    bad = ", ".join(layer_name(l) for l in sorted(pairs.loc[~better, "layer"].unique()))
    return (f"does not go the claimed way everywhere: in {bad} the low-noise, strong-decay corner has a "
            "larger tail or rank than the opposite corner")


def phase_values(phase: Any, spec: Any) -> dict[str, Any]:
    """The phase diagram's numbers and verdict, from a ``gaussian_mixtures.Phase``."""
    seed = spec.seeds[0]
    lo, hi = phase.corner_lo["tail"], phase.corner_hi["tail"]
    return {**phase.counts,
            "rank_corner_lo": corner_ranks(phase.corner_lo, seed), "rank_corner_hi": corner_ranks(phase.corner_hi, seed),
            "s_min": min(spec.s_grid), "s_max": max(spec.s_grid),
            "lam_min": min(spec.lambdas), "lam_max": max(spec.lambdas),
            "phase_verdict": phase_verdict(phase.pairs),
            "tail_corner_lo_max_up": _up(float(lo.max()), ".1e") if len(lo) else "n/a",
            "tail_corner_hi_min_dn": _down(float(hi.min()), ".1e") if len(hi) else "n/a"}


def slope_range(slopes: pd.Series) -> tuple[float, float, float]:
    """``(median, min, max)`` of the fitted slopes (NaN ones left out); NaNs when there are none."""
    v = pd.Series(slopes, dtype=float).dropna()
    return (float(v.median()), float(v.min()), float(v.max())) if len(v) else (math.nan,) * 3


def slope_s_verdict(slopes: pd.Series, exponent: float) -> str:
    """Completes "the tail's slope in s has median ... and ...": against the a priori bound's exponent
    in ``s`` (1), steeper in every fit, flatter in every fit, or mixed."""
    v = pd.Series(slopes, dtype=float).dropna()
    if len(v) == 0:
        return "could not be fitted: no (λ, layer) had enough resolved points"
    if v.min() >= exponent:
        return (f"is steeper than the bound's exponent {exponent:g} in every fit: the tail falls faster than the "
                "bound requires, so the bound is consistent with the run but not sharp in s")
    if v.max() < exponent:
        return (f"is flatter than the bound's exponent {exponent:g} in every fit: over this grid the tail falls more "
                "slowly than s, which the bound (an upper bound whose constant changes with the minimiser) does "
                "not forbid, but which contradicts reading the exponent as a prediction of the tail")
    return (f"is steeper than the bound's exponent {exponent:g} in {int((v >= exponent).sum())} "
            f"of {len(v)} fits and flatter in the others: the exponent of the bound does not predict the tail's")


def slope_lambda_verdict(slopes: pd.Series, exponent: float) -> str:
    """Completes "the tail's slope in λ has median ... and ...": negative or not, and against the a priori
    bound's exponent ``-(L+1)/2`` shallower in every fit, steeper in every fit, or mixed."""
    v = pd.Series(slopes, dtype=float).dropna()
    if len(v) == 0:
        return "could not be fitted: no (s, layer) had enough resolved points"
    if v.max() >= 0:
        return (f"is not negative in {int((v >= 0).sum())} of {len(v)} fits: the tail does not fall with "
                "λ everywhere over this grid, contrary to the direction the bound suggests")
    if v.min() >= exponent:
        return (f"is negative but shallower than the bound's {exponent:g} in every fit: the tail falls with λ, "
                "more slowly than the bound does as λ grows")
    if v.max() < exponent:
        return (f"is steeper than the bound's {exponent:g} in every fit: the tail falls with λ faster than the "
                "bound, which therefore overestimates it most at large λ")
    return (f"is negative in every fit, steeper than the bound's {exponent:g} in "
            f"{int((v < exponent).sum())} of {len(v)} fits and shallower in the others")


def s2_compare(median: float) -> str:
    """Completes "... the variability term is of order s^2 rather than s; ...": the median slope in s
    against 2 (steeper above 2.5, close from 1.5 to 2.5, flatter below 1.5)."""
    if math.isnan(median):
        return "no slope in s was fitted here to compare with it"
    if median > 2.5:
        return (f"the fitted slopes (median {median:.2f}) are steeper even than that, since the stationary point "
                "itself moves with s (its signals and weights change too)")
    if median >= 1.5:
        return f"the fitted slopes (median {median:.2f}) are close to that"
    return f"the fitted slopes (median {median:.2f}) are flatter than that"


def slope_values(slopes: Any, exponents: Mapping[str, float]) -> dict[str, Any]:
    """Medians and ranges of the slopes of the tail and of both bounds, in ``s`` (``slope_s_*``) and in
    ``lambda`` (``slope_lam_*``), the number of fits, and the verdicts, from a ``gaussian_mixtures.Slopes``."""
    out: dict[str, Any] = {}
    for key, df in (("s", slopes.in_s), ("lam", slopes.in_lambda)):
        for col, tag in (("tail", "tail"), ("chain bound", "chain"), ("a priori bound", "prior")):
            med, lo, hi = slope_range(df[col])
            out.update({f"slope_{key}_{tag}_med": med, f"slope_{key}_{tag}_min": lo, f"slope_{key}_{tag}_max": hi})
        out[f"n_fits_{key}"] = len(df)
    out["slope_s_verdict"] = slope_s_verdict(slopes.in_s["tail"], exponents["s"])
    out["s2_compare"] = s2_compare(out["slope_s_tail_med"])
    out["slope_lam_verdict"] = slope_lambda_verdict(slopes.in_lambda["tail"], exponents["lambda"])
    return out


__all__ = ["NOT_AVAILABLE", "architecture", "bound_values", "bounds_verdict", "corner_ranks", "layer_name",
           "number_list", "phase_values", "phase_verdict", "propagation_verdict", "s2_compare", "setup_values",
           "slope_lambda_verdict", "slope_range", "slope_s_verdict", "slope_values", "training_values"]
