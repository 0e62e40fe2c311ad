"""Every branch of nrc_utils.prose.rank_collapse (chapter 3's sentences): both sides of each
threshold, the empty case and the all-missed case."""

import pandas as pd
import pytest

from nrc_utils.prose import rank_collapse as prose
from nrc_utils.report import STOP_PLURAL, markdown

NAN = float("nan")


def test_lists():
    assert prose.brace_list([0.003, 0.05]) == "{0.003, 0.05}"
    assert prose.brace_list([]) == "{}"
    assert prose.arrow_list([24, 24, 4]) == "24 → 24 → 4"


def test_bound_verdict_both_sides():
    assert prose.bound_verdict(0, 40) == "holds in all 40 cases for each of (a), (b) and (c)"
    assert prose.bound_verdict(2, 40) == "**fails** in 2 of 120 comparisons (see the table below)"


def test_b_weakest_both_sides():
    assert prose.b_weakest(40, 40) == "is the weakest in every case"
    assert prose.b_weakest(39, 40) == "is weaker than (c) in 39 of 40 cases"


def test_residual_share_threshold_at_one_half():
    assert prose.residual_share_verdict(0.49).startswith("so what is checked is the stationary bound")
    assert prose.residual_share_verdict(0.5).startswith("so for the least stationary networks")


def test_init_verdict():
    assert prose.init_verdict(True, 20) == "holds in all 20 cases"
    assert prose.init_verdict(False, 20) == "**fails** in some case"


@pytest.mark.parametrize("rho,words", [(0.96, "rises with TCV₁/(λN) (Spearman correlation 0.96)"),
                                       (0.5, "no clear monotone relation"), (-0.5, "no clear monotone relation"),
                                       (-0.7, "*falls* as TCV₁/(λN) grows (Spearman correlation -0.70)")])
def test_rank_tcv_sentence_each_trend(rho, words):
    text = prose.rank_tcv_sentence(5, 5, 15, rho, 3, 14)
    assert text.startswith("On all 5 networks of the sweep, which all reached the polishing target (15 hidden layers)")
    assert "lies between 3 and 14" in text and words in text


def test_rank_tcv_sentence_some_missed_none_reached_and_no_spread():
    some = prose.rank_tcv_sentence(3, 5, 9, 0.9, 3, 10)
    assert some.startswith("On the 3 of 5 networks of the sweep that reached the polishing target (9 hidden layers; "
                           "the others are left out")
    assert prose.rank_tcv_sentence(0, 5, 0, NAN, -1, -1).startswith("None of the 5 networks of the sweep reached")
    flat = prose.rank_tcv_sentence(5, 5, 2, NAN, 4, 4)
    assert "too few points, or too little spread" in flat


def test_corollary_verdict_none_some_all():
    assert prose.corollary_verdict(0, 15) == "in none of the 15 cases: the bound is too loose for it at these tolerances"
    assert prose.corollary_verdict(3, 15).endswith("tolerances elsewhere")
    assert prose.corollary_verdict(15, 15) == "in 15 of the 15 cases"


def test_yes_no_verdicts():
    assert prose.holds_in_every_row(True) == "holds in every row"
    assert prose.holds_in_every_row(False) == "**fails** in some rows"
    assert prose.centroid_cert_verdict(True) == "holds for every layer and every noise level"
    assert prose.centroid_cert_verdict(False) == "**fails** for some layer"
    assert prose.holds_in_every_case(True) == "holds in every case"
    assert prose.holds_in_every_case(False) == "**fails** in some case"


@pytest.mark.parametrize("rho,table,verb", [(-0.51, "falls", "falls"), (0.51, "rises", "rises"),
                                            (0.5, "mixed", "does not move monotonically"),
                                            (-0.5, "mixed", "does not move monotonically"),
                                            (NAN, "mixed", "does not move monotonically")])
def test_trend_thresholds(rho, table, verb):
    assert prose.trend(rho) == table
    assert prose.trend(rho, verb=True) == verb


