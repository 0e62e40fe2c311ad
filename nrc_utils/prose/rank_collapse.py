"""The sentences of chapter 3, ``03_neural_rank_collapse``, built from the run's numbers.

Every function is pure (numbers and small lists in, Markdown text out) and each of its branches
is driven by ``tests/test_prose_rank_collapse.py``. The thresholds are the chapter's:
a Spearman correlation above 0.5 "rises", below -0.5 "falls"; a log-log slope of at least 1.5 is
"like s²", 0.5 to 1.5 "like s"; the residual term "dominates" (a) from a share of 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..report import STOP_PLURAL

#: |Spearman| above this is a monotone trend.
TREND = 0.5


def brace_list(values: Sequence[float]) -> str:
    """``"{0.003, 0.006}"``: a grid as a set, values in ``:g`` format."""
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def arrow_list(values: Sequence[int]) -> str:
    """``"24 → 24 → 4"``: an architecture."""
    return " → ".join(str(n) for n in values)


def bound_verdict(violations: int, n_cases: int) -> str:
    """Whether the certificate of ``thm-neural-rank-collapse`` held in every case (``violations`` of
    ``3 n_cases`` comparisons failed)."""
    if violations == 0:
        return f"holds in all {n_cases} cases for each of (a), (b) and (c)"
    return f"**fails** in {violations} of {3 * n_cases} comparisons (see the table below)"


def b_weakest(n_weaker: int, n_cases: int) -> str:
    """How often form (b) is at least form (c) (``n_weaker`` of ``n_cases``)."""
    if n_weaker == n_cases:
        return "is the weakest in every case"
    return f"is weaker than (c) in {n_weaker} of {n_cases} cases"


def residual_share_verdict(share_max: float) -> str:
    """What the residual term's largest share of (a) means for the check."""
    if share_max < 0.5:
        return "so what is checked is the stationary bound, not the solver's leftovers"
    return "so for the least stationary networks the check is dominated by the solver's residual"


def init_verdict(ok: bool, n: int) -> str:
    """Whether the certificate held at the starting weights (``n`` cases)."""
    return f"holds in all {n} cases" if ok else "**fails** in some case"


def rank_tcv_sentence(n_stationary: int, n_nets: int, n_points: int, rho: float, rank_min: int,
                      rank_max: int) -> str:
    """How the hidden layers' numerical rank moves with ``TCV_1 / (lambda N)`` on the networks that
    reached the target (Spearman ``rho`` over ``n_points`` layers; NaN: too few points or no spread)."""
    if n_stationary == 0:
        return (f"None of the {n_nets} networks of the sweep reached the polishing target, so nothing is said here "
                "about how their ranks move with TCV₁/(λN).")
    if n_stationary < n_nets:
        on_what = (f"On the {n_stationary} of {n_nets} networks of the sweep that reached the polishing target "
                   f"({n_points} hidden layers; the others are left out, their ranks are not those of a stationary "
                   "point)")
    else:
        on_what = (f"On all {n_nets} networks of the sweep, which all reached the polishing target "
                   f"({n_points} hidden layers)")
    if not math.isfinite(rho):
        return (f"{on_what}, there are too few points, or too little spread in the ranks, to say how the rank moves "
                "with TCV₁/(λN).")
    rng = f"the numerical rank of the hidden layers lies between {rank_min} and {rank_max}"
    if rho > TREND:
        trend_txt = (f"and it rises with TCV₁/(λN) (Spearman correlation {rho:.2f}): the rank is ordered by the "
                     "within-class variability of the layer's inputs measured in units of λ, as the theorem suggests, "
                     "although the bound itself is far above the measured distance.")
    elif rho < -TREND:
        trend_txt = (f"and it *falls* as TCV₁/(λN) grows (Spearman correlation {rho:.2f}), against what the theorem "
                     "suggests.")
    else:
        trend_txt = (f"and it shows no clear monotone relation with TCV₁/(λN) (Spearman correlation {rho:.2f}): "
                     "in these runs the bound's TCV₁/λ does not order the ranks.")
    return f"{on_what}, {rng}, {trend_txt}"


def corollary_verdict(n_informative: int, n_cases: int) -> str:
    """In how many of ``n_cases`` the corollary's bound is below the full rank."""
    if n_informative == 0:
        return f"in none of the {n_cases} cases: the bound is too loose for it at these tolerances"
    if n_informative < n_cases:
        return f"in {n_informative} of the {n_cases} cases: the bound is too loose for it at these tolerances elsewhere"
    return f"in {n_informative} of the {n_cases} cases"


def holds_in_every_row(ok: bool) -> str:
    """``sigma_{K+1} <= (a)`` in every row of the corollary table, or not."""
    return "holds in every row" if ok else "**fails** in some rows"


def trend(rho: float, verb: bool = False) -> str:
    """Direction of a measure across the lambda grid from its Spearman correlation with lambda:
    "falls", "rises", else "mixed" (table) or "does not move monotonically" (``verb``: in a sentence)."""
    if rho < -TREND:
        return "falls"
    if rho > TREND:
        return "rises"
    return "does not move monotonically" if verb else "mixed"


