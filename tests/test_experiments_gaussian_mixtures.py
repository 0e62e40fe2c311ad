"""nrc_utils.experiments.gaussian_mixtures: chapter 4's parameter rules and experiments (tiny grids)."""

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nrc_utils import mixture_bounds, params, spectral
from nrc_utils.experiments import gaussian_mixtures as gm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import project  # noqa: E402  (ci/project.py: the profiles as the runner reads them)

STEM = "04_gaussian_mixtures"


def parameters_cell() -> dict:
    """The chapter's parameters cell, executed (``profile`` left out)."""
    text = (ROOT / "book" / f"{STEM}.md").read_text()
    cell = re.search(r"```\{code-cell\} ipython3\n:tags: \[parameters\]\n(.*?)\n```", text, flags=re.S).group(1)
    values: dict = {}
    exec(cell, {}, values)
    values.pop("profile")
    return values


GOOD = parameters_cell()


def profile(name: str) -> dict:
    return project.load_profile(ROOT, name)[STEM]


def test_the_chapters_defaults_are_allowed_and_make_a_spec():
    spec = gm.Spec.from_parameters({**GOOD, "profile": "ci"})
    assert (spec.L, spec.N, spec.seeds, spec.hidden) == (4, 90, [0], [1, 2, 3])
    assert spec.exponents == {"s": 1.0, "lambda": -2.5}
    cfg = spec.config()
    assert (cfg.loss, cfg.steps, cfg.polish_tol, cfg.record_every) == ("mse", 300, 1e-6, 60)


