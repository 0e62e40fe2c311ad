"""nrc_utils.experiments.eigenvalue_equation: the parameter rules of chapter 2 and its measurements,
on tiny networks (a few digits per class, widths of 5)."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nrc_utils import gradients, models, params, spectral
from nrc_utils.experiments import eigenvalue_equation as ee

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ci"))
import project  # noqa: E402  (ci/project.py: the profiles as the runner reads them)

STEM = "02_eigenvalue_equation"


def profile(name):
    return dict(project.load_profile(ROOT, name)[STEM])


@pytest.fixture(autouse=True, scope="module")
def _env(tmp_path_factory):
    """One result cache for the module (the tiny networks are trained once), no progress bars."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NRC_PROGRESS", "0")
    mp.setenv("NRC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


# --------------------------------------------------------------------------------------
# parameter rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, allowed", [
    ("seed", -1, "an integer >= 0"),
    ("n_seeds", 0, "an integer >= 1"),
    ("loss", "hinge", "one of 'mse', 'ce'"),
    ("lambdas", [], "a non-empty list of finite numbers > 0, without repeats"),
    ("lambdas", [0.0, 0.01], "a non-empty list of finite numbers > 0, without repeats"),
    ("lambdas", [0.01, math.nan], "a non-empty list of finite numbers > 0, without repeats"),
    ("lambdas", [0.01, 0.01], "a non-empty list of finite numbers > 0, without repeats"),
    ("smooth_activation", "relu", "one of 'tanh', 'gelu', 'softplus', 'identity'"),
    ("nonsmooth_activation", "sigmoid", "one of 'tanh', 'relu', 'gelu', 'softplus', 'identity'"),
    ("nonsmooth_activation", "tanh", "an activation other than smooth_activation = 'tanh'"),
    ("gm_K", 1, "an integer >= 2"),
    ("gm_d", 0, "an integer >= 1"),
    ("gm_n_per_class", 0, "an integer >= 1"),
    ("gm_s", -0.5, "a finite number >= 0"),
    ("gm_s", math.inf, "a finite number >= 0"),
    ("gm_mean_scale", -1.0, "a finite number >= 0"),
    ("gm_widths", [], "a non-empty list of integers >= 1"),
    ("gm_widths", [32, 0], "a non-empty list of integers >= 1"),
    ("digits_per_class", 0, "an integer >= 1"),
    ("digits_widths", [], "a non-empty list of integers >= 10"),
    ("digits_widths", [64, 8], "a non-empty list of integers >= 10"),
    ("gd_steps", -1, "an integer >= 0"),
    ("gd_lr", 0.0, "a finite number > 0"),
    ("gd_lr", math.nan, "a finite number > 0"),
    ("polish_tol", -1e-7, "a finite number > 0"),
    ("polish_max_iter", 0, "an integer >= 1"),
    ("polish_max_seconds", math.inf, "a finite number > 0"),
    ("polish_max_seconds", -1.0, "a finite number > 0"),
    ("showcase_lambda", 0.02, "one of lambdas = [0.001, 0.003, 0.01]"),
    ("showcase_layer", 0, "an integer >= 1"),
    ("showcase_layer", 4, "a layer of the digits MLP, 1 to 3"),
    ("showcase_rank_rtol", 1.0, "a finite number >= 0 and < 1"),
    ("batch_sizes", [], "a non-empty list of integers >= 1"),
    ("batch_sizes", [1, 601], "batch sizes of at most the N = 600 digits of the subset"),
    ("batches_per_size", 0, "an integer >= 1"),
    ("gradient_rank_rtol", -1e-10, "a finite number >= 0 and < 1"),
    ("sgd_lambdas", [], "a non-empty list of finite numbers >= 0, without repeats"),
    ("sgd_lambdas", [0.0, -0.01], "a non-empty list of finite numbers >= 0, without repeats"),
    ("sgd_lambdas", [0.0], "a list with at least one lambda > 0"),
    ("sgd_batch_size", 0, "an integer >= 1"),
    ("sgd_batch_size", 601, "at most the N = 600 digits of the subset"),
    ("sgd_lr", -0.1, "a finite number > 0"),
    ("sgd_steps", 0, "an integer >= 1"),
    ("alignment_layer", 4, "a layer of the digits MLP, 1 to 3"),
    ("alignment_window", 1, "an integer >= 2"),
    ("alignment_window", 1201, "at most sgd_steps = 1200"),
    ("split_every", 0, "an integer >= 1"),
    ("split_every", 1201, "at most sgd_steps = 1200"),
    ("split_rank_rtol", math.nan, "a finite number >= 0 and < 1"),
    ("bias_lambda", 0.0, "a finite number > 0"),
    ("collapse_rtol", 0.0, "a finite number > 0 and < 1"),
])
def test_each_bad_value_is_refused_in_one_line_naming_the_parameter(name, value, allowed):
    with pytest.raises(params.ParameterError) as err:
        ee.PARAMETERS.check({**profile("ci"), name: value})
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{STEM}.{name} = {value!r}: ")
    assert allowed in msg