def test_trend_table():
    trends = pd.DataFrame([
        {"feature": f, "layer input": f"H{f}", "measure": m, "name": name, "spearman": rho, "factor": fac}
        for f in (1, 2) for m, name, rho, fac in (("nc1", "NC1", 0.9, 53.0), ("tcv2", "raw TCV_2", -0.9, 0.33))])
    tab = prose.trend_table(trends)
    assert list(tab.columns) == ["layer input", "NC1", "raw TCV_2"]
    assert list(tab["NC1"]) == ["rises (×53)", "rises (×53)"] and tab["raw TCV_2"][0] == "falls (×0.33)"


def test_fit_clause_both_branches_and_the_dot_is_safe_markdown():
    assert prose.fit_clause(1.0, 0.1, 7.9).startswith(": with little weight decay the network fits")
    assert prose.fit_clause(0.995, 0.1, 7.9) == "."
    assert prose.fit_clause(1.0, 7.9, 0.1) == "."
    # the fallback that once broke a fresh clone: glued as text, never read as a path
    assert markdown(prose.fit_clause(0.5, 1, 0))._repr_markdown_() == "."


def move(layer, ranks, spearman, lambdas=None):
    import numpy as np

    return {"layer": layer, "ranks": ranks, "lambdas": lambdas or list(range(len(ranks))),
            "never rises": bool(np.all(np.diff(ranks) <= 0)), "spearman": spearman}


def test_collapse_vs_rank_falls_with_nc1_rising_and_not():
    moves = [move("W₁", [14, 10, 6, 6, 4], -0.97), move("W₂", [10, 5, 4, 4, 3], -0.97)]
    against = prose.collapse_vs_rank(moves, [1, 2, 3, 4, 5], 5, 0.9)
    assert against.startswith("The numerical rank never rises with λ in any hidden layer and falls overall "
                              "(ranks in λ order — W₁: 14, 10, 6, 6, 4, Spearman with λ −0.97; W₂:")
    assert "moves *against* the rank" in against
    along = prose.collapse_vs_rank(moves, [1, 2, 3, 4, 5], 5, 0.2)
    assert along.endswith("do not contradict each other in these runs.")


def test_collapse_vs_rank_tends_to_fall_and_subset_of_lambdas():
    moves = [move("W₁", [10, 6, 7, 4], -0.8, [1, 2, 3, 4]), move("W₂", [5, 4, 4, 3], -0.9, [1, 2, 3, 4])]
    text = prose.collapse_vs_rank(moves, [0.003, 0.006, 0.012, 0.025], 5, 0.9)
    assert "tends to fall with λ in every hidden layer (Spearman below −0.5) but not monotonically in W₁" in text
    assert "over the λ's whose network reached the target, 0.003, 0.006, 0.012, 0.025" in text


def test_collapse_vs_rank_does_not_fall_one_and_several_layers_and_empty():
    one = prose.collapse_vs_rank([move("W₁", [4, 5, 6], 1.0), move("W₂", [6, 5, 4], -1.0)], [1, 2, 3], 3, 0.9)
    assert "does not fall with λ in every hidden layer: W₁ does not follow" in one
    assert "against" not in one and one.endswith(").")
    both = prose.collapse_vs_rank([move("W₁", [4, 4, 4], NAN), move("W₂", [3, 4, 5], 1.0)], [1, 2, 3], 3, 0.9)
    assert "W₁, W₂ do not follow" in both and "Spearman with λ" in both
    assert prose.collapse_vs_rank([], [], 5, 0.9) == ("No network of the sweep reached the polishing target, so "
                                                      "nothing is said about its ranks.")


def test_tail_where():
    assert prose.tail_where(["W₁", "W₂", "W₃"], []) == "W₁, W₂, W₃"
    assert prose.tail_where(["W₁"], ["W₂"]) == "W₁; W₂ is closer to rank K than the solver resolves"
    assert prose.tail_where(["W₁"], ["W₂", "W₃"]).endswith("W₂, W₃ are closer to rank K than the solver resolves")
    assert prose.tail_where([], ["W₁"]) == "no layer"