@pytest.mark.parametrize("name, value", [
    ("seed", -1), ("n_seeds", 0), ("K", 0), ("d", 0), ("n_per_class", 1), ("mean_scale", -1.0),
    ("mean_scale", math.nan), ("widths", []), ("widths", [16, 0]), ("activation", "swish"), ("loss", "ce"),
    ("loss", "hinge"), ("lr", 0.0), ("lr", math.inf), ("gd_steps", -1), ("polish_tol", 0.0),
    ("polish_tol", -1e-6), ("polish_max_iter", 0), ("polish_max_seconds", 0.0), ("polish_max_seconds", math.nan),
    ("train_device", "tpu"), ("s_grid", []), ("s_grid", [0.1, -0.2]), ("s_grid", [0.0, 0.1]),
    ("s_grid", [0.1, 0.1]), ("lambdas", []), ("lambdas", [0.0, 0.01]), ("lambdas", [math.inf]),
    ("rank_rtol", 0.0), ("rank_rtol", 1.0), ("floor_factor", -1.0), ("min_fit_points", 1),
    ("tcv_d_grid", []), ("tcv_d_grid", [0, 2]), ("tcv_s_grid", []), ("tcv_s_grid", [-0.1]), ("tcv_draws", 0),
    # relations
    ("K", 16), ("K", 40), ("min_fit_points", 5),
])
def test_each_bad_value_is_refused_in_one_line_naming_the_parameter(name, value):
    with pytest.raises(params.ParameterError) as err:
        gm.PARAMETERS.check({**GOOD, name: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{STEM}.{name} = {value!r}: expected ")


def test_K_is_refused_against_the_narrowest_layer_and_min_fit_points_against_the_longer_grid():
    with pytest.raises(params.ParameterError, match=r"K = 4: expected an integer < 4"):
        gm.PARAMETERS.check({**GOOD, "K": 4, "widths": [16, 4, 16]})
    ok = gm.PARAMETERS.check({**GOOD, "widths": [16, 4, 16], "K": 3, "s_grid": [0.1, 0.2], "min_fit_points": 4})
    assert ok["min_fit_points"] == 4  # the lambda grid has 4 points


def test_input_tcv_tables_and_summary():
    out = gm.input_tcv(3, 5, [2, 8], [0.1, 1.0], 6)
    assert len(out.draws) == 2 * 2 * 6
    assert list(out.expected["d"]) == [2, 8]
    N = 15
    for d in (2, 8):
        e = mixture_bounds.expected_tcv(3, d, 5, 1.0)
        row = out.expected[out.expected["d"] == d].iloc[0]
        assert row["tcv2_norm"] == pytest.approx(e["tcv2"] / (N * d)) == pytest.approx((N - 3) / N)
        assert row["tcv1_norm"] == pytest.approx(math.sqrt(1 - 1 / 5) * mixture_bounds.chi_mean(d) / math.sqrt(d))
    # normalised columns divided by their expectation give the ratio columns
    merged = out.draws.merge(out.expected, on="d", suffixes=("", "_e"))
    assert np.allclose(merged["tcv2_norm"] / merged["tcv2_norm_e"], merged["tcv2_ratio"])
    assert np.allclose(merged["tcv1_norm"] / merged["tcv1_norm_e"], merged["tcv1_ratio"])
    s = out.summary
    assert (s["tcv_draws"], s["tcv_d_min"], s["tcv_d_max"]) == (6, 2, 8)
    assert s["tcv2_ratio_min"] <= s["tcv2_ratio_mean"] <= s["tcv2_ratio_max"]
    assert s["chi_ratio_small_d"] == pytest.approx(out.expected["tcv1_norm"].iloc[0])
    # the normalised TCV is scale-free: the same draws at two noise levels agree
    a, b = (out.draws[out.draws["s"] == v].reset_index() for v in (0.1, 1.0))
    assert np.allclose(a["tcv2_norm"], b["tcv2_norm"])


TINY = {**GOOD, "K": 2, "d": 4, "n_per_class": 6, "widths": [5, 5], "gd_steps": 40, "lr": 0.3,
        "polish_tol": 1e-4, "polish_max_iter": 300, "polish_max_seconds": 10.0, "newton_tol": 1e-12, "s_grid": [0.1, 0.2, 0.4],
        "lambdas": [0.01, 0.03], "min_fit_points": 2, "floor_factor": 0.0}


@pytest.fixture(scope="module")
def tiny():
    spec = gm.Spec.from_parameters(TINY)
    run = gm.train_grid(spec, "cpu", use_cache=False)
    return spec, run, gm.measure_grid(run)


def test_train_grid_one_network_per_cell(tiny):
    spec, run, _ = tiny
    assert set(run.results) == {(s, lam, 0) for s in spec.s_grid for lam in spec.lambdas}
    assert list(run.networks.columns) == ["s", "lambda", "seed", "max_l ρ_l", "target", "stopped by", "reached",
                                          "λ_min(H)", "train accuracy", "L_lambda"]
    assert (run.networks["reached"] == (run.networks["stopped by"] == "target")).all()
    # the same noise draws for every s: the data differ by s * xi only
    X1, X2 = run.mixes[0.1].X.double(), run.mixes[0.2].X.double()
    X4 = run.mixes[0.4].X.double()
    assert np.allclose((X4 - X2).numpy(), 2 * (X2 - X1).numpy(), atol=1e-6)


def test_measurements_and_the_theorems_on_trained_networks(tiny):
    spec, run, m = tiny
    assert len(m.propagation) == len(run.results) * (spec.L - 1)
    assert len(m.tails) == len(run.results) * spec.L
    assert set(m.hidden_tails["layer"]) == set(spec.hidden)
    r = run.results[(0.2, 0.03, 0)]
    W1 = r.model.layers[0].weight.detach()
    row = m.tails[(m.tails["s"] == 0.2) & (m.tails["lambda"] == 0.03) & (m.tails["layer"] == 1)].iloc[0]
    assert row["tail"] == pytest.approx(spectral.tail_distance(W1, spec.K))
    assert row["rank"] == spectral.numerical_rank(W1, spec.rank_rtol)
    checks = gm.bound_checks(m)
    assert checks["prop_holds"] and checks["bounds_hold"]
    assert checks["n_networks"] == len(run.results) == checks["n_descended"]
    assert 0 < checks["prop2_ratio_min"] <= checks["prop2_ratio_max"] <= 1 + 1e-12
    assert checks["prop1_ratio_max"] <= 1 + 1e-12
    assert 0 < checks["norm_ratio_max"] <= 1
    assert checks["chain_ratio_med"] >= 1 and checks["prior_ratio_min"] >= 1


def test_phase_summary_and_slopes_on_trained_networks(tiny):
    spec, run, m = tiny
    ph = gm.phase_summary(m, spec)
    assert ph.stationary["reached"].all() and set(ph.stationary["layer"]) <= set(spec.hidden)
    c = ph.counts
    assert c["n_cells"] == len(ph.stationary) and 0 <= c["n_cells_rankK"] <= c["n_cells"]
    assert 0 <= c["steps_s_up"] <= c["steps_s"] and 0 <= c["steps_lam_down"] <= c["steps_lam"]
    assert set(ph.corner_lo["s"]) <= {0.1} and set(ph.corner_lo["lambda"]) <= {0.03}
    assert set(ph.corner_hi["s"]) <= {0.4} and set(ph.corner_hi["lambda"]) <= {0.01}
    sl = gm.slope_fits(m, spec)
    assert list(sl.in_s.columns) == ["lambda", *gm.SLOPE_COLUMNS]
    assert list(sl.in_lambda.columns) == ["s", *gm.SLOPE_COLUMNS]
    assert (sl.in_s["points"] >= 2).all()
    t = sl.table()
    assert list(t.columns) == ["slope in", "at", *gm.SLOPE_COLUMNS] and len(t) == len(sl.in_s) + len(sl.in_lambda)


def _tails(rows):
    base = {"seed": 0, "reached": True, "resolved": True, "hidden": True, "descended": True, "rank": 3}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_fit_slopes_recovers_a_power_law_and_skips_short_groups():
    s = np.array([0.05, 0.1, 0.2, 0.4])
    rows = [{"s": v, "lambda": 0.01, "layer": 1, "tail": 3 * v ** 2, "chain": 5 * v, "a_priori": 7 * v ** 0.5}
            for v in s]
    rows += [{"s": 0.1, "lambda": 0.02, "layer": 1, "tail": 1.0, "chain": 1.0, "a_priori": 1.0}]
    fits = gm.fit_slopes(_tails(rows), "s", "lambda", 3)
    assert len(fits) == 1
    f = fits.iloc[0]
    assert (f["lambda"], f["layer"], f["points"]) == (0.01, "W₁", 4)
    assert (f["tail"], f["chain bound"], f["a priori bound"]) == pytest.approx((2.0, 1.0, 0.5))
    assert gm.fit_slopes(_tails(rows), "s", "lambda", 5).empty


def test_fit_points_keep_stationary_resolved_hidden_layers_only():
    rows = [{"s": 0.1, "lambda": 0.01, "layer": 1, "tail": 1.0},
            {"s": 0.2, "lambda": 0.01, "layer": 1, "tail": 1.0, "reached": False},
            {"s": 0.3, "lambda": 0.01, "layer": 1, "tail": 1.0, "resolved": False},
            {"s": 0.4, "lambda": 0.01, "layer": 4, "tail": 1.0, "hidden": False}]
    assert list(gm.fit_points(_tails(rows))["s"]) == [0.1]


def test_steps_up_counts_increases_along_one_variable():
    rows = [{"s": s, "lambda": lam, "layer": 1, "tail": t}
            for lam, ts in ((0.01, (1.0, 2.0, 1.5)), (0.02, (1.0, 1.1, 1.2))) for s, t in zip((0.1, 0.2, 0.3), ts)]
    assert gm.steps_up(_tails(rows), "s", "lambda") == (3, 4)
    assert gm.steps_up(_tails(rows[:1]), "s", "lambda") == (0, 0)
    assert gm.steps_up(_tails(rows).iloc[:0], "s", "lambda") == (0, 0)


def _measurements(tails_rows, prop_ok=True):
    prop = pd.DataFrame([{"s": 0.1, "lambda": 0.01, "seed": 0, "reached": True, "layer": 1, "tcv2_out": 4.0,
                          "bound_sqrt_tcv2": 3.0 if prop_ok else 1.0, "tcv1_out": 1.0, "bound_tcv1": 2.0}])
    return gm.Measurements(prop, _tails(tails_rows))


def test_bound_checks_take_the_a_priori_bound_only_where_its_hypothesis_holds():
    common = {"s": 0.1, "layer": 1, "chain": 2.0, "sq_norms": 1.0, "budget": 4.0}
    desc = {**common, "lambda": 0.01, "tail": 1.0, "a_priori": 3.0}
    # a network that did not descend may exceed the a priori bound: that is no failure of the theorem
    climbed = {**common, "lambda": 0.02, "tail": 1.5, "a_priori": 1.0, "descended": False, "sq_norms": 8.0}
    c = gm.bound_checks(_measurements([desc, climbed]))
    assert c["bounds_hold"] and c["prop_holds"]
    assert (c["n_networks"], c["n_descended"]) == (2, 1)
    assert c["norm_ratio_max"] == 0.25 and c["prior_ratio_min"] == 3.0
    assert c["chain_ratio_med"] == pytest.approx((2.0 + 2.0 / 1.5) / 2)
    # a chain bound below the tail, or a violated one-step bound, is reported
    assert not gm.bound_checks(_measurements([{**desc, "chain": 0.5}]))["bounds_hold"]
    assert not gm.bound_checks(_measurements([desc], prop_ok=False))["prop_holds"]
    # no network descended: the ratios that need the descent are undefined
    none = gm.bound_checks(_measurements([climbed]))
    assert math.isnan(none["norm_ratio_max"]) and math.isnan(none["prior_ratio_min"]) and none["bounds_hold"]
