"""nrc_utils.prose.gaussian_mixtures: every branch of chapter 4's sentences, on both sides of each threshold."""

import math

import numpy as np
import pandas as pd
import pytest

from nrc_utils import train
from nrc_utils.experiments import gaussian_mixtures as gm
from nrc_utils.prose import gaussian_mixtures as pr

SPEC = gm.Spec(seed=0, n_seeds=1, K=3, d=16, n_per_class=30, mean_scale=1.0, widths=[16, 16, 16], activation="tanh",
               loss="mse", lr=0.5, gd_steps=300, polish_tol=1e-6, polish_max_iter=8000, polish_max_seconds=120.0,
               newton_tol=1e-12, train_device="cpu", s_grid=[0.05, 0.1, 0.2, 0.4], lambdas=[0.003, 0.006, 0.012, 0.024],
               rank_rtol=1e-3, floor_factor=10.0, min_fit_points=3, tcv_d_grid=[2, 8], tcv_s_grid=[0.3],
               tcv_draws=4)


def test_names_lists_and_architecture():
    assert pr.layer_name(2) == "W₂" and pr.layer_name(12) == "W₁₂"
    assert pr.number_list([0.05, 0.1, 1e-4]) == "0.05, 0.1, 0.0001"
    assert pr.architecture(16, [16, 8], 3) == "16 → 16 → 8 → 3"


def test_setup_values_quote_the_parameters():
    v = pr.setup_values(SPEC)
    assert v["arch"] == "16 → 16 → 16 → 16 → 3" and v["s_grid"] == "0.05, 0.1, 0.2, 0.4"
    assert (v["N"], v["L"], v["expo_s"], v["expo_lam"], v["expo_lam_abs"]) == (90, 4, 1.0, -2.5, 2.5)
    assert v["lambdas"] == "0.003, 0.006, 0.012, 0.024" and v["tol"] == 1e-6 and v["newton_tol"] == 1e-12


def _result(stop, residual, acc=1.0, tol=1e-6):
    return train.TrainResult(model=None, config=train.TrainConfig(polish_tol=tol), residuals=[residual / 2, residual],
                             final={"acc": acc, "loss": 0.1}, polish_stop=stop)


def test_training_values_all_reached_some_missed_and_none():
    v = pr.training_values([_result("target", 9.31e-7), _result("target", 2.57e-7, acc=0.98)])
    assert v["stop_summary"].startswith("All 2 networks of the grid reached the target 1e-06")
    assert (v["n_networks"], v["n_reached"], v["res_max_up"], v["res_min_dn"], v["acc_min"]) == \
        (2, 2, "9.4e-07", "2.5e-07", 0.98)
    assert v["hessian"] == "The Hessian's smallest eigenvalue was not computed for the networks of the grid (no Newton stage)."
    v = pr.training_values([_result("target", 5e-7), _result("iteration cap", 3.21e-6)])
    assert v["n_reached"] == 1 and "1 stopped at the iteration cap (residuals up to 3.3e-06)" in v["stop_summary"]
    v = pr.training_values([_result("time cap", 3e-5), _result("no progress", 2e-6)])
    assert v["n_reached"] == 0 and v["stop_summary"].startswith("0 of 2 networks of the grid reached")
    v = pr.training_values([])
    assert (v["n_networks"], v["n_reached"], v["res_max_up"]) == (0, 0, "n/a") and math.isnan(v["acc_min"])
    assert v["hessian"] == ""


def test_propagation_and_bounds_verdicts():
    assert pr.propagation_verdict(True) == "holds for every hidden layer of every network"
    assert "a bug" in pr.propagation_verdict(False)
    assert pr.bounds_verdict(True, 16, 16) == "Both bounds hold for every layer of every network"
    assert "a bug" in pr.bounds_verdict(False, 16, 16)
    some = pr.bounds_verdict(True, 12, 16)
    assert some.startswith("Both bounds hold for every layer of the 12 networks that ended below their starting")
    assert some.endswith("the chain bound also for the other networks")  # the chapter goes on "of the grid"
    none = pr.bounds_verdict(True, 0, 16)
    assert none.startswith("No network ended below") and none.endswith("every layer of every network")


CHECKS = {"n_networks": 16, "n_descended": 16, "norm_ratio_max": 0.1134, "prop_holds": True, "bounds_hold": True,
          "prop2_ratio_max": 0.9049, "prop2_ratio_min": 0.2371, "prop1_ratio_max": 0.4512,
          "chain_ratio_med": 3634.8, "prior_ratio_min": 2.07e5}