def test_the_runner_check_refuses_too():
    from nrc_utils.experiments import check_parameters

    with pytest.raises(params.ParameterError, match=r"02_eigenvalue_equation.lambdas = \[\]"):
        check_parameters(STEM, {**profile("ci"), "lambdas": []})


def test_digits_size_counts_what_the_subset_keeps():
    assert ee.digits_size(60) == 600
    assert ee.digits_size(200) == 1797
    assert len(ee.digits_subset(60, seed=0)) == 600


# --------------------------------------------------------------------------------------
# measurements on tiny networks
# --------------------------------------------------------------------------------------

TINY = dict(seed=0, gm_K=3, gm_d=6, gm_n_per_class=8, gm_s=0.3, gm_mean_scale=2.0, gm_widths=[5],
            digits_per_class=3, digits_widths=[5, 5], loss="ce", gd_steps=4, gd_lr=0.1, polish_tol=1e-7,
            polish_max_iter=50, polish_max_seconds=10.0, newton_tol=1e-12, device="cpu")


@pytest.fixture(scope="module")
def tiny():
    training = ee.Training.of(**TINY)
    datasets = ee.chapter_data(**TINY)
    return training, datasets, ee.stationarity_sweep(training, datasets, ["tanh", "relu"], [0.01, 0.03], [0])


def test_chapter_data_and_subset(tiny):
    _, datasets, _ = tiny
    assert list(datasets) == list(ee.DATASETS)
    gm, w = datasets["Gaussian mixture"]
    assert (len(gm), gm.d, gm.K, w) == (24, 6, 3, [5])
    digits, _ = datasets["digits"]
    assert len(digits) == 30 and np.bincount(digits.y.numpy()).tolist() == [3] * 10
    # the seeded choice is deterministic and in the original order
    assert torch.equal(digits.X, ee.digits_subset(3, 0).X)
    assert not torch.equal(digits.X, ee.digits_subset(3, 1).X)


def test_training_config_is_the_chapters_recipe():
    cfg = ee.Training.of(**TINY).config(0.01, seed=2, bias=True)
    assert (cfg.lam, cfg.loss, cfg.steps, cfg.lr, cfg.seed, cfg.dtype, cfg.decay_bias) == \
           (0.01, "ce", 4, 0.1, 2, "float64", False)
    assert (cfg.polish_tol, cfg.polish_max_iter, cfg.polish_max_seconds, cfg.record_every) == (1e-7, 50, 10.0, 1)
    assert ee.Training.of(**TINY).config(0.01, seed=2).decay_bias


def test_stationarity_sweep_tables(tiny):
    _, _, sweep = tiny
    s = sweep.summary
    assert len(s) == 2 * 2 * 2 and list(s.columns) == ["data", "activation", "λ", "seed", "max residual ρ",
                                                       "L-BFGS iterations", "L-BFGS seconds", "train accuracy",
                                                       "L_λ", "stopped by", "λ_min(H)"]
    r = sweep.result("digits", "tanh", 0.01, 0)
    row = s[(s.data == "digits") & (s.activation == "tanh") & (s["λ"] == 0.01)].iloc[0]
    assert row["max residual ρ"] == r.max_residual and row["stopped by"] == r.stop
    assert row["λ_min(H)"] == r.min_eigenvalue and r.newton_stop is not None  # tanh: the Newton stage ran
    relu = s[s.activation == "relu"]
    assert relu["λ_min(H)"].isna().all()  # ReLU: no Newton stage, no Hessian
    curves = ee.residual_curves(sweep, seed=0)
    assert set(curves.phase) == {"sgd", "lbfgs", "newton"} and len(curves) == sum(len(r.history["step"]) for r in sweep.runs.values())
    layers = ee.layer_residuals(sweep)
    assert len(layers) == 4 * 2 + 4 * 3  # Gaussian mixture: 2 layers, digits: 3
    assert layers.reached.dtype == bool
    assert ee.residual_curves(sweep, seed=99).empty
    nums = ee.stationarity_numbers(sweep, "tanh", "relu")
    smooth = s[s.activation == "tanh"]["max residual ρ"]
    assert nums["res_smooth_max"] == smooth.max() and float(nums["res_smooth_max_up"]) >= smooth.max()
    assert float(nums["res_rough_min_down"]) <= s[s.activation == "relu"]["max residual ρ"].min()
    assert all(not isinstance(v, np.generic) for v in nums.values())
    assert len(ee.smooth_results(sweep, "tanh")) == 4