def trend_cell(rho: float, factor: float) -> str:
    """``"rises (×53)"``: a cell of the trend table (direction and last / first value)."""
    return f"{trend(rho)} (×{factor:.2g})"


def trend_table(trends: "pd.DataFrame") -> "pd.DataFrame":
    """The trend table: one row per layer input, one column per measure, cells :func:`trend_cell`
    (``trends``: :func:`nrc_utils.experiments.rank_collapse.measure_trends`)."""
    import pandas as pd

    names = list(dict.fromkeys(trends["name"]))
    rows = []
    for (_, label), grp in trends.groupby(["feature", "layer input"], sort=True):
        cells = dict(zip(grp["name"], (trend_cell(r, f) for r, f in zip(grp["spearman"], grp["factor"]))))
        rows.append({"layer input": label, **{n: cells[n] for n in names}})
    return pd.DataFrame(rows, columns=["layer input", *names])


def fit_clause(acc_at_smallest_lambda: float, nc1_first: float, nc1_last: float) -> str:
    """The end of the accuracy sentence: a clause when the network at the smallest lambda fits the
    data exactly and NC1 of its last features is below that at the largest lambda, else ``"."``."""
    if acc_at_smallest_lambda == 1.0 and nc1_first < nc1_last:
        return (": with little weight decay the network fits the overlapping classes exactly, and its last features "
                "collapse onto the class means.")
    return "."


