"""Tests for nrc_utils.experiments.rank_collapse (chapter 3): the parameter rules, table-driven,
and the experiment drivers on tiny networks (results cached in a temporary folder)."""

import math
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import pytest

from ci import project
from nrc_utils import params
from nrc_utils.experiments import rank_collapse as rc

ROOT = Path(__file__).resolve().parents[1]
STEM = "03_neural_rank_collapse"


def chapter_defaults() -> dict:
    values = project.declared_parameters(jupytext.read(ROOT / "book" / f"{STEM}.md"), STEM)
    values.pop("profile", None)
    return values


@pytest.fixture(scope="module")
def ci_values():
    return chapter_defaults()


def test_one_rule_per_parameter_of_the_chapter(ci_values):
    assert rc.PARAMETERS.names == list(ci_values)


BAD = [
    ("lambdas", []), ("lambdas", [0.01, -0.1]), ("lambdas", [0.0]), ("lambdas", [0.01, 0.01]),
    ("lambdas", [float("nan")]), ("centroid_s", []), ("centroid_s", [0.1]), ("centroid_s", [0.1, 0.0]),
    ("widths", []), ("widths", [24, 0]), ("n_seeds", 0), ("K", 0), ("K", 24), ("K", 30), ("d", 0),
    ("n_per_class", 0), ("mean_scale", 0.0), ("sweep_s", -0.1), ("sweep_s", float("inf")),
    ("lr", 0.0), ("lr", float("nan")), ("gd_steps", -1), ("polish_max_seconds", -1.0),
    ("polish_max_seconds", float("inf")), ("sweep_polish_tol", 0.0), ("sweep_polish_max_iter", 0),
    ("rank_rtol", 0.0), ("rank_rtol", 1.0), ("centroid_lambda", -0.01), ("centroid_polish_tol", float("nan")),
    ("centroid_polish_max_iter", 0), ("centroid_eps", 0.0), ("loss", "hinge"), ("activation", "sigmoid"),
    ("train_device", "tpu"), ("seed", -1), ("kmeans_seed", 1.5), ("seed", True),
]


@pytest.mark.parametrize("name,value", BAD)
def test_bad_value_is_refused_in_one_line_naming_the_parameter(ci_values, name, value):
    with pytest.raises(params.ParameterError) as info:
        rc.PARAMETERS.check({**ci_values, name: value})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{STEM}.{name} = ")


def test_missing_parameter_is_refused(ci_values):
    values = dict(ci_values)
    del values["lambdas"]
    with pytest.raises(params.ParameterError, match=r"lambdas = None: missing"):
        rc.PARAMETERS.check(values)


def test_globals_of_a_notebook_are_accepted(ci_values):
    assert rc.PARAMETERS.check({**ci_values, "profile": "ci", "np": np}) == ci_values


# ---- the drivers, on tiny networks ----

TINY = {**chapter_defaults(), "K": 2, "d": 5, "n_per_class": 6, "widths": [5, 5], "gd_steps": 20,
        "lambdas": [0.02, 0.05], "sweep_polish_tol": 1e-5, "sweep_polish_max_iter": 300,
        "polish_max_seconds": 20.0, "centroid_s": [0.1, 0.05], "centroid_polish_tol": 1e-5,
        "centroid_polish_max_iter": 300}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NRC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("NRC_PROGRESS", "0")
    p = rc.PARAMETERS.check(TINY)
    device = rc.setup_device(p)
    sweep = rc.lambda_sweep(p, device)
    m = rc.layer_measurements(p, sweep)
    cg = rc.centroid_gap(p, device)
    yield p, sweep, m, cg
    mp.undo()


@pytest.mark.slow  # shares an 8 s fixture (tiny networks trained, on a loaded 2-core machine)
def test_sweep_has_one_network_per_lambda_and_seed(tiny):
    p, sweep, m, _ = tiny
    assert sorted(sweep.networks) == [(lam, 0) for lam in p["lambdas"]]
    assert len(sweep.residuals) == 2 and set(sweep.reached) == set(sweep.networks)