def test_eigen_pair_is_the_eigenvalue_equation(tiny):
    training, datasets, sweep = tiny
    digits, _ = datasets["digits"]
    r = sweep.result("digits", "tanh", 0.03, 0)
    pair = ee.eigen_pair(r, digits, 2, "ce")
    assert pair.lamW.shape == pair.negG.shape == (5, 5)
    # rho_l of the pair is the network's residual of layer 2
    rel = np.linalg.norm(pair.lamW - pair.negG) / np.linalg.norm(pair.lamW)
    assert rel == pytest.approx(r.residuals[1], rel=1e-6)
    assert pair.sv_gap <= pair.weyl * (1 + 1e-9)  # cor-eigenvalue-spectra
    nums = ee.side_by_side_numbers(pair, pair, showcase_layer=2, showcase_lambda=0.03, showcase_rank_rtol=1e-6)
    assert nums["show_width"] == 5 and nums["show_lambda"] == "0.03"
    assert nums["show_rank"] == spectral.numerical_rank(pair.lamW, 1e-6)


def test_gradient_ranks_respect_the_bound(tiny):
    _, datasets, sweep = tiny
    digits, _ = datasets["digits"]
    nets = {ee.RANK_NETWORKS[0]: models.MLP(digits.d, [5, 5], 10, "tanh", seed=0),
            ee.RANK_NETWORKS[1]: sweep.result("digits", "tanh", 0.01, 0).model}
    gr = ee.gradient_ranks(nets, digits, loss="ce", batch_sizes=[1, 2, 8], batches_per_size=2, gradient_rank_rtol=1e-10,
                           seed=0)
    assert len(gr.ranks) == 2 * 3 * 2 * 3 and gr.N == 30 and gr.shapes == {1: (5, 64), 2: (5, 5), 3: (10, 5)}
    assert (gr.ranks["rank G_B"] <= gr.ranks["bound"]).all() and (gr.ranks["bound"] <= gr.ranks["shape bound"]).all()
    # the same batches for both networks
    a, b = (gr.ranks[gr.ranks.network == n] for n in ee.RANK_NETWORKS)
    assert a["|B|"].tolist() == b["|B|"].tolist()
    nums = ee.gradient_rank_numbers(gr, digits, gradient_rank_rtol=1e-10, batches_per_size=2)
    assert nums["rank_exceed"] == 0 and nums["rank_cases"] == 36 and nums["rank_cases_each"] == 18
    assert len(nums["rank_full_init"].split(", ")) == 3
    assert nums["rank_below_from"] in (1, 2, 8, 30)


SGD = dict(loss="ce", digits_widths=[5, 5], smooth_activation="tanh", sgd_lr=0.1, sgd_steps=12, sgd_batch_size=4,
           alignment_layer=2, alignment_window=4, split_every=4, split_rank_rtol=1e-10, device="cpu")