def test_tail_slopes_and_against_bounds():
    assert prose.tail_slopes([2.47, 3.23, NAN]) == "with slopes between 2.47 and 3.23"
    assert prose.tail_slopes([NAN, 2.5]) == "with slope 2.50"
    assert prose.tail_slopes([NAN]) == "at a rate this grid does not resolve"
    assert prose.tail_vs_bounds(2.47, 1.77) == "faster than all three bounds"
    assert prose.tail_vs_bounds(1.0, 1.77) == "not uniformly faster than the bounds"
    assert prose.tail_vs_bounds(NAN, 1.77) == "not uniformly faster than the bounds"


@pytest.mark.parametrize("a,b,verdict", [(1.92, 2.12, "close to"), (1.5, 2.5, "close to"),
                                         (1.49, 2.0, "to be compared with"), (2.0, 2.51, "to be compared with")])
def test_s2_verdict(a, b, verdict):
    assert prose.s2_verdict(a, b) == verdict


def test_weight_kind_thresholds():
    assert [prose.weight_kind(v) for v in (1.5, 1.49, 0.5, 0.49, NAN)] == ["s2", "s1", "s1", "none", "none"]


def test_weights_paragraph_like_s_squared_one_and_several_seeds():
    par, bullet = prose.weights_paragraph([1.8], [0.01], 2.1)
    assert par.startswith("The weights follow as well for the seed: their relative distance at the smallest *s* is "
                          "0.01 (log-log slope 1.80)")
    assert bullet == "the weights of the two minimisers approach each other like s² too (slope 1.80)"
    par, bullet = prose.weights_paragraph([1.8, 2.0], [0.01, 0.02], 2.1)
    assert "for all 2 seeds" in par and "0.01 to 0.02 over the seeds" in par and "1.80 to 2.00 over the seeds" in par
    assert bullet.endswith("(slopes 1.80 to 2.00)")


def test_weights_paragraph_like_s_with_and_without_faster_functions():
    par, bullet = prose.weights_paragraph([0.79], [0.21], 2.12)
    assert par.startswith("The weights approach each other too, but only like s, not like s²: their relative distance "
                          "at the smallest *s* is 0.21 (log-log slope 0.79). The functions converge faster (slope 2.12)")
    assert bullet == "the weights of the two minimisers approach each other only like s, not like s² (slope 0.79)"
    par, _ = prose.weights_paragraph([0.79], [0.21], 1.0)
    assert "converge faster" not in par and par.endswith(prose.CAVEAT[1:]) and ". The weights of a network" in par


def test_weights_paragraph_hardly_and_mixed():
    par, bullet = prose.weights_paragraph([0.2], [0.9], 2.0)
    assert par.startswith("The weights do not follow") and "hardly approach each other over this grid" in bullet
    par, bullet = prose.weights_paragraph([1.8, 0.8, 0.1], [0.1, 0.2, 0.3], 2.0)
    assert "like s² for 1, only like s for 1, hardly at all for 1 of the 3 seeds" in par
    assert bullet.startswith("the weights approach each other like s² for 1, only like s for 1, hardly at all for 1")


def test_worst_where_every_stop_reason():
    assert prose.worst_where("λ sweep", 0.012, None, "target", 1e-6) == \
        "the λ sweep network at λ = 0.012, which reached its target 1e-06"
    text = prose.worst_where("full loss", 0.01, 0.05, "no progress", 1e-7)
    assert text == ("the full loss network at λ = 0.01, s = 0.05, which " + STOP_PLURAL["no progress"]
                    + " (its target was 1e-07)")
    for why in ("iteration cap", "time cap"):
        assert STOP_PLURAL[why] in prose.worst_where("centroid loss", 0.01, 0.1, why, 1e-7)
    assert "which was not polished" in prose.worst_where("λ sweep", 0.01, None, "not polished", 1e-6)
    assert "which stopped (odd)" in prose.worst_where("λ sweep", 0.01, None, "odd", 1e-6)

