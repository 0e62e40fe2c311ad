"""The sentences of chapter 5 (``05_deep_linear_networks``): pure functions of the tables of
:mod:`nrc_utils.experiments.deep_linear_networks`.

Every branch is driven by ``tests/test_prose_deep_linear_networks.py``: no network at the target,
none in the window, every one / none / some on the positive branch, misses by keeping and by
zeroing a singular value. Numbers in "at most" / "at least" sentences are rounded in the safe
direction (:func:`nrc_utils.report.rounded`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from ..report import rounded


def tuple_text(values: Sequence[float]) -> str:
    """``"(0.33, 0.26, 0.2)"``."""
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def set_text(values: Sequence[float]) -> str:
    """``"{2, 3, 4}"``."""
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


#: The bounds of :func:`bounds`: glue key (without ``ch5_``), summary key, direction.
BOUNDS = (("res_max_up", "res_max", +1), ("res_ok_max_up", "res_ok_max", +1), ("zero_max_up", "zero_max", +1),
          ("err_at_max_up", "err_at_max", +1), ("off_max_up", "off_max", +1), ("statset_max_up", "statset_max", +1),
          ("gap_min_dn", "gap_min", -1), ("gap_global_max_up", "gap_global_max", +1), ("bal_max_up", "bal_max", +1))


def bounds(summary: Mapping[str, float]) -> dict[str, str]:
    """The "at most" (``*_up``, rounded up) and "at least" (``*_dn``, rounded down) numbers of
    :func:`nrc_utils.experiments.deep_linear_networks.forecast_summary` as shown text (``".1e"``);
    a maximum over nothing (NaN) is ``"nan"``, except ``zero_max_up``: no zero was found, ``"0"``."""
    out = {}
    for key, name, direction in BOUNDS:
        value = summary[name]
        if math.isnan(value):
            out[key] = "0" if key == "zero_max_up" else "nan"
        else:
            out[key] = rounded(value, ".1e", direction)
    return out


def window_reading(n_window: int, n_kept: int, trained_rank_never_lower: bool) -> str:
    """What the singular values in the window ``sigma_e < sigma_i(A) < sigma_c`` did: ``n_kept`` of the
    ``n_window`` ended on the positive branch (which the forecast discards)."""
    if n_window == 0:
        return "No singular value of this run lies in the window of a depth above 2."
    if n_kept == n_window:
        return ("Whether a singular value in the window ends on the zero branch or on the positive one is decided "
                "by the path of gradient descent, not by the loss; here it ended on the positive branch every time"
                + (", so wherever trained and forecast rank differ, the trained rank is the larger."
                   if trained_rank_never_lower else "."))
    if n_kept == 0:
        return "Every singular value in the window ended on the zero branch, as the forecast says."
    return ("Whether a singular value in the window ends on the zero branch or on the positive one is decided "
            f"by the path of gradient descent, not by the loss; here {n_kept} of {n_window} ended on the "
            "positive branch.")


def _wrong_value(i: int, w: pd.DataFrame, tol: float) -> tuple[str, str]:
    """``(kind, text)`` of one singular value ``i`` off the forecast over some seeds: kind ``"kept"``
    (the forecast is 0), ``"zeroed"`` (trained at most ``tol``) or ``"moved"``."""
    lo, hi = w["trained"].min(), w["trained"].max()
    at = f"{lo:.3g}" + (f" to {hi:.3g}" if hi - lo > 1e-6 else "")
    head, fc = f"σ{i}(A) = {w['sigma_A'].iloc[0]:g}", f"(forecast {w['forecast'].iloc[0]:.3g})"
    if (w["forecast"] == 0).all():
        return "kept", f"{head} kept at {at} {fc}"
    if (w["trained"] <= tol).all():
        return "zeroed", f"{head} set to zero {fc}"
    return "moved", f"{head} at {at} {fc}"


#: How the misses went, by the kinds of :func:`_wrong_value` they contain.
_HOW = {frozenset({"kept"}): "every time by keeping a singular value that the forecast sets to zero",
        frozenset({"zeroed"}): "every time by setting to zero a singular value that the forecast keeps"}


def miss_text(nets_ok: pd.DataFrame, svs_ok: pd.DataFrame, match_tol: float) -> str:
    """The networks that reached the target but not the forecast, grouped by ``(L, lambda)`` over seeds:
    which singular values are off the forecast, and how far the loss is above the forecast minimum
    (rounded down). ``nets_ok``, ``svs_ok``: ``Comparison.nets`` / ``.svs`` of those networks."""
    miss = nets_ok[~nets_ok["at_forecast"]]
    if not len(miss):
        return f"All {len(nets_ok)} networks that reached the target ended at the forecast global minimiser."
    parts, kinds = [], set()
    for (L, lam), grp in miss.groupby(["L", "lam"], sort=True):
        n_all = int(((nets_ok["L"] == L) & (nets_ok["lam"] == lam)).sum())
        wrong = svs_ok[(svs_ok["L"] == L) & (svs_ok["lam"] == lam) & ~svs_ok["at_forecast"]]
        texts = []
        for i, w in wrong.groupby("i"):
            kind, text = _wrong_value(int(i), w, match_tol)
            kinds.add(kind)
            texts.append(text)
        parts.append(f"L = {L}, λ = {lam:g} ({len(grp)} of {n_all} seeds: {', '.join(texts)}; loss "
                     f"{rounded(float(grp['loss_gap'].min()), '.1e', -1)} or more above the forecast minimum)")
    how = _HOW.get(frozenset(kinds), "with singular values off the forecast")
    return f"The other {len(miss)} ended at a different stationary point, {how}: " + "; ".join(parts) + "."


def miss_short(nets_ok: pd.DataFrame) -> str:
    """One sentence on the networks that reached the target but not the forecast: their depths and the
    range of their loss above the forecast minimum (the ends rounded outwards)."""
    miss = nets_ok[~nets_ok["at_forecast"]]
    if not len(miss):
        return "None is at another stationary point."
    gaps = miss["loss_gap"]
    return (f"The other {len(miss)} are stationary points on a wrong branch (depths "
            + ", ".join(str(v) for v in sorted(miss["L"].unique())) + "), with losses "
            + rounded(float(gaps.min()), ".1e", -1) + " to " + rounded(float(gaps.max()), ".1e", +1)
            + " above the forecast minimum.")


def depth_two_text(nets: pd.DataFrame) -> str:
    """How many depth-2 networks (of those that reached the target) are at the forecast."""
    two = nets[nets["L"] == 2]
    if not len(two):
        return "no depth-2 network was trained"
    two = two[two["reached"]]
    if not len(two):
        return "no depth-2 network reached the target"
    if two["at_forecast"].all():
        return f"all {len(two)} depth-2 networks are at the forecast"
    return f"{int(two['at_forecast'].sum())} of {len(two)} depth-2 networks are at the forecast"


def balance_verdict(holds: bool) -> str:
    """Whether the residual bound of ``prop-ch5-balanced`` held for every pair of layers."""
    return ("holds for every pair of layers of every network" if holds
            else "is violated for some pair (a bug: it is an identity)")


__all__ = ["BOUNDS", "balance_verdict", "bounds", "depth_two_text", "miss_short", "miss_text", "set_text",
           "tuple_text", "window_reading"]
