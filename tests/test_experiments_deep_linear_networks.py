"""nrc_utils.experiments.deep_linear_networks: the parameter rules of chapter 5 and its
measurements, on tiny deep linear networks."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nrc_utils import deep_linear, params
from nrc_utils.experiments import deep_linear_networks as exp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import project  # noqa: E402  (ci/project.py: the profiles as the runner reads them)

STEM = "05_deep_linear_networks"


def profile(name):
    return dict(project.load_profile(ROOT, name)[STEM])


@pytest.mark.parametrize("name, value, allowed", [
    ("seed", -1, "an integer >= 0"),
    ("n_seeds", 0, "an integer >= 1"),
    ("K", 0, "an integer >= 1"),
    ("d", 0, "an integer >= 1"),
    ("n_per_class", 0, "an integer >= 1"),
    ("n_per_class", 2, "at least (d + K) / K = 2.5"),
    ("sigma_A", [], "a non-empty list of finite numbers > 0"),
    ("sigma_A", [0.33, 0.26, 0.2, 0.15, 0.1, 0.065, 0.045, -0.025], "a non-empty list of finite numbers > 0"),
    ("sigma_A", [0.33, 0.33, 0.2, 0.15, 0.1, 0.065, 0.045, 0.025], "without repeats"),
    ("sigma_A", [0.33, 0.26], "min(K, d) = 8 values, got 2"),
    ("sigma_A", [0.4, 0.26, 0.2, 0.15, 0.1, 0.065, 0.045, 0.025], "values below 1/sqrt(K) = 0.3536"),
    ("width", 0, "an integer >= 1"),
    ("width", 7, "at least rank A = 8"),
    ("depths", [], "a non-empty list of integers >= 2"),
    ("depths", [1, 2], "a non-empty list of integers >= 2"),
    ("depths", [2, 2], "without repeats"),
    ("init_scale", 0.0, "a finite number > 0"),
    ("lambdas", [], "a non-empty list of finite numbers > 0"),
    ("lambdas", [0.01, math.nan], "a non-empty list of finite numbers > 0"),
    ("lambdas", [0.0, 0.01], "a non-empty list of finite numbers > 0"),
    ("lr", math.inf, "a finite number > 0"),
    ("gd_steps", 0, "an integer >= 1"),
    ("polish_tol", -1e-6, "a finite number > 0"),
    ("polish_max_iter", 0, "an integer >= 1"),
    ("polish_max_seconds", math.nan, "a finite number > 0"),
    ("match_rtol", 0.0, "a finite number > 0 and < 1"),
])
def test_each_bad_value_is_refused_in_one_line_naming_the_parameter(name, value, allowed):
    with pytest.raises(params.ParameterError) as err:
        exp.PARAMETERS.check({**profile("ci"), name: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{STEM}.{name} = {value!r}: ")
    assert allowed in msg


def test_whitened_problem_is_whitened_with_the_chosen_target():
    pb = exp.whitened_problem([0.4, 0.2, 0.1], K=3, d=4, n_per_class=5, seed=0)
    assert pb.X.dtype == torch.float64 and pb.y.dtype == torch.int64 and (pb.K, pb.d) == (3, 4)
    assert pb.whitening_error < 1e-12 and pb.target_error < 1e-12
    assert np.allclose(np.linalg.svd(pb.A, compute_uv=False), [0.4, 0.2, 0.1])
    assert pb.const == pytest.approx(0.5 - 0.5 * (0.16 + 0.04 + 0.01), rel=1e-12)


def test_scalar_maps_and_thresholds():
    maps = exp.scalar_maps(0.01, 0.35, depths=(1, 2, 3), n=60)
    assert set(maps["branch"]) == {"global", "local minimum", "local maximum"}
    assert set(maps[maps["branch"] != "global"]["L"]) == {3}  # only L > 2 has a second branch
    two = maps[(maps["L"] == 2) & (maps["branch"] == "global")]
    assert np.allclose(two["s"], np.maximum(two["sigma"] - 0.01, 0))
    thr = exp.thresholds(0.01, (2, 3)).set_index("L")
    assert thr.loc[3, "sigma_c"] == pytest.approx(2 * 0.01 ** 0.75) and thr.loc[2, "sigma_c"] == 0.01
    assert thr.loc[3, "sigma_e"] < thr.loc[3, "sigma_c"]


def test_forecast_curves_local_branch_only_where_zero_wins():
    curves = exp.forecast_curves([0.01], [2, 3], 0.35, n=400)
    assert curves[curves["L"] == 2]["s_local"].isna().all()
    three = curves[curves["L"] == 3]
    local = three.dropna(subset=["s_local"])
    assert len(local) and (local["s"] == 0).all()
    sigma_e, (sigma_c, _) = deep_linear.existence_threshold(0.01, 3), deep_linear.jump_threshold(0.01, 3)
    assert local["sigma"].between(sigma_e, sigma_c).all()


# ---------------------------------------------------------------------------------------------
# tiny networks: K = 3 classes in R^4, depths 2 and 3
# ---------------------------------------------------------------------------------------------

TINY = dict(depths=[2, 3], lambdas=[0.02], width=3, init_scale=1.0, lr=0.2, gd_steps=100, polish_tol=1e-6,
            polish_max_iter=500, polish_max_seconds=30.0, newton_tol=1e-12)
SIGMA = [0.45, 0.2, 0.05]  # 0.05 < sigma_c(0.02, 3) = 0.106 and < sigma_e: set to zero at depth 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NRC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("NRC_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pb = exp.whitened_problem(SIGMA, K=3, d=4, n_per_class=5, seed=0)
    runs = exp.train_networks(pb, seeds=[0, 1], **TINY, K=3)  # extra keys are ignored
    yield pb, runs
    torch.set_num_threads(threads)
    mp.undo()


def test_train_networks_covers_the_grid(tiny):
    pb, runs = tiny
    assert list(runs) == [(2, 0.02, 0), (2, 0.02, 1), (3, 0.02, 0), (3, 0.02, 1)]
    assert all(r.config.dtype == "float64" and r.config.loss == "mse" for r in runs.values())


def test_compare_with_forecast_tables(tiny):
    pb, runs = tiny
    cmp = exp.compare_with_forecast(runs, pb, 1e-3)
    assert cmp.match_tol == pytest.approx(1e-3 * 0.45)
    assert len(cmp.nets) == 4 and len(cmp.svs) == 4 * 3
    assert len(cmp.layers) == 2 * (2 + 3) * 3  # per network: L layers x min(K, d) values
    assert list(cmp.balance.groupby("L").size()) == [2 * 1, 2 * 2]  # L - 1 pairs per network
    ok = cmp.nets[cmp.nets["reached"]]
    assert len(ok) >= 2
    # stationary networks: W in the bases of A, every c_i on a branch, layers balanced within the bound
    assert (ok["off_diagonal"] < 1e-4).all()
    assert (cmp.svs[cmp.svs["reached"]]["stationary_distance"] < 1e-5).all()
    assert (cmp.balance["imbalance"] <= cmp.balance["certificate"] * (1 + 1e-9)).all()
    # depth 2 is convex: every stationary network is at the forecast, with the forecast loss
    two = ok[ok["L"] == 2]
    assert two["at_forecast"].all() and (two["loss_gap"].abs() < 1e-9).all()
    assert (cmp.nets["forecast_zeros"] == [0, 0, 1, 1]).all()  # 0.05 > lambda at L = 2; zeroed at L = 3
    table = exp.network_table(cmp.nets)
    assert list(table.columns) == list(exp.NETWORK_HEADERS.values()) and "reached" not in table


def test_forecast_summary_counts(tiny):
    pb, runs = tiny
    cmp = exp.compare_with_forecast(runs, pb, 1e-3)
    s = exp.forecast_summary(cmp)
    ok = cmp.nets[cmp.nets["reached"]]
    assert s["n_nets"] == 4 and s["n_reached"] == len(ok)
    assert s["n_at_forecast"] == int(ok["at_forecast"].sum())
    assert s["n_forecast_zeros"] == int(ok["forecast_zeros"].sum()) and s["n_zeros_found"] <= s["n_forecast_zeros"]
    assert s["n_window"] == 0  # 0.05 lies below sigma_e at depth 3
    assert s["bal_cert_ok"] and s["bal_ratio_med"] >= 1
    assert s["res_max"] == cmp.nets["residual"].max()


def test_forecast_summary_when_no_network_reached_the_target(tiny):
    pb, runs = tiny
    cmp = exp.compare_with_forecast(runs, pb, 1e-3)
    cmp.nets["reached"] = False
    cmp.svs["reached"] = False
    cmp.balance["reached"] = False
    s = exp.forecast_summary(cmp)
    assert s["n_reached"] == 0 and s["n_at_forecast"] == 0 and s["n_window"] == 0
    for key in ("res_ok_max", "zero_max", "err_at_max", "off_max", "statset_max", "gap_min", "gap_global_max",
                "bal_max"):
        assert math.isnan(s[key]), key
    assert not math.isnan(s["res_max"])