def test_sgd_alignment_runs_tables_and_cache(tiny):
    _, datasets, _ = tiny
    digits, _ = datasets["digits"]
    runs = ee.sgd_alignment_runs(digits, sgd_lambdas=[0.0, 0.01], seeds=[0], **SGD)
    assert len(runs.cosines) == 2 * 3 * 3  # 3 windows of 4 gradients: 3 pairs each
    assert runs.cosines.cosine.between(-1, 1).all()
    assert runs.windows.step.tolist() == [4, 8, 12] * 2
    assert (runs.windows["effective rank"] <= 4 + 1e-9).all()
    # the split: lambda > 0 only, steps 0, 4, 8, 12, every layer; the identity holds
    assert set(runs.split["λ"]) == {0.01} and sorted(set(runs.split.step)) == [0, 4, 8, 12]
    assert (runs.split.identity <= 1e-10 * runs.split.lamW.clip(lower=1e-300) + 1e-14).all()
    assert (runs.split.rank_A <= 10).all()
    assert runs.residuals["λ"].tolist() == [0.01]
    again = ee.sgd_alignment_runs(digits, sgd_lambdas=[0.0, 0.01], seeds=[0], **SGD)  # from the cache
    pd.testing.assert_frame_equal(runs.split, again.split)
    shapes = {1: (5, 64), 2: (5, 5), 3: (10, 5)}
    nums = ee.alignment_numbers(runs, shapes, sgd_lambdas=[0.0, 0.01], seeds=[0], **SGD)
    assert nums["align_full"] == 5 and nums["align_lam_hi"] == "0.01" and nums["align_lam_lo"] == "0"
    assert nums["align_memory_hi"] == pytest.approx(1000.0)
    assert len(ee.alignment_sums(runs)) == 2
    long = ee.split_along_sgd(runs)
    assert set(long.term) == set(ee.SPLIT_TERMS.values()) and len(long) == 4 * len(runs.split)
    table = ee.split_ratio_table(runs)
    assert list(table.columns) == ["λ", "layer", "‖B_l‖ / ‖A_l‖", "‖R_l‖ / ‖λW_l‖"] and len(table) == 3


def test_sgd_alignment_records_the_gradient_of_each_batch(tiny):
    """The cosines are those of the mini-batch gradients of the layer, recomputed from the batches."""
    from nrc_utils import train

    _, datasets, _ = tiny
    digits, _ = datasets["digits"]
    arrays, _ = ee.sgd_alignment(digits, lam=0.0, net_seed=0, **SGD)
    model = models.MLP(digits.d, [5, 5], 10, "tanh", seed=0).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for idx in train.batch_indices(len(digits), 4, 12, 0):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(digits.X.double()[idx]), digits.y[idx])
        loss.backward()
        grads.append(model.layers[1].weight.grad.clone())
        opt.step()
    a = gradients.gradient_alignment(grads[:4])
    assert np.allclose(arrays["cos"][:3], a["cosine_successive"], atol=1e-10)


def test_stationary_split_and_numbers(tiny):
    training, datasets, _ = tiny
    digits, widths = datasets["digits"]
    stat = ee.stationary_split(training, digits, widths, "tanh", [0.0, 0.01], 0)
    assert stat["λ"].tolist() == [0.01] * 3 and list(stat.columns) == ["λ", "layer", "lamW", "A", "B", "R"]
    runs = ee.sgd_alignment_runs(digits, sgd_lambdas=[0.0, 0.01], seeds=[0], **SGD)
    nums = ee.split_numbers(runs, stat, 10, split_rank_rtol=1e-10)
    assert nums["K_digits"] == 10 and nums["split_rankA_max"] <= 10
    assert float(nums["split_identity"]) < 1e-10
    assert nums["split_stat_AW_min"] == pytest.approx((stat.A / stat.lamW).min())


def test_k_minus_one_on_a_tiny_network(tiny):
    training, datasets, _ = tiny
    digits, widths = datasets["digits"]
    km1 = ee.k_minus_one(training, digits, [12, 12], "tanh", 0.03, 0)
    assert km1.K == 10 and set(km1.spectra.network) == set(ee.BIAS_NETWORKS)
    assert km1.spectra.groupby(["network", "layer"]).size().max() == 10
    assert list(km1.checks.layer) == [1, 2, 3]
    assert (km1.checks.sigma_K <= km1.checks.bound * (1 + 1e-9) + 1e-300).all()  # prop-cluster-split (3)
    ratios = ee.k_ratios(km1, ee.BIAS_NETWORKS[1])
    assert list(ratios) == [1, 2, 3] and ratios[3] < 1e-10  # cross-entropy: the last layer has d_L = K
    nums = ee.k_minus_one_numbers(km1, bias_lambda=0.03, collapse_rtol=1e-5)
    assert nums["km1_lambda"] == "0.03" and nums["km1_res"] == km1.biased.max_residual
    assert 0 <= km1.centring < 1


def test_class_part_spectra_of_a_layer_narrower_than_k(tiny):
    """Widths below K (the rules refuse them for the chapter): sigma_j = 0 beyond the layer's rank."""
    training, datasets, sweep = tiny
    digits, _ = datasets["digits"]
    rows, checks = ee.class_part_spectra(sweep.result("digits", "tanh", 0.01, 0), digits, "ce", "no biases")
    layer2 = [r["ratio"] for r in rows if r["layer"] == 2]
    assert len(layer2) == 10 and layer2[0] == 1.0 and layer2[5:] == [0.0] * 5 and checks == []
