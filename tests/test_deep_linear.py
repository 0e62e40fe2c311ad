"""nrc_utils.deep_linear: the scalar problem, the forecast, whitened data, the Schatten reduction,
balancedness and its certificate (chapter 05_deep_linear_networks)."""

import math

import numpy as np
import pytest
import torch

from nrc_utils import deep_linear as dl
from nrc_utils import models, train

RNG = np.random.default_rng(0)
CASES = [(float(s), float(lam), L) for L in (1, 2, 3, 4, 5)
         for s, lam in zip(RNG.uniform(0.0, 1.0, 12), 10 ** RNG.uniform(-3, -0.5, 12))]


@pytest.mark.parametrize("sigma,lam,L", CASES)
def test_scalar_minimiser_beats_a_fine_grid(sigma, lam, L):
    s = dl.scalar_minimiser(sigma, lam, L)
    grid = np.linspace(0.0, 1.2 * max(sigma, 1e-3), 200001)
    best_grid = dl.scalar_objective(grid, sigma, lam, L).min()
    assert dl.scalar_objective(s, sigma, lam, L) <= best_grid + 1e-15
    # and the grid point nearest to it is no better than it by more than the grid's resolution
    assert 0 <= s <= sigma


@pytest.mark.parametrize("sigma,lam,L", CASES)
def test_stationary_points_are_roots(sigma, lam, L):
    for s in dl.scalar_stationary_points(sigma, lam, L):
        assert s > 0
        assert abs(s - sigma + lam * s ** (2.0 / L - 1.0)) <= 1e-12 * max(1.0, sigma)


def test_depth_one_and_two_closed_forms():
    for sigma in np.linspace(0, 1, 41):
        for lam in (1e-3, 0.05, 0.3):
            assert dl.scalar_minimiser(sigma, lam, 1) == pytest.approx(sigma / (1 + lam), abs=1e-15)
            assert dl.scalar_minimiser(sigma, lam, 2) == pytest.approx(max(sigma - lam, 0.0), abs=1e-15)
    assert np.allclose(dl.forecast_spectrum([0.5, 0.2, 0.01], 0.1, 2), dl.soft_threshold([0.5, 0.2, 0.01], 0.1))


@pytest.mark.parametrize("L", [3, 4, 6])
@pytest.mark.parametrize("lam", [1e-3, 0.02, 0.1])
def test_jump_for_depth_above_two(L, lam):
    sigma_c, s_c = dl.jump_threshold(lam, L)
    assert s_c > 0 and sigma_c > dl.existence_threshold(lam, L) > 0
    # at the threshold s_c is stationary and as good as 0
    assert abs(s_c - sigma_c + lam * s_c ** (2 / L - 1)) <= 1e-12
    assert dl.scalar_objective(s_c, sigma_c, lam, L) == pytest.approx(dl.scalar_objective(0.0, sigma_c, lam, L), rel=1e-12)
    below, above = sigma_c * (1 - 1e-6), sigma_c * (1 + 1e-6)
    assert dl.scalar_minimiser(below, lam, L) == 0.0
    assert dl.scalar_minimiser(above, lam, L) >= s_c  # a jump, not a continuous rise from 0
    # between the existence and the jump threshold a positive local minimum exists but loses to 0
    mid = 0.5 * (dl.existence_threshold(lam, L) + sigma_c)
    roots = dl.scalar_stationary_points(mid, lam, L)
    assert len(roots) == 2 and dl.scalar_minimiser(mid, lam, L) == 0.0
    assert dl.scalar_objective(roots[1], mid, lam, L) > dl.scalar_objective(0.0, mid, lam, L)
    assert len(dl.scalar_stationary_points(0.9 * dl.existence_threshold(lam, L), lam, L)) == 0


def test_known_thresholds():
    lam = 0.01
    assert dl.jump_threshold(lam, 3)[0] == pytest.approx(2 * lam ** 0.75, rel=1e-12)
    assert dl.jump_threshold(lam, 4)[0] == pytest.approx(1.5 * (2 * lam) ** (2 / 3), rel=1e-12)
    assert dl.jump_threshold(lam, 2) == (lam, 0.0)


def _data(K=4, d=6, n=10, seed=1, sigma=(0.4, 0.3, 0.1, 0.02)):
    return dl.whitened_data(list(sigma), K, d, n, seed=seed)


def test_whitened_data_has_the_chosen_target():
    X, y, A = _data()
    assert dl.whitening_error(X) < 1e-12
    A_hat = dl.target_map(X, y, 4)
    assert np.allclose(A_hat, A, atol=1e-13)
    assert np.allclose(np.linalg.svd(A_hat, compute_uv=False), [0.4, 0.3, 0.1, 0.02], atol=1e-13)
    assert np.bincount(y).tolist() == [10] * 4
    with pytest.raises(ValueError):
        dl.whitened_data([0.6], 4, 6, 10)  # sigma_1 >= 1/sqrt(K)