@pytest.mark.slow
def test_layer_measurements_shapes_and_the_certificate(tiny):
    p, sweep, m, _ = tiny
    L = rc.depth(p)
    assert len(m.cert) == 2 * L * 2  # partitions x layers x lambdas
    assert len(m.coll) == 2 * L * 2
    assert len(m.spec) == 2 * (5 + 5 + 2)  # singular values of W_1 (5x5), W_2 (5x5), W_3 (2x5)
    # thm-neural-rank-collapse holds for any weights, any partition
    for b in rc.BOUNDS:
        assert (m.cert["tail"] <= m.cert[b] * (1 + 1e-12)).all()
    assert (m.cert.loc[m.cert["partition"] == "classes", "ari"] == 1.0).all()
    assert m.cert["A_out"].between(0, 1 + 1e-12).all() and m.cert["B_out"].between(0, 1 + 1e-12).all()
    # the output layer (K x width) has rank <= K: tail 0
    assert (m.cert.loc[m.cert["layer"] == L, "tail"] == 0).all()


@pytest.mark.slow
def test_numbers_tables_and_slopes(tiny):
    p, sweep, m, cg = tiny
    L = rc.depth(p)
    numbers = rc.sweep_numbers(p, sweep)
    assert numbers["N"] == 12 and numbers["L"] == L and numbers["n_sweep"] == 2
    cn = rc.certificate_numbers(m.cert, L)
    assert cn["violations"] == 0 and cn["n_cases"] == len(m.cert)
    ratios = rc.bound_ratios(m.cert, L)
    assert list(ratios["bound"].unique()) == list(rc.BOUNDS) and len(ratios) == 6
    init = rc.initial_numbers(rc.initial_certificate(p, sweep))
    assert init["ok"] and init["n"] == 2 * L
    cor = rc.corollary_table(p, sweep, m.cert)
    assert len(cor) == 2 * (L - 1) and (cor["σ_{K+1}"] <= cor["(a)"]).all()
    rk = rc.rank_against_tcv(p, sweep, m.coll)
    assert len(rk) == 2 * (L - 1) and set(rk["layer"]) == {"$W_1$", "$W_2$"}
    trends = rc.measure_trends(m.coll, L, 0)
    assert len(trends) == (L - 1) * len(rc.MEASURES)
    moves = rc.rank_moves(rk, 0)
    assert all(len(mv["ranks"]) == len(mv["lambdas"]) for mv in moves)
    summary = rc.stationarity_summary(pd.concat([rc.stationarity_rows("λ sweep", sweep.results, s=0.4),
                                                 cg.stationarity], ignore_index=True))
    assert list(summary["experiment"]) == ["λ sweep", "full loss", "centroid loss"]
    assert list(summary["networks"]) == [2, 2, 2]


@pytest.mark.slow
def test_centroid_loss_networks_are_rank_K_up_to_their_certificate(tiny):
    p, _, _, cg = tiny
    assert len(cg.results) == 4 and len(cg.gap) == 2
    # thm-centroid-loss: dist_F(W, M_K) <= ||R^c||_F / lambda for any weights
    assert (cg.ctail["centroid tail"] <= cg.ctail["centroid residual term"] * (1 + 1e-12)).all()
    numbers = rc.centroid_numbers(cg, p["K"], 0)
    assert numbers["cert_ok"] and numbers["c_n_nets"] == 4
    assert set(cg.reached_by("centroid loss")) == {(0.1, 0), (0.05, 0)}
    slopes = rc.gap_slopes(cg.gap)
    assert math.isclose(slopes["tcv2_data"], 2.0, abs_tol=1e-6)  # same noise draws scaled by s
    tab = rc.tail_slope_table(cg.ctail, 0)
    assert len(tab) == rc.depth(p) - 1
    assert set(rc.tail_slope_numbers(tab)) >= {"slope_bound_a_min", "slope_tail_max", "slope_weight_gap_min"}
    assert len(rc.weight_slopes(cg.gap)) == 1


def test_spearman_needs_three_points_and_spread():
    assert math.isnan(rc.spearman([1, 2], [3, 4]))
    assert math.isnan(rc.spearman([1, 2, 3], [4, 4, 4]))
    assert rc.spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)


def test_names():
    assert rc.plain(rc.layer_name(3)) == "W₃"
    assert rc.seeds({"seed": 2, "n_seeds": 3}) == [2, 3, 4]
    assert rc.depth({"widths": [4, 4, 4]}) == 4
