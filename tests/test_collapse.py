"""Tests for nrc_utils.collapse (the collapse measures of chapter 3, definition def-tcv)."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nrc_utils import collapse


def random_features(N, D, K, seed=0, balanced=True, spread=1.0):
    rng = np.random.default_rng(seed)
    if balanced:
        y = np.repeat(np.arange(K), N // K)
    else:
        y = np.concatenate([np.arange(K), rng.integers(0, K, N - K)])  # every group non-empty
    rng.shuffle(y)
    means = 3.0 * rng.standard_normal((K, D))
    H = means[y] + spread * rng.standard_normal((len(y), D))
    return H, y


def direct(H, y, K):
    """The textbook formulas, with D x D matrices and a pseudo-inverse."""
    N = len(y)
    mu_G = H.mean(0)
    mus = np.stack([H[y == c].mean(0) for c in range(K)])
    n = np.bincount(y, minlength=K)
    E = H - mus[y]
    Sigma_W = E.T @ E / N
    C = mus - mu_G
    Sigma_B = (C.T * (n / N)) @ C
    G = H - mu_G
    Sigma_T = G.T @ G / N
    nc1 = np.trace(Sigma_W @ np.linalg.pinv(Sigma_B, rtol=1e-10, hermitian=True)) / K
    return dict(Sigma_W=Sigma_W, Sigma_B=Sigma_B, Sigma_T=Sigma_T, nc1=nc1, mus=mus, E=E, G=G)


@pytest.mark.parametrize(
    "N,D,K,balanced",
    [(60, 8, 3, True), (61, 8, 3, False), (40, 3, 5, True), (53, 3, 5, False), (100, 20, 10, False), (30, 1, 3, True)],
)
def test_nc1_and_traces_match_direct_formulas(N, D, K, balanced):
    H, y = random_features(N, D, K, seed=N + D, balanced=balanced)
    ref = direct(H, y, K)
    st_ = collapse.collapse_stats(H, y, K)
    assert st_.nc1 == pytest.approx(ref["nc1"], rel=1e-9)
    assert st_.rank_between == min(K - 1, D)
    assert st_.tr_within == pytest.approx(np.trace(ref["Sigma_W"]), rel=1e-12)
    assert st_.tr_between == pytest.approx(np.trace(ref["Sigma_B"]), rel=1e-12)
    assert st_.tr_total == pytest.approx(np.trace(ref["Sigma_T"]), rel=1e-12)
    assert st_.tr_total == pytest.approx(st_.tr_within + st_.tr_between, rel=1e-12)
    assert st_.within_between_ratio == pytest.approx(np.trace(ref["Sigma_W"]) / np.trace(ref["Sigma_B"]), rel=1e-12)
    np.testing.assert_allclose(st_.means, ref["mus"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st_.global_mean, H.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(st_.counts, np.bincount(y, minlength=K))
    assert (st_.K, st_.N, st_.D) == (K, N, D)


def test_balanced_sigma_b_equals_papyan_normalisation():
    H, y = random_features(60, 6, 4, seed=1)
    ref = direct(H, y, 4)
    C = ref["mus"] - H.mean(0)
    np.testing.assert_allclose(ref["Sigma_B"], C.T @ C / 4, rtol=1e-12)
    assert collapse.collapse_stats(H, y).tr_between == pytest.approx(np.trace(C.T @ C) / 4, rel=1e-12)


def test_cdnv_matches_definition():
    H, y = random_features(45, 5, 3, seed=2, balanced=False)
    st_ = collapse.collapse_stats(H, y, 3)
    mus = np.stack([H[y == c].mean(0) for c in range(3)])
    var = [np.mean(np.sum((H[y == c] - mus[c]) ** 2, axis=1)) for c in range(3)]
    expected = np.full((3, 3), np.nan)
    for a, b in itertools.permutations(range(3), 2):
        expected[a, b] = (var[a] + var[b]) / (2 * np.sum((mus[a] - mus[b]) ** 2))
    np.testing.assert_allclose(st_.cdnv_matrix, expected, rtol=1e-12)
    assert st_.cdnv == pytest.approx(np.mean([expected[0, 1], expected[0, 2], expected[1, 2]]), rel=1e-12)


def test_perfect_collapse_gives_zero():
    rng = np.random.default_rng(3)
    K, D = 4, 7
    mus = rng.standard_normal((K, D))
    y = np.array([0, 1, 2, 3, 0, 0, 1, 2, 2, 2, 3, 1, 0])
    H = mus[y]
    st_ = collapse.collapse_stats(H, y, K)
    for value in (st_.nc1, st_.cdnv, st_.tcv1, st_.tcv2, st_.tr_within, st_.within_between_ratio,
                  st_.tcv1_normalised, st_.tcv2_normalised):
        assert abs(value) < 1e-12
    assert st_.tr_between > 0.1


def test_tcv_by_hand():
    # class 0: points (0,0), (2,0) -> mean (1,0), residual norms 1, 1
    # class 1: points (0,3), (0,3), (0,6) -> mean (0,4), residual norms 1, 1, 2
    H = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 3.0], [0.0, 6.0]])
    y = np.array([0, 0, 1, 1, 1])
    st_ = collapse.collapse_stats(torch.tensor(H, dtype=torch.float32), torch.tensor(y), K=2)
    assert st_.tcv1 == pytest.approx(6.0)
    assert st_.tcv2 == pytest.approx(8.0)
    mu_G = H.mean(0)  # (0.4, 2.4)
    dist = np.linalg.norm(H - mu_G, axis=1)
    assert st_.tcv1_normalised == pytest.approx(6.0 / dist.sum())
    assert st_.tcv2_normalised == pytest.approx(8.0 / np.sum(dist**2))
    assert st_.tr_within == pytest.approx(8.0 / 5)
    # CDNV: Var_0 = 1, Var_1 = 2, ||mu_0 - mu_1||^2 = 1 + 16
    assert st_.cdnv == pytest.approx(3.0 / 34.0)
    assert st_.as_dict()["tcv1"] == pytest.approx(6.0)


@pytest.mark.parametrize("batch_size", [1, 17, None])
def test_streaming_equals_in_memory(batch_size):
    H, y = random_features(97, 6, 5, seed=4, balanced=False)
    full = collapse.collapse_stats(H, y, 5)
    streamed = collapse.collapse_stats(H, y, 5, batch_size=batch_size)
    for key, value in full.as_dict().items():
        assert streamed.as_dict()[key] == pytest.approx(value, rel=1e-10), key
    np.testing.assert_allclose(streamed.cdnv_matrix, full.cdnv_matrix, rtol=1e-10)
    np.testing.assert_allclose(streamed.means, full.means, rtol=1e-12)


def test_collapse_stats_stream_calls_batches_twice_and_accepts_torch():
    H, y = random_features(90, 4, 3, seed=5)
    Ht = torch.tensor(H, dtype=torch.float64)
    yt = torch.tensor(y)
    calls = []

    def batches():
        calls.append(1)
        perm = torch.randperm(90, generator=torch.Generator().manual_seed(len(calls)))
        for idx in perm.split(17):  # a different order in each pass is fine
            yield Ht[idx], yt[idx]

    st_ = collapse.collapse_stats_stream(batches, K=3)
    assert len(calls) == 2
    assert st_.nc1 == pytest.approx(direct(H, y, 3)["nc1"], rel=1e-9)


def test_image_shaped_features_are_flattened():
    rng = np.random.default_rng(6)
    H = rng.standard_normal((20, 2, 3, 3)).astype(np.float32)
    y = np.arange(20) % 4
    a = collapse.collapse_stats(H, y)
    b = collapse.collapse_stats(H.reshape(20, -1), y)
    assert a.D == 18 and a.nc1 == pytest.approx(b.nc1, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(c=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_scale_behaviour(c, seed):
    H, y = random_features(40, 5, 4, seed=seed, balanced=False)
    a = collapse.collapse_stats(H, y, 4)
    b = collapse.collapse_stats(c * H, y, 4)
    assert b.tcv2 == pytest.approx(c**2 * a.tcv2, rel=1e-9)
    assert b.tcv1 == pytest.approx(c * a.tcv1, rel=1e-9)
    for key in ("tcv1_normalised", "tcv2_normalised", "nc1", "cdnv", "within_between_ratio"):
        assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-8), key


def test_translation_invariance():
    H, y = random_features(50, 4, 3, seed=7)
    a = collapse.collapse_stats(H, y)
    b = collapse.collapse_stats(H + 1e3, y)
    for key in ("nc1", "cdnv", "tcv1", "tcv2", "tr_within", "tr_between"):
        assert getattr(b, key) == pytest.approx(getattr(a, key), rel=1e-7), key


def test_empty_group_is_skipped():
    H, y = random_features(30, 5, 3, seed=8)
    y4 = np.where(y == 2, 3, y)  # K=4 with group 2 empty
    a = collapse.collapse_stats(H, y4, K=4)
    b = collapse.collapse_stats(H, np.where(y4 == 3, 2, y4), K=3)
    assert a.counts[2] == 0 and np.all(np.isnan(a.means[2]))
    for key in ("nc1", "cdnv", "tcv1", "tcv2", "tr_within", "tr_between", "tr_total"):
        assert getattr(a, key) == pytest.approx(getattr(b, key), rel=1e-12), key
    assert np.all(np.isnan(a.cdnv_matrix[2]))


def test_single_group_has_undefined_nc1_not_an_error():
    H = np.random.default_rng(9).standard_normal((10, 3))
    st_ = collapse.collapse_stats(H, np.zeros(10, dtype=int), K=1)
    assert math.isnan(st_.nc1) and math.isnan(st_.cdnv)
    assert st_.within_between_ratio == math.inf
    assert st_.tcv2_normalised == pytest.approx(1.0)


def test_accumulator_errors_are_clear():
    acc = collapse.CollapseAccumulator(K=3)
    with pytest.raises(RuntimeError, match="add_means"):
        acc.add_within(np.zeros((2, 4)), [0, 1])
    acc = collapse.CollapseAccumulator(K=3)
    acc.add_means(np.ones((3, 4)), [0, 1, 2])
    with pytest.raises(RuntimeError, match="add_within"):
        acc.result()
    with pytest.raises(ValueError, match="0..2"):
        acc.add_means(np.ones((2, 4)), [0, 5])
    with pytest.raises(ValueError, match="D=5"):
        acc.add_means(np.ones((2, 5)), [0, 1])
    with pytest.raises(ValueError, match="integers"):
        acc.add_means(np.ones((2, 4)), [0.0, 1.0])
    acc.add_within(np.ones((2, 4)), [0, 1])
    with pytest.raises(RuntimeError, match="same batches"):
        acc.result()
    with pytest.raises(RuntimeError, match="after add_within"):
        acc.add_means(np.ones((1, 4)), [0])


def test_kmeans_partition_recovers_blobs_up_to_relabelling():
    rng = np.random.default_rng(10)
    centres = 20.0 * np.eye(4, 6)
    y = np.repeat(np.arange(4), 25)
    H = centres[y] + 0.5 * rng.standard_normal((100, 6))
    labels = collapse.kmeans_partition(torch.tensor(H, dtype=torch.float32), K=4, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (100,)
    # a bijection between clusters and classes
    pairs = set(zip(y.tolist(), labels.tolist()))
    assert len(pairs) == 4 and len({p[1] for p in pairs}) == 4
    # clusters as a partition: the collapse measures accept them like classes
    assert collapse.collapse_stats(H, labels, 4).nc1 == pytest.approx(collapse.collapse_stats(H, y, 4).nc1, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.int32])
def test_any_torch_dtype_is_accumulated_in_float64(dtype):
    H = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 3.0], [0.0, 6.0]]).to(dtype)
    st_ = collapse.collapse_stats(H, torch.tensor([0, 0, 1, 1, 1]), K=2)
    assert st_.means.dtype == np.float64
    assert st_.tcv2 == pytest.approx(8.0, rel=1e-12)