def _model_with(Ws):
    K, d, width = Ws[-1].shape[0], Ws[0].shape[1], Ws[0].shape[0]
    model = models.deep_linear(d, width, len(Ws), K).double()
    with torch.no_grad():
        for layer, W in zip(models.weight_layers(model), Ws):
            layer.weight.copy_(torch.as_tensor(W))
    return model


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_residual_matrices_equal_autograd(L):
    X, y, A = _data()
    rng = np.random.default_rng(L)
    width, lam = 5, 0.03
    shapes = [(width, 6)] + [(width, width)] * (L - 2) + [(4, width)] if L > 1 else [(4, 6)]
    Ws = [rng.standard_normal(s) / 2 for s in shapes]
    model = _model_with(Ws)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    loss, _ = train.regularised_loss(model, Xt, yt, lam, "mse")
    grads = torch.autograd.grad(loss, [m.weight for m in models.weight_layers(model)])
    for g, R in zip(grads, dl.residual_matrices(Ws, A, lam)):
        assert np.allclose(g.numpy(), R, atol=1e-12)
    # and L_0 = (1/2)||W - A||^2 + c with c = 1/2 - ||A||^2/2 for one-hot targets
    c = 0.5 - 0.5 * np.sum(A ** 2)
    W = dl.end_to_end(Ws)
    L0 = loss.item() - dl.frobenius_penalty(Ws, lam)
    assert L0 == pytest.approx(0.5 * np.sum((W - A) ** 2) + c, rel=1e-12)


@pytest.mark.parametrize("L", [2, 3, 4])
def test_schatten_value_attained_by_balanced_and_exceeded_otherwise(L):
    rng = np.random.default_rng(L)
    W = rng.standard_normal((4, 6)) @ np.diag([1, 1, 1, 1, 0, 0]) @ rng.standard_normal((6, 6))
    lam = 0.1
    target = dl.schatten_penalty(W, lam, L)
    Ws = dl.balanced_factorisation(W, L, width=5, seed=3)
    assert np.allclose(dl.end_to_end(Ws), W, atol=1e-12)
    assert dl.frobenius_penalty(Ws, lam) == pytest.approx(target, rel=1e-12)
    assert np.all(dl.balancedness(Ws) < 1e-12)
    for l in range(L):  # every factor carries sigma_i(W)^(1/L)
        sv = np.linalg.svd(Ws[l], compute_uv=False)[:4]
        assert np.allclose(sv, np.linalg.svd(W, compute_uv=False)[:4] ** (1 / L), rtol=1e-10)
    # unbalanced factorisations of the same W: rescaling, and random invertible changes of basis
    scaled = [M.copy() for M in Ws]
    scaled[0] *= 2.0
    scaled[1] /= 2.0
    assert np.allclose(dl.end_to_end(scaled), W, atol=1e-12)
    assert dl.frobenius_penalty(scaled, lam) > target * (1 + 1e-3)
    assert dl.balancedness(scaled)[0] > 0.1
    for trial in range(20):
        G = [rng.standard_normal((5, 5)) + 3 * np.eye(5) for _ in range(L - 1)]
        other = [M.copy() for M in Ws]
        for l, M in enumerate(G):
            other[l] = M @ other[l]
            other[l + 1] = other[l + 1] @ np.linalg.inv(M)
        assert np.allclose(dl.end_to_end(other), W, atol=1e-9)
        assert dl.frobenius_penalty(other, lam) >= target * (1 - 1e-12)


@pytest.mark.parametrize("L", [2, 3, 4])
def test_forecast_is_a_stationary_point_with_the_forecast_loss(L):
    sigma = [0.45, 0.3, 0.12, 0.04]
    X, y, A = _data(sigma=sigma)
    lam = 0.02
    s = dl.forecast_spectrum(sigma, lam, L)
    U, _, Vt = np.linalg.svd(A, full_matrices=False)
    W = U @ np.diag(s) @ Vt
    Ws = dl.balanced_factorisation(W, L, width=5, seed=0)
    Rs = dl.residual_matrices(Ws, A, lam)
    assert max(np.linalg.norm(R) for R in Rs) < 1e-12
    model = _model_with(Ws)
    loss, _ = train.regularised_loss(model, torch.as_tensor(X), torch.as_tensor(y), lam, "mse")
    assert loss.item() == pytest.approx(dl.forecast_loss(sigma, lam, L, 0.5 - 0.5 * np.sum(A ** 2)), rel=1e-12)
    # a network that differs from the forecast in one singular value has a larger loss
    s2 = s.copy()
    s2[1] *= 0.9
    W2 = dl.balanced_factorisation(U @ np.diag(s2) @ Vt, L, width=5)
    loss2, _ = train.regularised_loss(_model_with(W2), torch.as_tensor(X), torch.as_tensor(y), lam, "mse")
    assert loss2.item() > loss.item()
    c, off = dl.in_basis_of(W, A)
    assert np.allclose(c, s, atol=1e-12) and off < 1e-12


