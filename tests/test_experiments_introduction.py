"""nrc_utils.experiments.introduction: the parameter rules of chapter 1 and its measurements,
on a tiny network."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nrc_utils import data, params
from nrc_utils.experiments import introduction as exp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import project  # noqa: E402  (ci/project.py: the profiles as the runner reads them)

STEM = "01_introduction"


def profile(name):
    return dict(project.load_profile(ROOT, name)[STEM])


@pytest.mark.parametrize("name, value, allowed", [
    ("seed", -1, "an integer >= 0"),
    ("test_fraction", 0.0, "a finite number > 0 and < 1"),
    ("test_fraction", 1.0, "a finite number > 0 and < 1"),
    ("test_fraction", 0.001, "a fraction that puts at least one digit of every class on each side"),
    ("test_fraction", 0.999, "a fraction that puts at least one digit of every class on each side"),
    ("widths", [], "a list of at least 2 integers >= 1"),
    ("widths", [64], "a list of at least 2 integers >= 1"),
    ("widths", [64, 0], "a list of at least 2 integers >= 1"),
    ("activation", "sigmoid", "one of 'tanh', 'relu'"),
    ("loss", "hinge", "one of 'mse', 'ce'"),
    ("lam_wd", 0.0, "a finite number > 0"),
    ("lam_wd", math.nan, "a finite number > 0"),
    ("lr", -0.05, "a finite number > 0"),
    ("momentum", 1.0, "a finite number >= 0 and < 1"),
    ("momentum", -0.1, "a finite number >= 0 and < 1"),
    ("batch_size", 0, "an integer >= 1"),
    ("steps", 0, "an integer >= 1"),
    ("polish_tol", math.inf, "a finite number > 0"),
    ("polish_max_iter", 0, "an integer >= 1"),
    ("polish_max_seconds", -1.0, "a finite number > 0"),
    ("rank_rtol", 0.0, "a finite number > 0 and < 1"),
    ("trunc_tolerance", -0.01, "a finite number >= 0 and <= 1"),
])
def test_each_bad_value_is_refused_in_one_line_naming_the_parameter(name, value, allowed):
    with pytest.raises(params.ParameterError) as err:
        exp.PARAMETERS.check({**profile("ci"), name: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{STEM}.{name} = {value!r}: ")
    assert allowed in msg


# ---------------------------------------------------------------------------------------------
# the measurements, on a tiny network (a Gaussian mixture, two hidden layers of width 6)
# ---------------------------------------------------------------------------------------------

TINY = dict(seed=0, widths=[6, 6], activation="tanh", loss="ce", lam_wd=0.05, lr=0.1, momentum=0.9,
            batch_size=16, steps=10, polish_tol=1e-4, polish_max_iter=300, polish_max_seconds=30.0,
            newton_tol=1e-12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NRC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("NRC_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices
    ds = data.gaussian_mixture(K=3, d=5, n_per_class=12, s=0.3, seed=1)
    train_set, test_set = ds.split(0.25, seed=0)
    runs = exp.train_networks(train_set, **TINY, device="cpu", rank_rtol=1e-3)  # extra keys are ignored
    yield runs, train_set, test_set
    torch.set_num_threads(threads)
    mp.undo()


def test_train_networks_gives_both_networks_from_the_same_start(tiny):
    runs, train_set, _ = tiny
    assert list(runs) == list(exp.NETS)
    assert runs["nowd"].config.lam == 0 and runs["nowd"].config.polish_tol is None
    assert runs["wd"].config.lam == TINY["lam_wd"] and runs["wd"].config.polish_tol == TINY["polish_tol"]
    status = exp.stationarity(runs).set_index("net")
    assert status.loc["nowd", "reached"] is None and math.isnan(status.loc["nowd", "residual"])
    assert status.loc["nowd", "lbfgs_iterations"] == 0
    assert status.loc["wd", "reached"] == (status.loc["wd", "stop"] == "target")
    assert status.loc["wd", "lbfgs_iterations"] > 0


def test_accuracies_are_fractions_of_each_split(tiny):
    runs, train_set, test_set = tiny
    acc = exp.accuracies(runs, train_set, test_set)
    assert list(acc["net"]) == list(exp.NETS)
    for col, subset in (("train", train_set), ("test", test_set)):
        assert ((acc[col] * len(subset)).round(9) % 1 == 0).all()
        assert acc[col].between(0, 1).all()


def test_spectra_ranks_and_the_rank_table(tiny):
    runs, _, _ = tiny
    spectra = exp.layer_spectra(runs)
    assert set(spectra["layer"]) == {1, 2, 3}
    first = spectra[(spectra["net"] == "wd") & (spectra["layer"] == 3)]
    assert (first["rows"].iloc[0], first["cols"].iloc[0], len(first)) == (3, 6, 3)  # W_3 is K x 6
    assert first["sigma_rel"].iloc[0] == 1.0 and first["sigma"].is_monotonic_decreasing
    ranks = exp.layer_ranks(spectra, 1e-3)
    assert len(ranks) == 6 and ranks["numerical_rank"].between(1, 6).all()
    assert (ranks["effective_rank"] <= ranks["numerical_rank"] + 1e-9).all()
    summary = exp.rank_summary(ranks)
    wd = ranks[ranks["net"] == "wd"].set_index("layer")
    assert summary["rank_deep_wd"] == wd.loc[2, "numerical_rank"]
    assert summary["rank_WL_wd"] == wd.loc[3, "numerical_rank"]
    table = exp.rank_table(ranks, {"nowd": "λ = 0", "wd": "λ = 0.05"})
    assert list(table.columns) == ["layer", "shape", "numerical rank, λ = 0", "numerical rank, λ = 0.05",
                                   "effective rank, λ = 0", "effective rank, λ = 0.05"]
    assert list(table["layer"]) == ["W₁", "W₂", "W₃"] and table["shape"].iloc[0] == "6×5"


def test_rank_summary_needs_two_hidden_layers():
    ranks = pd.DataFrame([{"net": n, "layer": l, "numerical_rank": 1, "effective_rank": 1.0}
                          for n in exp.NETS for l in (1, 2)])
    with pytest.raises(ValueError, match="at least 3 layers"):
        exp.rank_summary(ranks)


def test_last_layer_rows_sum_to_nearly_zero_at_a_stationary_point_with_cross_entropy(tiny):
    runs, _, _ = tiny
    if runs["wd"].polish_stop == "target":
        assert exp.last_layer_row_sum(runs["wd"]) < 1e-3
    assert exp.last_layer_row_sum(runs["nowd"]) >= 0


def test_feature_collapse_measures_every_layer_input(tiny):
    runs, train_set, _ = tiny
    coll = exp.feature_collapse(runs, train_set)
    assert list(coll["layer"].unique()) == [0, 1, 2]
    pixels = coll[coll["layer"] == 0]
    assert pixels["tcv2_normalised"].nunique() == 1  # h_0 is the input, the same for both networks
    assert coll["tcv2_normalised"].between(0, 1).all() and (coll["nc1"] >= 0).all()
    assert (coll["means_effective_rank"] <= train_set.K - 1 + 1e-9).all()  # K centred means span K - 1


def test_truncation_curve_and_its_summary(tiny):
    runs, train_set, test_set = tiny
    trunc = exp.truncation_accuracy(runs, test_set, range(1, 7))
    acc = exp.accuracies(runs, train_set, test_set)
    full = trunc[trunc["r"] == 6].set_index("net")["accuracy"]  # rank 6: nothing is cut
    assert np.allclose(full.loc[list(exp.NETS)].to_numpy(), acc["test"].to_numpy())
    summary = exp.truncation_summary(trunc, acc, 3, 0.0).set_index("net")
    assert summary.loc["wd", "acc_at_K"] == trunc[(trunc["net"] == "wd") & (trunc["r"] == 3)]["accuracy"].iloc[0]
    assert 1 <= summary.loc["wd", "r_min"] <= 6


@pytest.mark.parametrize("accs, full, tol, expected", [
    ([0.2, 0.9, 0.95, 0.96], 0.96, 0.01, 3),   # from r = 3 on
    ([0.96, 0.5, 0.96, 0.96], 0.96, 0.01, 3),  # a dip: the first r is not enough
    ([0.96, 0.96, 0.96, 0.96], 0.96, 0.0, 1),  # every rank
    ([0.5, 0.5, 0.5, 0.9], 0.96, 0.01, None),  # not even the largest rank
])
def test_smallest_safe_rank(accs, full, tol, expected):
    curve = pd.DataFrame({"r": [4, 3, 2, 1][::-1], "accuracy": accs})
    assert exp.smallest_safe_rank(curve, full, tol) == expected


def test_digits_split_is_stratified():
    train_set, test_set = exp.digits_split(0.3, 0)
    assert len(train_set) + len(test_set) == 1797 and train_set.K == 10
    assert torch.bincount(test_set.y).min() >= 1
