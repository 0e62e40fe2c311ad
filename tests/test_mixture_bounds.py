"""nrc_utils.mixture_bounds: the Gaussian-mixture statements hold and their constants are right."""

import math

import numpy as np
import pytest
import torch

from nrc_utils import collapse, data, mixture_bounds as mb, models, spectral, train


@pytest.mark.parametrize("d", [1, 2, 5, 16, 100])
def test_chi_mean_bounds_and_monte_carlo(d):
    chi = mb.chi_mean(d)
    assert d / math.sqrt(d + 1) <= chi <= math.sqrt(d)
    xi = np.random.default_rng(d).standard_normal((200_000, d))
    assert abs(np.linalg.norm(xi, axis=1).mean() - chi) < 4 * np.linalg.norm(xi, axis=1).std() / math.sqrt(2e5)


@pytest.mark.parametrize("K, d, n, s", [(3, 16, 10, 0.3), (4, 8, 5, 1.5), (2, 32, 40, 0.05)])
def test_expected_tcv_matches_sampled_mixtures(K, d, n, s):
    """Mean over many draws of the TCV that nrc_utils.collapse measures (empirical class means)."""
    draws = [collapse.collapse_stats(m.X, m.y, K) for m in
             (data.gaussian_mixture(K, d, n, s, seed=seed) for seed in range(300))]
    t1 = np.array([c.tcv1 for c in draws])
    t2 = np.array([c.tcv2 for c in draws])
    exp = mb.expected_tcv(K, d, n, s)
    assert abs(t2.mean() - exp["tcv2"]) < 4 * t2.std() / math.sqrt(len(t2))
    assert abs(t1.mean() - exp["tcv1"]) < 4 * t1.std() / math.sqrt(len(t1))
    # around the true means the expectation is larger by N / (N - K): the empirical form is not it
    true = mb.expected_tcv(K, d, n, s, around="true")
    assert true["tcv2"] == pytest.approx(exp["tcv2"] * K * n / (K * n - K))
    assert abs(t2.mean() - true["tcv2"]) > 4 * t2.std() / math.sqrt(len(t2))


@pytest.mark.parametrize("activation", ["tanh", "gelu", "softplus", "relu"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_propagation_bounds_hold(activation, seed):
    mix = data.gaussian_mixture(3, 10, 20, 0.5, seed=seed)
    model = models.MLP(10, [12, 8, 9], 3, activation=activation, seed=seed, init_scale=2.0)
    for row in mb.propagation(model, mix.X, mix.y, 3):
        assert math.sqrt(row["tcv2_out"]) <= row["bound_sqrt_tcv2"] * (1 + 1e-12)
        assert row["tcv1_out"] <= row["bound_tcv1"] * (1 + 1e-12)
        assert math.sqrt(row["tcv2_out"]) <= row["chain_sqrt_tcv2"] * (1 + 1e-12)


def test_propagation_is_tight_for_scaled_orthogonal_linear_layers():
    """identity activation and W = c Q (Q orthogonal): sqrt(TCV_2) is multiplied by exactly c."""
    mix = data.gaussian_mixture(3, 6, 15, 0.7, seed=3)
    model = models.MLP(6, [6, 6], 3, activation="identity", seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, c in zip(model.layers[:2], (0.5, 3.0)):
            Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
            layer.weight.copy_(c * Q)
    rows = mb.propagation(model, mix.X, mix.y, 3)
    for row in rows:
        assert math.sqrt(row["tcv2_out"]) == pytest.approx(row["bound_sqrt_tcv2"], rel=1e-5)
    assert [r["spec_norm"] for r in rows] == pytest.approx([0.5, 3.0])


def test_gelu_lipschitz_constant_is_the_sup_of_its_derivative():
    z = torch.linspace(-10, 10, 200_001, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.gelu(z).sum().backward()
    assert z.grad.abs().max().item() == pytest.approx(mb.LIPSCHITZ["gelu"], rel=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_hold_at_start_and_after_descent(seed):
    """At Theta_0 and after GD on L_lambda (which descends), tail <= (c) <= chain <= a priori."""
    mix = data.gaussian_mixture(3, 8, 15, 0.4, seed=seed)
    lam = 0.05
    model0 = models.MLP(8, [10, 10], 3, activation="tanh", seed=seed)
    cfg = train.TrainConfig(lam=lam, loss="mse", lr=0.2, steps=200, record_every=50, seed=seed)
    trained = train.train(models.MLP(8, [10, 10], 3, activation="tanh", seed=seed), mix.X, mix.y, cfg,
                          device="cpu", use_cache=False).model
    for model in (model0, trained):
        rows = mb.mixture_bounds(model, model0, mix.X, mix.y, lam, "mse", K=3)
        assert rows[0]["descended"]
        assert rows[0]["sq_norms"] <= rows[0]["budget"]
        for r in rows:
            assert r["tail"] <= r["bound_tcv2"] * (1 + 1e-9)
            assert r["bound_tcv2"] <= r["chain"] * (1 + 1e-9)
            assert r["chain"] <= r["a_priori"] * (1 + 1e-9)
    # training lowered L_lambda, and the first layer is not rank K (the bound is not trivial)
    rows = mb.mixture_bounds(trained, model0, mix.X, mix.y, lam, "mse", K=3)
    assert rows[0]["loss"] < rows[0]["loss_init"]
    assert rows[0]["tail"] > 0
    assert spectral.tail_distance(models.weight_matrices(trained)[0], 3) == pytest.approx(rows[0]["tail"])


def test_refuses_biases_and_unknown_activations():
    mix = data.gaussian_mixture(2, 4, 5, 0.1)
    with pytest.raises(ValueError, match="biases"):
        mb.propagation(models.MLP(4, [4], 2, bias=True), mix.X, mix.y)
    model = models.MLP(4, [4], 2)
    model.config["activation"] = "swish"
    with pytest.raises(ValueError, match="unknown activation"):
        mb.propagation(model, mix.X, mix.y)


def test_predicted_exponents():
    assert mb.predicted_exponents(4) == {"s": 1.0, "lambda": -2.5}


@pytest.mark.parametrize("shape", [(5, 3), (3, 7), (1, 4), (6, 6)])
def test_spectral_norm_is_the_largest_singular_value_of_spectral(shape):
    """||W||_2 = sigma_1 from nrc_utils.spectral (float64), = torch's operator 2-norm, >= every ||W v|| / ||v||."""
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    norm = mb.spectral_norm(W)
    assert norm == spectral.singular_values(W)[0]
    assert norm == pytest.approx(float(torch.linalg.matrix_norm(W.double(), ord=2)), rel=1e-12)
    v = torch.randn(shape[1], 50, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert ((W.double() @ v).norm(dim=0) / v.norm(dim=0)).max().item() <= norm * (1 + 1e-12)