def test_bound_values_round_in_the_direction_of_their_sentence():
    v = pr.bound_values(CHECKS)
    assert (v["norm_ratio_max_up"], v["prop2_ratio_max_up"], v["prop2_ratio_min_dn"], v["prop1_ratio_max_up"],
            v["prior_ratio_min_dn"]) == ("0.12", "0.91", "0.23", "0.46", "2e+05")
    assert v["chain_ratio_med"] == 3634.8 and v["n_descended"] == 16
    assert v["prop_verdict"] == pr.propagation_verdict(True) and v["bounds_verdict"] == pr.bounds_verdict(True, 16, 16)
    # nothing descended: the ratios that need the descent are "n/a", not "nan"
    none = pr.bound_values({**CHECKS, "n_descended": 0, "norm_ratio_max": math.nan, "prior_ratio_min": math.nan})
    assert (none["norm_ratio_max_up"], none["prior_ratio_min_dn"]) == ("n/a", "n/a")


def test_corner_ranks_of_the_shown_seed_or_not_available():
    corner = pd.DataFrame({"seed": [0, 0, 0, 1], "layer": [2, 1, 3, 1], "rank": [5, 8, 5, 9]})
    assert pr.corner_ranks(corner, 0) == "8, 5, 5"
    assert pr.corner_ranks(corner, 2) == pr.NOT_AVAILABLE
    assert pr.corner_ranks(corner.iloc[:0], 0) == pr.NOT_AVAILABLE


def _pairs(rows):
    return pd.DataFrame(rows, columns=["layer", "seed", "tail_lo", "rank_lo", "tail_hi", "rank_hi"])


def test_phase_verdict_every_branch():
    assert pr.phase_verdict(_pairs([])).startswith("could not be judged")
    good = _pairs([(1, 0, 1e-4, 3, 0.1, 8), (2, 0, 1e-4, 3, 0.1, 3)])  # equal ranks are "no larger"
    assert pr.phase_verdict(good).startswith("goes the way the paper's claim says")
    # an equal tail is not smaller; a larger rank is worse; the layers are named once each, in order
    bad = _pairs([(3, 0, 0.1, 3, 0.1, 8), (1, 0, 1e-4, 9, 0.1, 8), (1, 1, 1e-4, 9, 0.1, 8), (2, 0, 1e-4, 3, 0.1, 8)])
    text = pr.phase_verdict(bad)
    assert text.startswith("does not go the claimed way everywhere: in W₁, W₃ the low-noise")


def _phase(lo_tails, hi_tails, pairs):
    lo = pd.DataFrame({"seed": 0, "layer": range(1, len(lo_tails) + 1), "rank": 3, "tail": lo_tails})
    hi = pd.DataFrame({"seed": 0, "layer": range(1, len(hi_tails) + 1), "rank": 8, "tail": hi_tails})
    counts = {"n_cells_rankK": 20, "n_cells": 48, "steps_s_up": 31, "steps_s": 36, "steps_lam_down": 28,
              "steps_lam": 36}
    return gm.Phase(pd.DataFrame(), lo, hi, pairs, counts)


def test_phase_values_with_both_corners_and_with_missed_corners():
    ph = _phase([3.41e-4, 1e-5], [0.1342, 0.2], _pairs([(1, 0, 3.41e-4, 3, 0.1342, 8)]))
    v = pr.phase_values(ph, SPEC)
    assert (v["tail_corner_lo_max_up"], v["tail_corner_hi_min_dn"]) == ("3.5e-04", "1.3e-01")
    assert (v["rank_corner_lo"], v["rank_corner_hi"]) == ("3, 3", "8, 8")
    assert (v["s_min"], v["s_max"], v["lam_min"], v["lam_max"]) == (0.05, 0.4, 0.003, 0.024)
    assert v["n_cells"] == 48 and v["phase_verdict"].startswith("goes the way")
    missed = pr.phase_values(_phase([], [], _pairs([])), SPEC)
    assert (missed["tail_corner_lo_max_up"], missed["tail_corner_hi_min_dn"]) == ("n/a", "n/a")
    assert missed["rank_corner_lo"] == missed["rank_corner_hi"] == pr.NOT_AVAILABLE
    assert missed["phase_verdict"].startswith("could not be judged")