def test_balancedness_certificate_holds_for_any_weights():
    X, y, A = _data()
    rng = np.random.default_rng(5)
    for L in (2, 3, 4):
        for trial in range(10):
            shapes = [(5, 6)] + [(5, 5)] * (L - 2) + [(4, 5)]
            Ws = [rng.standard_normal(s) * rng.uniform(0.1, 2) for s in shapes]
            lam = float(10 ** rng.uniform(-3, 0))
            Rs = dl.residual_matrices(Ws, A, lam)
            bound = dl.balancedness_certificate(Ws, Rs, lam)
            for l in range(L - 1):
                B = Ws[l + 1].T @ Ws[l + 1] - Ws[l] @ Ws[l].T
                # the identity behind it, exactly
                assert np.allclose(lam * B, Ws[l + 1].T @ Rs[l + 1] - Rs[l] @ Ws[l].T, atol=1e-10)
                assert np.linalg.norm(B) <= bound[l] * (1 + 1e-12)


def test_balancedness_is_scale_free_and_nan_for_zero():
    rng = np.random.default_rng(2)
    Ws = [rng.standard_normal((3, 4)), rng.standard_normal((2, 3))]
    b = dl.balancedness(Ws)
    assert dl.balancedness([3 * Ws[0], 3 * Ws[1]])[0] == pytest.approx(b[0])
    assert math.isnan(dl.balancedness([np.zeros((3, 4)), np.zeros((2, 3))])[0])


def test_scalar_minimiser_breaks_a_tie_at_the_jump_threshold_towards_zero():
    """``phi(0) = phi(s_c)`` at ``sigma_c`` in real arithmetic; in floating point about half of these
    thresholds used to return ``s_c`` (round-off decided). The docstring promises 0."""
    for L in (3, 4, 5, 8):
        for lam in np.geomspace(1e-4, 0.5, 40):
            sigma_c, s_c = dl.jump_threshold(float(lam), L)
            assert dl.scalar_minimiser(sigma_c, float(lam), L) == 0.0
            # just above the threshold (beyond the tie tolerance) the jump is there
            assert dl.scalar_minimiser(sigma_c * (1 + 1e-12), float(lam), L) >= s_c * (1 - 1e-9)


def test_the_tie_tolerance_leaves_convex_depths_alone():
    lam = 0.1
    for sigma in (lam * (1 + 1e-12), lam * (1 + 1e-9), 0.3):
        assert dl.scalar_minimiser(sigma, lam, 2) == sigma - lam  # soft thresholding, however close to lambda
    assert dl.scalar_minimiser(lam, lam, 2) == 0.0
    assert dl.scalar_minimiser(1e-9, lam, 1) == pytest.approx(1e-9 / (1 + lam), rel=1e-15)


@pytest.mark.parametrize("L", [3, 4])
def test_in_window_between_the_existence_and_the_jump_threshold(L):
    lam = 0.01
    sigma_e, (sigma_c, _) = dl.existence_threshold(lam, L), dl.jump_threshold(lam, L)
    assert dl.in_window(0.5 * (sigma_e + sigma_c), lam, L)
    assert not dl.in_window(sigma_e * 0.99, lam, L) and not dl.in_window(sigma_c * 1.01, lam, L)
    assert not dl.in_window(sigma_e, lam, L) and not dl.in_window(sigma_c, lam, L)  # open interval


def test_in_window_is_never_true_for_convex_depths():
    assert not any(dl.in_window(s, 0.01, L) for L in (1, 2) for s in np.linspace(0, 0.5, 50))


def test_stationary_set_distance_is_zero_on_every_branch():
    lam, L = 0.01, 3
    sigma = 0.5 * (dl.existence_threshold(lam, L) + dl.jump_threshold(lam, L)[0])
    small, large = dl.scalar_stationary_points(sigma, lam, L)
    for c in (0.0, small, large):
        assert dl.stationary_set_distance(c, sigma, lam, L) == 0.0
    assert dl.stationary_set_distance(large + 1e-3, sigma, lam, L) == pytest.approx(1e-3)
    # below the existence threshold only 0 is stationary
    assert dl.stationary_set_distance(0.02, 0.5 * dl.existence_threshold(lam, L), lam, L) == 0.02


def test_whitened_loss_constant_completes_the_square():
    """``(1/(2N))||X W^T - Y||_F^2 = (1/2)||W - A||_F^2 + c`` on whitened inputs, for any ``W``."""
    X, y, A = _data()
    Y = np.eye(A.shape[0])[y]
    c = dl.whitened_loss_constant(A)
    assert c == pytest.approx(0.5 - 0.5 * np.sum(A ** 2), rel=1e-15)
    assert dl.whitened_loss_constant(A, Y) == pytest.approx(c, rel=1e-14)
    rng = np.random.default_rng(3)
    for _ in range(3):
        W = rng.standard_normal(A.shape)
        direct = np.sum((X @ W.T - Y) ** 2) / (2 * len(y))
        assert direct == pytest.approx(0.5 * np.sum((W - A) ** 2) + c, rel=1e-12)
    # targets that are not one-hot: the constant follows their norm
    assert dl.whitened_loss_constant(A, 2 * Y) == pytest.approx(2.0 - 0.5 * np.sum(A ** 2), rel=1e-14)
