"""nrc_utils.prose.deep_linear_networks: every sentence of chapter 5, every branch."""

import math

import pandas as pd
import pytest

from nrc_utils.prose import deep_linear_networks as prose


def test_tuple_and_set_text():
    assert prose.tuple_text([0.33, 0.26, 0.025]) == "(0.33, 0.26, 0.025)"
    assert prose.set_text([2, 3, 4]) == "{2, 3, 4}"
    assert prose.set_text([0.005, 0.01]) == "{0.005, 0.01}"


SUMMARY = {"res_max": 7.51e-7, "res_ok_max": 7.51e-7, "zero_max": 1.61e-13, "err_at_max": 1.71e-8,
           "off_max": 3.11e-7, "statset_max": 1.71e-8, "gap_min": 1.69e-16, "gap_global_max": 7.71e-16,
           "bal_max": 3.51e-7}


def test_bounds_round_maxima_up_and_minima_down():
    b = prose.bounds(SUMMARY)
    assert set(b) == {key for key, _, _ in prose.BOUNDS}
    assert b["res_max_up"] == "7.6e-07" and b["bal_max_up"] == "3.6e-07"
    assert b["gap_min_dn"] == "1.6e-16"


def test_bounds_of_nothing():
    b = prose.bounds({k: math.nan for k in SUMMARY})
    assert b["zero_max_up"] == "0"  # no forecast zero was found by training
    assert all(v == "nan" for k, v in b.items() if k != "zero_max_up")


@pytest.mark.parametrize("n_window, n_kept, never_lower, start, end", [
    (0, 0, True, "No singular value of this run lies in the window", "depth above 2."),
    (8, 8, True, "Whether a singular value in the window", "the trained rank is the larger."),
    (8, 8, False, "Whether a singular value in the window", "on the positive branch every time."),
    (5, 0, True, "Every singular value in the window ended on the zero branch", "as the forecast says."),
    (5, 2, True, "Whether a singular value in the window", "here 2 of 5 ended on the positive branch."),
])
def test_window_reading_every_branch(n_window, n_kept, never_lower, start, end):
    text = prose.window_reading(n_window, n_kept, never_lower)
    assert text.startswith(start) and text.endswith(end)


def _tables(rows):
    """``rows``: (L, lam, seed, at_forecast, loss_gap, [(i, sigma_A, forecast, trained), ...] off the forecast)."""
    nets = pd.DataFrame([{"L": L, "lam": lam, "seed": sd, "at_forecast": at, "loss_gap": gap, "reached": True}
                         for L, lam, sd, at, gap, _ in rows])
    svs = pd.DataFrame([{"L": L, "lam": lam, "seed": sd, "i": i, "sigma_A": sa, "forecast": fc, "trained": tr,
                         "at_forecast": False} for L, lam, sd, _, _, wrong in rows for i, sa, fc, tr in wrong]
                       + [{"L": 2, "lam": 0.01, "seed": 0, "i": 1, "sigma_A": 0.3, "forecast": 0.29, "trained": 0.29,
                           "at_forecast": True}])
    return nets, svs


def test_miss_text_when_every_network_is_at_the_forecast():
    nets, svs = _tables([(2, 0.01, 0, True, 1e-16, []), (2, 0.01, 1, True, 2e-16, [])])
    assert prose.miss_text(nets, svs, 3e-4) == (
        "All 2 networks that reached the target ended at the forecast global minimiser.")
    assert prose.miss_short(nets) == "None is at another stationary point."


def test_miss_text_kept_values_grouped_over_seeds_with_a_range():
    nets, svs = _tables([(3, 0.02, 0, False, 3.04e-4, [(5, 0.1, 0.0, 0.0428)]),
                         (3, 0.02, 1, False, 3.1e-4, [(5, 0.1, 0.0, 0.0431)]),
                         (2, 0.01, 0, True, 1e-16, [])])
    text = prose.miss_text(nets, svs, 3e-4)
    assert text == ("The other 2 ended at a different stationary point, every time by keeping a singular value "
                    "that the forecast sets to zero: L = 3, λ = 0.02 (2 of 2 seeds: σ5(A) = 0.1 kept at 0.0428 to "
                    "0.0431 (forecast 0); loss 3.0e-04 or more above the forecast minimum).")
    assert prose.miss_short(nets) == ("The other 2 are stationary points on a wrong branch (depths 3), with losses "
                                      "3.0e-04 to 3.1e-04 above the forecast minimum.")


def test_miss_text_zeroed_values():
    nets, svs = _tables([(4, 0.005, 0, False, 1e-3, [(2, 0.26, 0.25, 1e-9)])])
    text = prose.miss_text(nets, svs, 3e-4)
    assert "every time by setting to zero a singular value that the forecast keeps" in text
    assert "σ2(A) = 0.26 set to zero (forecast 0.25)" in text and "1 of 1 seeds" in text


def test_miss_text_mixed_and_moved_values():
    nets, svs = _tables([(4, 0.005, 0, False, 1e-3, [(2, 0.26, 0.25, 1e-9)]),
                         (3, 0.01, 0, False, 2e-3, [(5, 0.1, 0.0, 0.04), (3, 0.2, 0.18, 0.1)])])
    text = prose.miss_text(nets, svs, 3e-4)
    assert text.startswith("The other 2 ended at a different stationary point, with singular values off the forecast: ")
    assert "σ3(A) = 0.2 at 0.1 (forecast 0.18)" in text and "σ5(A) = 0.1 kept at 0.04 (forecast 0)" in text
    assert text.index("L = 3") < text.index("L = 4")  # sorted by depth


def test_depth_two_text_every_branch():
    rows = lambda ats, reached=True: pd.DataFrame([{"L": 2, "reached": reached, "at_forecast": a} for a in ats]
                                                  + [{"L": 3, "reached": True, "at_forecast": False}])
    assert prose.depth_two_text(rows([True, True])) == "all 2 depth-2 networks are at the forecast"
    assert prose.depth_two_text(rows([True, False])) == "1 of 2 depth-2 networks are at the forecast"
    assert prose.depth_two_text(rows([True], reached=False)) == "no depth-2 network reached the target"
    assert prose.depth_two_text(rows([])) == "no depth-2 network was trained"


def test_balance_verdict_both_ways():
    assert prose.balance_verdict(True) == "holds for every pair of layers of every network"
    assert prose.balance_verdict(False).startswith("is violated for some pair")