def _rank_list(moves: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(f"{m['layer']}: " + ", ".join(str(int(v)) for v in m["ranks"])
                     + (f", Spearman with λ {m['spearman']:.2f}".replace("-", "−") if math.isfinite(m["spearman"])
                        else "")
                     for m in moves)


def collapse_vs_rank(moves: Sequence[Mapping[str, Any]], lam_used: Sequence[float], n_lambdas: int,
                     nc1_rho: float) -> str:
    """How the hidden layers' ranks move with lambda (``moves``: :func:`nrc_utils.experiments.
    rank_collapse.rank_moves`, over the lambdas ``lam_used`` of ``n_lambdas`` whose network reached
    the target) and whether NC1 of the last hidden features (Spearman ``nc1_rho`` with lambda)
    moves against them."""
    if not moves:
        return "No network of the sweep reached the polishing target, so nothing is said about its ranks."
    falls_all = all(m["never rises"] for m in moves) and any(m["ranks"][0] > m["ranks"][-1] for m in moves)
    tends_all = all(math.isfinite(m["spearman"]) and m["spearman"] < -TREND for m in moves)
    over = ("over the λ's whose network reached the target, " + ", ".join(f"{v:g}" for v in lam_used)
            if len(lam_used) < n_lambdas else "in λ order")
    if falls_all:
        verdict = "never rises with λ in any hidden layer and falls overall"
    elif tends_all:
        verdict = ("tends to fall with λ in every hidden layer (Spearman below −0.5) but not monotonically in "
                   + ", ".join(m["layer"] for m in moves if not m["never rises"]))
    else:
        odd = [m["layer"] for m in moves if not (math.isfinite(m["spearman"]) and m["spearman"] < -TREND)]
        verdict = ("does not fall with λ in every hidden layer: " + ", ".join(odd)
                   + (" does" if len(odd) == 1 else " do") + " not follow")
    sentence = f"The numerical rank {verdict} (ranks {over} — {_rank_list(moves)})."
    if not (falls_all or tends_all):
        return sentence
    if nc1_rho > TREND:
        return (sentence + " So in these runs the scale-free collapse of the last hidden features moves *against* "
                "the rank: NC1 rises with λ while the ranks fall. The rank collapse across λ is not a consequence of "
                "tighter clustering relative to the class separation; what falls is the bound's TCV / λ, driven by "
                "the 1/λ even where the raw TCV itself does not fall.")
    return (sentence + " NC1 of the last hidden features does not rise with λ, so the scale-free collapse and the "
            "rank do not contradict each other in these runs.")


def centroid_cert_verdict(ok: bool) -> str:
    """Whether ``thm-centroid-loss``'s certificate held for every centroid-loss layer."""
    return "holds for every layer and every noise level" if ok else "**fails** for some layer"


def holds_in_every_case(ok: bool) -> str:
    """An inequality checked over every case."""
    return "holds in every case" if ok else "**fails** in some case"


def tail_where(fitted: Sequence[str], unresolved: Sequence[str]) -> str:
    """The layers whose distance from rank K is resolved above the solver floor (``fitted``), and
    those closer to rank K than the solver resolves (``unresolved``)."""
    if not fitted:
        return "no layer"
    if not unresolved:
        return ", ".join(fitted)
    return (", ".join(fitted) + "; " + ", ".join(unresolved) + (" is" if len(unresolved) == 1 else " are")
            + " closer to rank K than the solver resolves")


def tail_slopes(slopes: Sequence[float]) -> str:
    """The fitted log-log slopes of the full minimiser's distance from rank K (NaNs left out)."""
    slopes = [v for v in slopes if math.isfinite(v)]
    if not slopes:
        return "at a rate this grid does not resolve"
    if len(slopes) == 1:
        return f"with slope {slopes[0]:.2f}"
    return f"with slopes between {min(slopes):.2f} and {max(slopes):.2f}"


def tail_vs_bounds(tail_slope_min: float, bound_slope_max: float) -> str:
    """Whether the distance from rank K falls faster (larger slope) than every bound."""
    return "faster than all three bounds" if tail_slope_min > bound_slope_max else "not uniformly faster than the bounds"


def s2_verdict(slope_loss_gap: float, slope_function_distance: float) -> str:
    """Whether both the loss gap and the function distance have slopes within 0.5 of 2."""
    near_two = all(1.5 <= v <= 2.5 for v in (slope_loss_gap, slope_function_distance))
    return "close to" if near_two else "to be compared with"


def weight_kind(slope: float) -> str:
    """A seed's weights approach each other like s² (slope >= 1.5: ``"s2"``), like s (0.5 to 1.5:
    ``"s1"``) or hardly (``"none"``: below 0.5, or no slope)."""
    return "s2" if slope >= 1.5 else "s1" if slope >= 0.5 else "none"


CAVEAT = ("the weights of a network are not identified by its function (hidden units can be permuted and, "
          "with tanh, flipped in sign, and the weight-decayed loss may be nearly flat in other directions), "
          "so the two solvers, started from the same weights, can end at weights that differ more than the "
          "functions do.")


def weights_paragraph(wd_slopes: Sequence[float], wd_small: Sequence[float],
                      function_slope: float) -> tuple[str, str]:
    """``(paragraph, bullet)``: how the two minimisers' weights approach each other, from the log-log
    slopes ``wd_slopes`` of the relative weight distance (one per seed), its values ``wd_small`` at
    the smallest ``s`` (one per seed) and the function distance's slope."""
    n = len(wd_slopes)
    kinds = [weight_kind(v) for v in wd_slopes]
    seeds_word = "the seed" if n == 1 else f"all {n} seeds"
    wd_text = (f"relative distance at the smallest *s* is {min(wd_small):.2g}"
               + (f" to {max(wd_small):.2g} over the seeds" if n > 1 else "")
               + " (log-log slope " + (f"{wd_slopes[0]:.2f}" if n == 1 else
                                        f"{min(wd_slopes):.2f} to {max(wd_slopes):.2f} over the seeds") + ")")
    slope_word = f"slope {wd_slopes[0]:.2f}" if n == 1 else f"slopes {min(wd_slopes):.2f} to {max(wd_slopes):.2f}"
    if all(k == "s2" for k in kinds):
        return (f"The weights follow as well for {seeds_word}: their {wd_text}. The minimisers themselves "
                "approach each other like s², not only their functions.",
                f"the weights of the two minimisers approach each other like s² too ({slope_word})")
    if all(k == "s1" for k in kinds):
        faster = function_slope >= max(wd_slopes) + 0.5
        return (f"The weights approach each other too, but only like s, not like s²: their {wd_text}. "
                + (f"The functions converge faster (slope {function_slope:.2f}), which is why we measure those; "
                   + CAVEAT if faster else CAVEAT[0].upper() + CAVEAT[1:]),
                f"the weights of the two minimisers approach each other only like s, not like s² ({slope_word})")
    if all(k == "none" for k in kinds):
        return (f"The weights do not follow: their {wd_text}. The claim that the minimisers approach each "
                "other is borne out here for the functions, which is why we measure those; " + CAVEAT,
                f"the weights of the two minimisers hardly approach each other over this grid ({slope_word})")
    counts = ", ".join(f"{txt} for {kinds.count(k)}" for k, txt in
                       (("s2", "like s²"), ("s1", "only like s"), ("none", "hardly at all")) if kinds.count(k))
    return (f"Seed by seed, the weights approach each other {counts} of the {n} seeds: their {wd_text}. "
            "The functions approach each other for every seed, which is why we measure those; " + CAVEAT,
            f"the weights approach each other {counts} of the {n} seeds ({slope_word})")


def worst_where(experiment: str, lam: float, s: float | None, stopped_by: str, target: float) -> str:
    """Which network has the largest residual of the chapter, and what stopped it (the predicates of
    :data:`nrc_utils.report.STOP_PLURAL`, in the singular); ``s`` is left out for the lambda sweep."""
    where = f"the {experiment} network at λ = {lam:g}" + (f", s = {s:g}" if s is not None else "")
    if stopped_by == "target":
        return f"{where}, which reached its target {target:.0e}"
    why = STOP_PLURAL.get(stopped_by, f"stopped ({stopped_by})").replace("were ", "was ")
    return f"{where}, which {why} (its target was {target:.0e})"


__all__ = ["CAVEAT", "TREND", "arrow_list", "b_weakest", "bound_verdict", "brace_list", "centroid_cert_verdict",
           "collapse_vs_rank", "corollary_verdict", "fit_clause", "holds_in_every_case", "holds_in_every_row",
           "init_verdict", "rank_tcv_sentence", "residual_share_verdict", "s2_verdict", "tail_slopes",
           "tail_vs_bounds", "tail_where", "trend", "trend_cell", "trend_table", "weight_kind", "weights_paragraph", "worst_where"]
