"""Tests for nrc_utils.spectral (the rank measures of chapter 3)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nrc_utils import spectral


def planted(m: int, n: int, sigmas, seed: int = 0) -> np.ndarray:
    """U diag(sigmas) V^T with random orthonormal U (m x r), V (n x r)."""
    rng = np.random.default_rng(seed)
    r = len(sigmas)
    U, _ = np.linalg.qr(rng.standard_normal((m, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return U @ np.diag(sigmas) @ V.T


def truncated_svd(W: np.ndarray, K: int) -> np.ndarray:
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    return U[:, :K] @ np.diag(s[:K]) @ Vt[:K]


@pytest.mark.parametrize("r", [1, 2, 5, 10, 30])
def test_planted_rank_recovered(r):
    rng = np.random.default_rng(r)
    sigmas = np.sort(rng.uniform(0.5, 3.0, r))[::-1]
    W = planted(50, 40, sigmas, seed=r)
    assert spectral.numerical_rank(W) == r
    assert spectral.energy_rank(W, energy=1 - 1e-9) == r
    assert spectral.energy_rank(W, energy=1.0) >= r


@pytest.mark.parametrize("r", [1, 3, 8, 20])
def test_equal_singular_values_effective_and_stable_rank(r):
    W = planted(40, 30, np.full(r, 2.5), seed=r)
    assert spectral.effective_rank(W) == pytest.approx(r, rel=1e-9)
    assert spectral.stable_rank(W) == pytest.approx(r, rel=1e-9)
    assert spectral.numerical_rank(W) == r


def test_singular_values_match_numpy_and_accept_torch():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((7, 5))
    s = spectral.singular_values(W)
    assert s.dtype == np.float64
    np.testing.assert_allclose(s, np.linalg.svd(W, compute_uv=False))
    assert np.all(np.diff(s) <= 0)
    s_torch = spectral.singular_values(torch.tensor(W, dtype=torch.float32, requires_grad=True))
    assert s_torch.dtype == np.float64
    np.testing.assert_allclose(s_torch, s, rtol=1e-5)


def test_one_dimensional_input_is_singular_values():
    sv = np.array([1.0, 3.0, 2.0])  # unsorted on purpose
    np.testing.assert_array_equal(spectral.singular_values(sv), [3.0, 2.0, 1.0])
    assert spectral.numerical_rank(sv) == 3
    assert spectral.stable_rank(sv) == pytest.approx((9 + 4 + 1) / 9)
    assert spectral.tail_distance(sv, 1) == pytest.approx(math.sqrt(5))
    # the same numbers from the matrix and from its singular values
    W = planted(6, 4, [3.0, 2.0, 1.0])
    for f in (spectral.stable_rank, spectral.effective_rank, spectral.numerical_rank, spectral.energy_rank):
        assert f(W) == pytest.approx(f(sv), rel=1e-12)
    with pytest.raises(ValueError, match=">= 0"):
        spectral.numerical_rank(np.array([1.0, -1.0]))


def test_zero_matrix_has_rank_zero_and_no_nan():
    Z = np.zeros((5, 3))
    assert spectral.numerical_rank(Z) == 0
    assert spectral.stable_rank(Z) == 0.0
    assert spectral.effective_rank(Z) == 0.0
    assert spectral.energy_rank(Z) == 0
    assert spectral.tail_distance(Z, 0) == 0.0
    (row,) = spectral.rank_report([Z], K=2)
    assert not any(isinstance(v, float) and math.isnan(v) for v in row.values())
    assert row["relative_tail"] == 0.0 and row["sigma_max"] == 0.0


def test_bad_inputs_raise_one_clear_line():
    with pytest.raises(ValueError, match="reshape conv kernels"):
        spectral.singular_values(np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="energy"):
        spectral.energy_rank(np.eye(3), energy=0.0)
    with pytest.raises(ValueError, match="K must be"):
        spectral.tail_distance(np.eye(3), -1)
    with pytest.raises(ValueError, match="NaN"):
        spectral.singular_values(np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("K", [0, 1, 3, 6, 10])
def test_tail_distance_equals_distance_to_truncated_svd(K):
    rng = np.random.default_rng(K)
    W = rng.standard_normal((9, 6))
    direct = np.linalg.norm(W - truncated_svd(W, K), "fro")
    assert spectral.tail_distance(W, K) == pytest.approx(direct, rel=1e-10, abs=1e-12)


def test_rank_report_fields():
    W1 = planted(8, 5, [4.0, 1.0])
    W2 = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    rep = spectral.rank_report([W1, W2], K=1)
    assert [r["layer"] for r in rep] == [1, 2]
    assert rep[0]["shape"] == (8, 5) and rep[1]["shape"] == (3, 8)
    assert rep[0]["numerical_rank"] == 2
    assert rep[0]["tail_distance"] == pytest.approx(1.0)
    assert rep[0]["relative_tail"] == pytest.approx(1.0 / math.sqrt(17.0))
    assert rep[0]["sigma_max"] == pytest.approx(4.0)
    assert set(rep[1]) == {
        "layer", "shape", "numerical_rank", "stable_rank", "effective_rank",
        "energy_rank", "tail_distance", "relative_tail", "sigma_max",
    }
    with pytest.raises(ValueError, match="layer 1"):
        spectral.rank_report([np.zeros((2, 2, 3))], K=1)


# ---- property tests -------------------------------------------------------------

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)
matrices = st.tuples(st.integers(1, 7), st.integers(1, 7)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=finite)
)
scales = st.floats(1e-3, 1e3).flatmap(lambda c: st.sampled_from([c, -c]))


@settings(max_examples=60, deadline=None)
@given(W=matrices, c=scales)
def test_rank_measures_invariant_under_scaling(W, c):
    # W -> c W multiplies every singular value by |c|; the rank measures are relative
    s = spectral.singular_values(W)
    cs = spectral.singular_values(c * W)
    np.testing.assert_allclose(cs, abs(c) * s, rtol=1e-9, atol=1e-9 * abs(c) * (s[0] + 1e-300))
    # compare on exactly-scaled singular values so thresholds are not straddled by round-off
    scaled = abs(c) * s
    assert spectral.numerical_rank(scaled) == spectral.numerical_rank(s)
    assert spectral.energy_rank(scaled) == spectral.energy_rank(s)
    assert spectral.stable_rank(scaled) == pytest.approx(spectral.stable_rank(s), rel=1e-12)
    assert spectral.effective_rank(scaled) == pytest.approx(spectral.effective_rank(s), rel=1e-12)
    # the matrix route agrees for the smooth measures
    assert spectral.stable_rank(c * W) == pytest.approx(spectral.stable_rank(W), rel=1e-7, abs=1e-12)
    assert spectral.effective_rank(c * W) == pytest.approx(spectral.effective_rank(W), rel=1e-7, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(W=matrices, K=st.integers(0, 8))
def test_tail_distance_matches_truncated_svd_property(W, K):
    direct = np.linalg.norm(W - truncated_svd(W, K), "fro")
    scale = np.linalg.norm(W) + 1.0
    assert abs(spectral.tail_distance(W, K) - direct) <= 1e-9 * scale


@settings(max_examples=60, deadline=None)
@given(W=matrices)
def test_rank_measures_are_ordered_and_bounded(W):
    s = spectral.singular_values(W)
    exact = spectral.numerical_rank(s, rtol=0.0)  # number of nonzero singular values
    assert 0 <= spectral.numerical_rank(s) <= exact <= min(W.shape)
    if exact == 0:
        return
    assert 1 - 1e-12 <= spectral.stable_rank(s) <= exact + 1e-9
    assert 1 - 1e-12 <= spectral.effective_rank(s) <= exact + 1e-9
    energies = [0.5, 0.9, 0.99, 1.0]
    ranks = [spectral.energy_rank(s, e) for e in energies]
    assert ranks == sorted(ranks) and 1 <= ranks[0] and ranks[-1] <= exact
    tails = [spectral.tail_distance(s, k) for k in range(len(s) + 2)]
    assert all(a >= b for a, b in zip(tails, tails[1:]))
    assert tails[0] == pytest.approx(np.linalg.norm(W), rel=1e-9)
    assert tails[-1] == 0.0


def test_loglog_slope_recovers_power_laws():
    x = np.array([0.01, 0.03, 0.1, 0.3])
    assert spectral.loglog_slope(x, 5 * x ** -1.5) == pytest.approx(-1.5)
    assert spectral.loglog_slope(x, np.array([1.0, 0.0, np.nan, 2.0])) == pytest.approx(math.log(2) / math.log(30))
    assert math.isnan(spectral.loglog_slope([1.0, 1.0], [1.0, 2.0]))


def test_ratio_has_one_meaning_for_zero_denominators():
    assert spectral.ratio(3.0, 4.0) == 0.75
    assert spectral.ratio(2.0, 0.0) == math.inf
    assert math.isnan(spectral.ratio(0.0, 0.0))  # undefined: callers that mean 0 say so themselves


def test_residual_of_an_exactly_stationary_zero_network_is_zero():
    from nrc_utils import gradients, models

    model = models.MLP(4, [5, 5], 3, activation="tanh", bias=False, seed=0).double()
    for p in model.parameters():
        p.data.zero_()
    X, y = torch.randn(12, 4, dtype=torch.float64), torch.arange(12) % 3
    assert gradients.stationarity_residuals(model, X, y, lam=0.1, loss="mse") == [0.0, 0.0, 0.0]


# ---- top_k_projection / outside_top_k (chapter 3: where the bound's slack lies) ----


@pytest.mark.parametrize("K", [0, 1, 3, 5])
def test_outside_top_k_of_W_itself_is_the_tail_distance(K):
    """Eckart-Young: ||W - P_U W P_V||_F = ||W - W_K||_F = dist_F(W, M_K)."""
    W = np.random.default_rng(K).standard_normal((7, 5))
    assert spectral.outside_top_k(W, W, K) == pytest.approx(spectral.tail_distance(W, K), rel=1e-10, abs=1e-12)
    P = spectral.top_k_projection(W, W, K).numpy()
    assert np.allclose(P, truncated_svd(W, K) if K else np.zeros_like(W), atol=1e-12)


def test_top_k_projection_is_a_projection_and_accepts_torch():
    rng = np.random.default_rng(1)
    W, M = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    P1 = spectral.top_k_projection(M, W, 2)
    P2 = spectral.top_k_projection(P1, W, 2)
    assert torch.allclose(P1, P2, atol=1e-12)  # P_U (P_U M P_V) P_V = P_U M P_V
    assert P1.dtype == torch.float64
    t = spectral.outside_top_k(torch.tensor(M, dtype=torch.float32), torch.tensor(W), 2)
    assert t == pytest.approx(spectral.outside_top_k(M.astype(np.float32).astype(np.float64), W, 2), rel=1e-12)
    # a matrix inside the subspaces has no outside part; the full rank keeps everything
    assert spectral.outside_top_k(P1, W, 2) == pytest.approx(0.0, abs=1e-12)
    Ws, Ms = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    assert spectral.outside_top_k(Ms, Ws, 4) == pytest.approx(0.0, abs=1e-12)  # square, full rank: nothing outside
    assert spectral.outside_top_k(M, W, 0) == pytest.approx(np.linalg.norm(M), rel=1e-12)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_top_k_projection_refuses_bad_K(bad):
    with pytest.raises(ValueError, match="K must be a non-negative integer"):
        spectral.top_k_projection(np.eye(3), np.eye(3), bad)


def test_top_k_projection_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        spectral.top_k_projection(np.eye(3), np.eye(4), 1)