def test_slope_range_leaves_out_nan_and_is_nan_when_empty():
    assert pr.slope_range(pd.Series([3.0, np.nan, 1.0, 2.0])) == (2.0, 1.0, 3.0)
    assert all(math.isnan(x) for x in pr.slope_range(pd.Series([], dtype=float)))
    assert all(math.isnan(x) for x in pr.slope_range(pd.Series([np.nan])))


@pytest.mark.parametrize("slopes, start", [
    ([], "could not be fitted"),
    ([np.nan], "could not be fitted"),
    ([1.0, 3.0], "is steeper than the bound's exponent 1 in every fit"),   # the exponent itself counts as steeper
    ([0.99, 0.5], "is flatter than the bound's exponent 1 in every fit"),
    ([0.5, 1.0, 2.0, np.nan], "is steeper than the bound's exponent 1 in 2 of 3 fits and flatter in the others"),
])
def test_slope_in_s_verdict(slopes, start):
    assert pr.slope_s_verdict(pd.Series(slopes, dtype=float), 1.0).startswith(start)


@pytest.mark.parametrize("slopes, start", [
    ([], "could not be fitted"),
    ([-1.0, 0.0], "is not negative in 1 of 2 fits"),                        # zero is not negative
    ([-1.0, 0.3, 0.2], "is not negative in 2 of 3 fits"),
    ([-2.5, -0.5], "is negative but shallower than the bound's -2.5 in every fit"),
    ([-2.6, -3.0], "is steeper than the bound's -2.5 in every fit"),
    ([-2.6, -1.0, -0.5, np.nan], "is negative in every fit, steeper than the bound's -2.5 in 1 of 3 fits"),
])
def test_slope_in_lambda_verdict(slopes, start):
    assert pr.slope_lambda_verdict(pd.Series(slopes, dtype=float), -2.5).startswith(start)


@pytest.mark.parametrize("median, text", [
    (math.nan, "no slope in s was fitted here to compare with it"),
    (3.03, "the fitted slopes (median 3.03) are steeper even than that"),
    (2.5, "the fitted slopes (median 2.50) are close to that"),
    (1.5, "the fitted slopes (median 1.50) are close to that"),
    (1.49, "the fitted slopes (median 1.49) are flatter than that"),
])
def test_s2_compare(median, text):
    assert pr.s2_compare(median).startswith(text)


def _fits(fixed, tails):
    return pd.DataFrame({fixed: 0.01, "layer": "W₁", "seed": 0, "points": 4, "tail": tails,
                         "chain bound": [1.7] * len(tails), "a priori bound": [1.05] * len(tails)},
                        columns=[fixed, *gm.SLOPE_COLUMNS])


def test_slope_values_with_fits_and_with_none():
    v = pr.slope_values(gm.Slopes(_fits("lambda", [2.3, 3.0, 3.8]), _fits("s", [-1.6, -0.5])),
                        {"s": 1.0, "lambda": -2.5})
    assert (v["slope_s_tail_med"], v["slope_s_tail_min"], v["slope_s_tail_max"]) == (3.0, 2.3, 3.8)
    assert (v["slope_s_chain_med"], v["slope_lam_prior_max"], v["n_fits_s"], v["n_fits_lam"]) == (1.7, 1.05, 3, 2)
    assert v["slope_s_verdict"].startswith("is steeper") and v["s2_compare"].startswith("the fitted slopes (median 3.00)")
    assert v["slope_lam_verdict"].startswith("is negative but shallower")
    empty = pr.slope_values(gm.Slopes(_fits("lambda", []), _fits("s", [])), {"s": 1.0, "lambda": -2.5})
    assert (empty["n_fits_s"], empty["n_fits_lam"]) == (0, 0) and math.isnan(empty["slope_lam_chain_min"])
    assert empty["slope_s_verdict"].startswith("could not be fitted")
    assert empty["slope_lam_verdict"].startswith("could not be fitted")
    assert empty["s2_compare"] == "no slope in s was fitted here to compare with it"


def test_the_fallback_texts_are_sentences_not_punctuation():
    """The texts of the empty and all-missed cases are words (report.glue makes them Markdown)."""
    texts = [pr.phase_verdict(_pairs([])), pr.s2_compare(math.nan), pr.bounds_verdict(True, 0, 2),
             pr.corner_ranks(pd.DataFrame({"seed": [], "layer": [], "rank": []}), 0),
             pr.slope_s_verdict(pd.Series([], dtype=float), 1.0), pr.training_values([])["stop_summary"]]
    assert all(isinstance(t, str) and len(t.split()) >= 3 for t in texts)
