"""Tests for nrc_utils.gradients: signals, gradient ranks, cluster split, certificate, SGD unrolled
(chapter 2: thm-eigenvalue-equation, prop-gradient-rank, prop-sgd-unrolled, prop-cluster-split, the
alignment measures; chapter 3: thm-neural-rank-collapse, cor-numerical-rank).

Every check recomputes the quantity independently (autograd on ``MLP.features``,
numpy SVDs and class means) instead of trusting another function of the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nrc_utils import data, gradients, models, spectral, train
from nrc_utils.gradients import (
    ClusterSplit,
    LayerSignals,
    bias_class_part_bound,
    certificate,
    cluster_split,
    cluster_split_norms,
    gradient_alignment,
    layer_signals,
    minibatch_gradient,
    rank_bound,
    sgd_unrolled,
    stationarity_residuals,
    sum_rank_bound,
)
from nrc_utils.losses import sample_losses
from nrc_utils.spectral import numerical_rank

SLACK = 1e-9  # relative slack of the certificate inequalities
PROPERTY = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_PROGRESS", "0")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def make_data(N: int, d: int, K: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 inputs and labels in which every class 0..K-1 occurs (N >= K)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g, dtype=torch.float64)
    y = (torch.arange(N) % K)[torch.randperm(N, generator=g)]
    return X, y


def make_model(d: int, widths, K: int, act: str = "tanh", bias: bool = False, seed: int = 0) -> models.MLP:
    """A float64 MLP; biases (if any) are drawn at random so that they matter."""
    m = models.MLP(d, widths, K, activation=act, bias=bias, seed=seed).double()
    if bias:
        g = torch.Generator().manual_seed(seed + 1000)
        with torch.no_grad():
            for layer in m.layers:
                layer.bias.copy_(0.5 * torch.randn(layer.bias.shape, generator=g, dtype=torch.float64))
    return m


def reference(model: models.MLP, X: torch.Tensor, y: torch.Tensor, loss: str):
    """Independent ``H_{l-1}``, ``D_l`` and ``grad_{W_l} L_0`` from ``features`` and autograd."""
    with torch.enable_grad():
        hs, zs = model.features(X)
        per_sample = sample_losses(zs[-1], y, loss)
        D = torch.autograd.grad(per_sample.sum(), zs, retain_graph=True)
        G = torch.autograd.grad(per_sample.mean(), [m.weight for m in model.layers])
    return [h.detach() for h in hs], list(D), list(G)


def np_rank(M, rtol: float = 1e-10) -> int:
    s = np.linalg.svd(np.asarray(M, dtype=np.float64), compute_uv=False)
    return int((s > rtol * s[0]).sum()) if s.size and s[0] > 0 else 0


def close(a, b, tol: float = 1e-10) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return (a - b).norm().item() <= tol * max(1.0, b.norm().item())


def ridge_stationary_point(X: torch.Tensor, y: torch.Tensor, K: int, lam: float, bias: bool, decay_bias: bool):
    """Exact minimiser of ``(1/2N) sum ||W x_i + b - y_i||^2 + (lam/2)(||W||^2 [+ ||b||^2])``.

    No bias: ``W* = Y^T X (X^T X + N lam I)^{-1}`` (rows are samples). Decayed bias: the same
    with ``X`` augmented by a column of ones. Undecayed bias: centre ``X`` and ``Y``, then
    ``b* = mean(Y) - W* mean(X)``.
    """
    N, d = X.shape
    Y = F.one_hot(y, K).double()
    if not bias:
        return Y.T @ X @ torch.linalg.inv(X.T @ X + N * lam * torch.eye(d, dtype=torch.float64)), None
    if decay_bias:
        Xa = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], 1)
        T = Y.T @ Xa @ torch.linalg.inv(Xa.T @ Xa + N * lam * torch.eye(d + 1, dtype=torch.float64))
        return T[:, :d], T[:, d]
    xm, ym = X.mean(0), Y.mean(0)
    Xc, Yc = X - xm, Y - ym
    W = Yc.T @ Xc @ torch.linalg.inv(Xc.T @ Xc + N * lam * torch.eye(d, dtype=torch.float64))
    return W, ym - W @ xm


def linear_model_at(W: torch.Tensor, b: torch.Tensor | None) -> models.MLP:
    m = models.MLP(W.shape[1], [], W.shape[0], activation="identity", bias=b is not None).double()
    with torch.no_grad():
        m.layers[0].weight.copy_(W)
        if b is not None:
            m.layers[0].bias.copy_(b)
    return m


# --------------------------------------------------------------------------------------
# layer_signals: (1/N) D^T H is the gradient, and delta_{l,i} is the per-sample signal
# --------------------------------------------------------------------------------------


@PROPERTY
@given(
    widths=st.lists(st.integers(2, 9), min_size=0, max_size=3),
    d=st.integers(2, 9),
    K=st.integers(2, 5),
    N=st.integers(5, 30),
    act=st.sampled_from(["tanh", "gelu", "softplus", "identity", "relu"]),
    loss=st.sampled_from(["mse", "ce"]),
    bias=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_layer_signals_give_the_autograd_gradient(widths, d, K, N, act, loss, bias, seed):
    N = max(N, K)
    X, y = make_data(N, d, K, seed)
    model = make_model(d, widths, K, act, bias, seed)
    sigs = layer_signals(model, X, y, loss)
    hs, D_ref, G_ref = reference(model, X, y, loss)
    assert [s.layer for s in sigs] == list(range(1, len(widths) + 2))
    for sig, h, D, G, layer in zip(sigs, hs, D_ref, G_ref, model.layers):
        assert sig.H.dtype == sig.D.dtype == torch.float64
        assert sig.H.shape == (N, layer.in_features) and sig.D.shape == (N, layer.out_features)
        assert close(sig.H, h, 1e-13)
        assert close(sig.D, D, 1e-12)
        assert close(sig.D.T @ sig.H / N, G, 1e-12)
        assert close(sig.gradient(), G, 1e-12)
    # the last signal is the derivative of the loss with respect to the output
    out = model(X).detach()
    target = F.one_hot(y, K).double()
    expected = out - target if loss == "mse" else torch.softmax(out, 1) - target
    assert close(sigs[-1].D, expected, 1e-12)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_signals_are_per_sample(loss):
    """``delta_{l,i} h_{l-1,i}^T`` is the gradient of ``loss_i`` alone (not only the sum is right)."""
    X, y = make_data(12, 5, 3, seed=3)
    model = make_model(5, [7, 6], 3, "tanh", bias=True, seed=3)
    sigs = layer_signals(model, X, y, loss)
    for i in (0, 5, 11):
        with torch.enable_grad():
            li = sample_losses(model(X[i:i + 1]), y[i:i + 1], loss).sum()
            grads = torch.autograd.grad(li, [m.weight for m in model.layers])
        for sig, g in zip(sigs, grads):
            assert close(torch.outer(sig.D[i], sig.H[i]), g, 1e-12)


def test_signals_refuse_convolutions():
    cnn = models.SmallCNN(image_size=8, channels=(2, 3), hidden=4)
    with pytest.raises(ValueError):
        layer_signals(cnn, torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2]), "mse")


def test_weight_gradients_match_autograd():
    X, y = make_data(20, 6, 4, seed=0)
    model = make_model(6, [5], 4, "gelu", bias=True, seed=0)
    _, _, G = reference(model, X, y, "ce")
    for a, b in zip(gradients.weight_gradients(model, X, y, "ce"), G):
        assert a.dtype == torch.float64 and close(a, b, 1e-13)


# --------------------------------------------------------------------------------------
# Proposition 3.1: mini-batch gradients have rank <= |B| and <= rank of the batch inputs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minibatch_gradient_rank_is_at_most_batch_size(loss, seed):
    d, widths, K, N = 14, [16, 15], 12, 60
    X, y = make_data(N, d, K, seed)
    model = make_model(d, widths, K, "tanh", seed=seed)
    sigs = layer_signals(model, X, y, loss)
    g = torch.Generator().manual_seed(seed)
    for sig in sigs:
        d_out, d_in = sig.D.shape[1], sig.H.shape[1]
        for B in (1, 2, 3, 5, 8, 20, 60):
            batch = torch.randperm(N, generator=g)[:B]
            G = minibatch_gradient(sig, batch)
            # it is the autograd gradient of the batch's summed loss
            with torch.enable_grad():
                Lb = sample_losses(model(X[batch]), y[batch], loss).sum()
                ref = torch.autograd.grad(Lb, model.layers[sig.layer - 1].weight)[0]
            assert close(G, ref, 1e-12)
            r = numerical_rank(G, rtol=1e-10)
            assert r == np_rank(G.numpy())
            assert r <= B
            assert r <= np_rank(sig.H[batch].numpy())
            if B < min(d_out, d_in):
                assert r == B, f"layer {sig.layer}, |B|={B}: generic rank is |B|, got {r}"


@pytest.mark.parametrize("r_in", [1, 2, 3])
def test_minibatch_gradient_rank_is_at_most_input_rank(r_in):
    """First layer: inputs of rank ``r < |B|`` cap the gradient's rank at ``r`` (and it is attained)."""
    N, d, K = 40, 10, 8
    g = torch.Generator().manual_seed(r_in)
    X = torch.randn(N, r_in, generator=g, dtype=torch.float64) @ torch.randn(r_in, d, generator=g, dtype=torch.float64)
    y = torch.arange(N) % K
    model = make_model(d, [12], K, "tanh", seed=r_in)
    sig = layer_signals(model, X, y, "mse")[0]
    for B in (4, 6, 9, 40):
        batch = torch.randperm(N, generator=g)[:B]
        assert np_rank(X[batch].numpy()) == r_in
        assert numerical_rank(minibatch_gradient(sig, batch), rtol=1e-10) == r_in


def test_numerical_rank_of_gradient_matrices():
    assert numerical_rank(torch.zeros(3, 4, dtype=torch.float64), rtol=1e-10) == 0
    u, v = torch.randn(5, 1, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    assert numerical_rank(u @ v, rtol=1e-10) == 1
    M = torch.diag(torch.tensor([1.0, 1e-6, 1e-12], dtype=torch.float64))
    assert numerical_rank(M, rtol=1e-10) == 2  # 1e-12 < 1e-10 * sigma_1
    assert numerical_rank(M, rtol=1e-13) == 3
    # the tolerance is relative to sigma_1: scaling changes nothing
    assert numerical_rank(1e6 * M, rtol=1e-10) == 2 and numerical_rank(1e-6 * M, rtol=1e-10) == 2


# --------------------------------------------------------------------------------------
# Result 3: the cluster split
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [False, True])
def test_cluster_split_sums_to_minus_gradient(loss, bias):
    N, d, K = 50, 9, 4
    X, y = make_data(N, d, K, seed=7)
    model = make_model(d, [10, 8], K, "softplus", bias=bias, seed=7)
    _, _, G = reference(model, X, y, loss)
    for sig, g in zip(layer_signals(model, X, y, loss), G):
        split = cluster_split(sig, y, K)
        assert isinstance(split, ClusterSplit)
        assert (split.class_part + split.variability_part + g).abs().max().item() < 1e-10
        # delta_sums are the per-class sums of the signals
        for c in range(K):
            assert close(split.delta_sums[c], sig.D[y == c].sum(0), 1e-12)
        # the class part has rank <= K, and K is attained here (d_l, d_{l-1} > K)
        assert numerical_rank(split.class_part, rtol=1e-10) <= K
        if min(sig.D.shape[1], sig.H.shape[1]) > K:
            assert numerical_rank(split.class_part, rtol=1e-10) == K
        # the variability part is -(1/N) sum_i delta_i e_i^T with e_i = h_i - mu_{y_i}
        mu = torch.stack([sig.H[y == c].mean(0) for c in range(K)])
        assert close(split.variability_part, -(sig.D.T @ (sig.H - mu[y])) / N, 1e-12)


def test_cluster_split_rank_k_minus_1_when_signals_sum_to_zero():
    N, d, K = 60, 12, 5
    X, y = make_data(N, d, K, seed=11)
    model = make_model(d, [14], 10, "tanh", seed=11)  # 10 outputs > K clusters
    for sig in layer_signals(model, X, y, "mse"):
        centred = LayerSignals(sig.layer, sig.H, sig.D - sig.D.mean(0))
        assert numerical_rank(cluster_split(sig, y, K).class_part, rtol=1e-10) == K
        split = cluster_split(centred, y, K)
        assert split.delta_sums.sum(0).abs().max().item() < 1e-12
        assert numerical_rank(split.class_part, rtol=1e-10) == K - 1


def test_cluster_split_rank_k_minus_1_at_stationary_point_with_undecayed_bias():
    """prop-cluster-split (3): at a stationary point whose biases are not decayed, sum_i delta_i = 0."""
    N, d, K, lam = 40, 8, 4, 0.05
    X, y = make_data(N, d, K, seed=5)
    W, b = ridge_stationary_point(X, y, K, lam, bias=True, decay_bias=False)
    model = linear_model_at(W, b)
    assert max(stationarity_residuals(model, X, y, lam, "mse", decay_bias=False)) < 1e-10
    sig = layer_signals(model, X, y, "mse")[0]
    assert sig.D.sum(0).abs().max().item() < 1e-12
    split = cluster_split(sig, y, K)
    assert numerical_rank(split.class_part, rtol=1e-10) == K - 1
    # contrast: the same layer, decayed bias: sum_i delta_i = -N lam b != 0 and the rank is K
    W2, b2 = ridge_stationary_point(X, y, K, lam, bias=True, decay_bias=True)
    sig2 = layer_signals(linear_model_at(W2, b2), X, y, "mse")[0]
    assert close(sig2.D.sum(0), -N * lam * b2, 1e-10)
    assert numerical_rank(cluster_split(sig2, y, K).class_part, rtol=1e-10) == K


def test_variability_part_vanishes_for_collapsed_inputs():
    """``x_i = mu_{y_i}``: every layer input is collapsed, so B_l = 0 and the certificate is the residual."""
    K, n_per, d = 4, 8, 6
    means = torch.tensor(np.arange(K * d).reshape(K, d) % 5 - 2.0, dtype=torch.float64) / 4  # dyadic
    y = torch.arange(K).repeat_interleave(n_per)
    X = means[y].clone()
    model = make_model(d, [9, 7], K, "tanh", bias=True, seed=2)
    sigs = layer_signals(model, X, y, "ce")
    first = cluster_split(sigs[0], y, K)
    assert torch.count_nonzero(first.variability_part) == 0  # exact: dyadic means, 8 per class
    for sig in sigs:
        split = cluster_split(sig, y, K)
        assert split.variability_part.norm().item() <= 1e-14 * max(1.0, split.class_part.norm().item())
        assert split.class_part.norm().item() > 1e-3
    for row in certificate(model, X, y, 0.1, "ce"):
        assert row["tcv1"] < 1e-12 and row["tcv2"] < 1e-24
        assert math.isclose(row["bound_exact"], row["residual_term"], rel_tol=1e-12, abs_tol=1e-14)


def test_class_means_handles_empty_clusters():
    H = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]], dtype=torch.float64)
    mu = gradients.class_means(H, torch.tensor([0, 0, 2]), 3)
    assert torch.equal(mu, torch.tensor([[2.0, 3.0], [0.0, 0.0], [5.0, 9.0]], dtype=torch.float64))


# --------------------------------------------------------------------------------------
# Result 4: the certificate, for any weights and any partition
# --------------------------------------------------------------------------------------


def check_certificate(model, X, y, lam, loss, labels, K):
    rows = certificate(model, X, y, lam, loss, labels=labels, K=K)
    hs, D_ref, G_ref = reference(model, X, y, loss)
    lab = (y if labels is None else labels).numpy()
    Kc = K if K is not None else int(lab.max()) + 1
    assert len(rows) == len(model.layers)
    N = X.shape[0]
    for l, (row, h, D, G, layer) in enumerate(zip(rows, hs, D_ref, G_ref, model.layers), start=1):
        W = layer.weight.detach()
        h, D = h.numpy(), D.numpy()
        mu = np.zeros((Kc, h.shape[1]))
        for c in range(Kc):
            if (lab == c).any():
                mu[c] = h[lab == c].mean(0)
        E = h - mu[lab]
        S = np.zeros((Kc, D.shape[1]))
        np.add.at(S, lab, D)
        A = -(S.T @ mu) / N  # rank <= K
        Bv = -(D.T @ E) / N
        R = (G + lam * W).numpy()
        s = np.linalg.svd(W.numpy(), compute_uv=False)
        tail = math.sqrt(float(np.sum(s[Kc:] ** 2)))
        e = np.linalg.norm(E, axis=1)
        # the reported numbers are the right ones
        assert row["layer"] == l and row["K"] == Kc and row["N"] == N
        assert math.isclose(row["tail"], tail, rel_tol=1e-12, abs_tol=1e-13)
        assert math.isclose(row["tcv1"], e.sum(), rel_tol=1e-10, abs_tol=1e-12)
        assert math.isclose(row["tcv2"], (e ** 2).sum(), rel_tol=1e-10, abs_tol=1e-12)
        assert math.isclose(row["residual_term"], np.linalg.norm(R) / lam, rel_tol=1e-10, abs_tol=1e-12)
        exact = np.linalg.norm(Bv) / lam + np.linalg.norm(R) / lam
        assert math.isclose(row["bound_exact"], exact, rel_tol=1e-9, abs_tol=1e-12)
        dn = np.linalg.norm(D, axis=1)
        tcv1 = dn.max() * e.sum() / (lam * N) + np.linalg.norm(R) / lam
        tcv2 = np.linalg.norm(dn) * math.sqrt((e ** 2).sum()) / (lam * N) + np.linalg.norm(R) / lam
        assert math.isclose(row["bound_tcv1"], tcv1, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(row["bound_tcv2"], tcv2, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(row["relative_residual"], np.linalg.norm(R) / (lam * W.norm().item()), rel_tol=1e-9)
        assert row["lambda"] == lam
        # the proof, step by step: rank A <= K, Eckart-Young, triangle inequality
        assert np_rank(A) <= Kc
        via_A = np.linalg.norm(W.numpy() - A / lam)
        assert tail <= via_A * (1 + SLACK) + 1e-12
        assert math.isclose(via_A, np.linalg.norm(Bv + R) / lam, rel_tol=1e-8, abs_tol=1e-10)
        # the chain of the certificate
        t, b = row["tail"], row["bound_exact"]
        assert t <= b * (1 + SLACK) + 1e-12
        assert b <= row["bound_tcv1"] * (1 + SLACK) + 1e-12
        assert b <= row["bound_tcv2"] * (1 + SLACK) + 1e-12
    return rows


@PROPERTY
@given(
    widths=st.lists(st.integers(2, 12), min_size=0, max_size=3),  # depth 1-4
    d=st.integers(2, 12),
    K=st.integers(2, 5),
    N=st.integers(2, 40),
    log_lam=st.floats(-4, 0),
    loss=st.sampled_from(["mse", "ce"]),
    act=st.sampled_from(["tanh", "gelu", "relu", "identity"]),
    bias=st.booleans(),
    partition=st.sampled_from(["classes", "random"]),
    K_part=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
def test_certificate_holds_for_random_networks(widths, d, K, N, log_lam, loss, act, bias, partition, K_part, seed):
    N = max(N, K)
    X, y = make_data(N, d, K, seed)
    model = make_model(d, widths, K, act, bias, seed)
    lam = 10.0 ** log_lam
    if partition == "classes":
        check_certificate(model, X, y, lam, loss, None, None)
    else:
        labels = torch.randint(0, K_part, (N,), generator=torch.Generator().manual_seed(seed))
        check_certificate(model, X, y, lam, loss, labels, K_part)


@pytest.fixture(scope="module")
def stationary_net():
    """A tanh MLP 8-12-3 polished to stationarity on a tight Gaussian mixture (about 1-2 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NRC_PROGRESS", "0")
        ds = data.gaussian_mixture(K=3, d=8, n_per_class=15, s=0.02, seed=0)
        cfg = train.TrainConfig(lam=3e-2, lr=0.2, steps=300, polish_tol=1e-9, dtype="float64",
                                polish_max_seconds=30)
        result = train.train(models.MLP(8, [12], 3, seed=0), ds.X, ds.y, cfg, use_cache=False)
    return result.model, ds.X.double(), ds.y, cfg.lam


def test_certificate_is_informative_at_a_stationary_point(stationary_net):
    """Near stationarity the residual term is negligible and the bound is far below ||W||_F."""
    model, X, y, lam = stationary_net
    rows = check_certificate(model, X, y, lam, "mse", None, None)
    first = rows[0]
    W = model.layers[0].weight.detach()
    assert first["relative_residual"] < 1e-6
    assert first["residual_term"] < 1e-3 * first["bound_exact"]
    assert first["bound_exact"] < 0.05 * W.norm().item()
    assert 0 < first["tail"] <= first["bound_exact"]
    # numerical-rank corollary: at eps = 0.1 it certifies rank exactly K
    s = spectral.singular_values(W)
    assert rank_bound(first["bound_exact"], 0.1, 3) == 3
    assert int((s > 0.1).sum()) == 3
    # and with a k-means-like random partition the certificate still holds (but is weaker)
    labels = torch.randint(0, 3, (X.shape[0],), generator=torch.Generator().manual_seed(0))
    rand = check_certificate(model, X, y, lam, "mse", labels, 3)
    assert rand[0]["bound_exact"] > first["bound_exact"]


def test_certificate_at_closed_form_stationary_point():
    """Ridge regression's exact minimiser: residual term ~ 0, bound = ||B||/lambda."""
    X, y = make_data(30, 6, 3, seed=4)
    W, _ = ridge_stationary_point(X, y, 3, 0.1, bias=False, decay_bias=True)
    model = linear_model_at(W, None)
    for K in (1, 2):
        row = check_certificate(model, X, y, 0.1, "mse", torch.arange(30) % K, K)[0]
        assert row["residual_term"] < 1e-12
        assert row["tail"] > 0


def test_certificate_refuses_nonpositive_lambda():
    X, y = make_data(6, 3, 2, seed=0)
    model = make_model(3, [4], 2)
    for lam in (0.0, -1.0):
        with pytest.raises(ValueError):
            certificate(model, X, y, lam, "mse")


def test_certificate_at_zero_weights():
    """W = 0 is a stationary point of a bias-free tanh net; the certificate must not crash there."""
    X, y = make_data(10, 4, 2, seed=0)
    model = models.MLP(4, [5], 2, seed=0, init_scale=0.0).double()
    rows = certificate(model, X, y, 0.1, "mse")
    assert all(r["tail"] == 0.0 and r["bound_exact"] == 0.0 for r in rows)


# --------------------------------------------------------------------------------------
# numerical-rank corollary
# --------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None, database=None)
@given(
    s=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=12),
    K=st.integers(0, 5),
    eps=st.floats(1e-3, 5),
)
def test_rank_bound_holds_with_the_exact_tail(s, K, eps):
    sv = np.sort(np.array(s))[::-1]
    count = int((sv > eps).sum())
    assert count <= rank_bound(spectral.tail_distance(sv, K), eps, K)


def test_rank_bound_is_sharp():
    """K large values plus m values just above eps: count K+m, and the bound is exactly K+m."""
    eps = 0.3
    for K, m in [(0, 1), (1, 4), (3, 2), (2, 7)]:
        sv = np.array([5.0] * K + [eps * (1 + 1e-6)] * m + [eps * 0.5] * 0)
        tail = spectral.tail_distance(sv, K)
        assert int((sv > eps).sum()) == K + m == rank_bound(tail, eps, K)
    assert rank_bound(0.0, 0.1, 4) == 4
    assert rank_bound(0.25, 0.1, 2) == 2 + 6  # floor(6.25)
    assert rank_bound(math.inf, 0.1, 2) > 10**12


@PROPERTY
@given(
    widths=st.lists(st.integers(2, 12), min_size=0, max_size=3),
    d=st.integers(2, 12),
    K=st.integers(2, 5),
    log_lam=st.floats(-4, 0),
    loss=st.sampled_from(["mse", "ce"]),
    seed=st.integers(0, 10_000),
)
def test_rank_bound_on_random_networks(widths, d, K, log_lam, loss, seed):
    X, y = make_data(3 * K + 5, d, K, seed)
    model = make_model(d, widths, K, "tanh", seed=seed)
    for row, layer in zip(certificate(model, X, y, 10.0 ** log_lam, loss), model.layers):
        s = spectral.singular_values(layer.weight)
        for eps in s[0] * np.array([1e-3, 1e-2, 0.1, 0.5, 1.0]):
            assert int((s > eps).sum()) <= rank_bound(row["bound_exact"], float(eps), K)


# --------------------------------------------------------------------------------------
# Result 1: stationarity residuals
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [1e-3, 0.1, 2.0])
def test_stationarity_residual_vanishes_at_ridge_solution(lam):
    """L_0 = (1/2N) sum ||W x_i - y_i||^2: W* = Y^T X (X^T X + N lam I)^{-1} is stationary."""
    X, y = make_data(25, 7, 4, seed=1)
    W, _ = ridge_stationary_point(X, y, 4, lam, bias=False, decay_bias=True)
    model = linear_model_at(W, None)
    r = stationarity_residuals(model, X, y, lam, "mse")
    assert len(r) == 1 and r[0] < 1e-10
    # a perturbation of relative size 1e-3 is seen; a random point is far from stationary
    with torch.no_grad():
        model.layers[0].weight.add_(1e-3 * W.norm() * torch.randn_like(W) / math.sqrt(W.numel()))
    assert stationarity_residuals(model, X, y, lam, "mse")[0] > 1e-6
    assert stationarity_residuals(make_model(7, [], 4, "identity", seed=1), X, y, lam, "mse")[0] > 0.1


@pytest.mark.parametrize("decay_bias", [True, False])
def test_stationarity_residual_with_biases(decay_bias):
    lam = 0.05
    X, y = make_data(30, 5, 3, seed=2)
    W, b = ridge_stationary_point(X, y, 3, lam, bias=True, decay_bias=decay_bias)
    model = linear_model_at(W, b)
    assert stationarity_residuals(model, X, y, lam, "mse", decay_bias=decay_bias)[0] < 1e-10
    # the other convention is not stationary for these weights
    assert stationarity_residuals(model, X, y, lam, "mse", decay_bias=not decay_bias)[0] > 1e-4


def test_stationarity_residual_formula_on_a_random_net():
    lam = 0.02
    X, y = make_data(20, 6, 3, seed=9)
    model = make_model(6, [8, 5], 3, "gelu", bias=True, seed=9)
    params = [p for m in model.layers for p in (m.weight, m.bias)]
    with torch.enable_grad():
        grads = torch.autograd.grad(sample_losses(model(X), y, "ce").mean(), params)
    for decay_bias in (True, False):
        expected = []
        for l, m in enumerate(model.layers):
            gW, gb = grads[2 * l], grads[2 * l + 1]
            bl = lam if decay_bias else 0.0
            num = (gW + lam * m.weight).pow(2).sum() + (gb + bl * m.bias).pow(2).sum()
            den = (lam * m.weight).pow(2).sum() + (bl * m.bias).pow(2).sum()
            expected.append(math.sqrt(num.item() / den.item()))
        got = stationarity_residuals(model, X, y, lam, "ce", decay_bias=decay_bias)
        assert np.allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError):
        stationarity_residuals(model, X, y, 0.0, "ce")


# --------------------------------------------------------------------------------------
# Result 8: gradient alignment
# --------------------------------------------------------------------------------------


def test_alignment_of_identical_gradients():
    G = torch.randn(6, 4, dtype=torch.float64)
    out = gradient_alignment([G, G, 3.0 * G, G])
    assert np.allclose(out["cosine_successive"], 1.0, atol=1e-12)
    assert len(out["cosine_successive"]) == 3
    assert math.isclose(out["effective_rank_stacked"], 1.0, abs_tol=1e-9)
    assert math.isclose(out["effective_rank_sum"], spectral.effective_rank(G), rel_tol=1e-9)


def test_alignment_of_orthogonal_gradients():
    T = 5
    grads = [torch.zeros(T, T, dtype=torch.float64).index_put_((torch.tensor([t]), torch.tensor([t])),
                                                              torch.tensor([1.0], dtype=torch.float64))
             for t in range(T)]
    out = gradient_alignment(grads)
    assert np.allclose(out["cosine_successive"], 0.0, atol=1e-15)
    assert math.isclose(out["effective_rank_stacked"], T, rel_tol=1e-9)
    assert math.isclose(out["effective_rank_sum"], T, rel_tol=1e-9)  # the sum is the identity


def test_alignment_cosines_have_sign_and_value():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    out = gradient_alignment([a, b, -b])
    assert np.allclose(out["cosine_successive"], [1 / math.sqrt(2), -1.0], atol=1e-12)


def test_certificate_per_layer_partitions():
    """A list of partitions, one per layer, gives layer l the row of a single-partition call with the l-th."""
    X, y = make_data(40, 6, 3, seed=5)
    model = make_model(6, [7, 5], 3, "tanh", False, 5)
    g = torch.Generator().manual_seed(1)
    parts = [torch.randint(0, 4, (40,), generator=g) for _ in range(3)]
    rows = certificate(model, X, y, 0.05, "ce", labels=[p.numpy() for p in parts], K=4)
    for l, p in enumerate(parts):
        alone = certificate(model, X, y, 0.05, "ce", labels=p, K=4)[l]
        assert rows[l] == pytest.approx(alone, rel=1e-12)
    # distinct partitions do give distinct bounds (the list is not ignored)
    assert rows[0]["bound_exact"] != certificate(model, X, y, 0.05, "ce", labels=parts[1], K=4)[0]["bound_exact"]
    # a numpy array is accepted like the tensor it holds
    assert certificate(model, X, y, 0.05, "ce", labels=y.numpy()) == certificate(model, X, y, 0.05, "ce")
    with pytest.raises(ValueError, match="one partition per layer"):
        certificate(model, X, y, 0.05, "ce", labels=parts[:2], K=4)


# --------------------------------------------------------------------------------------
# prop-sgd-unrolled: the closed form, and which rank bound holds
# --------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, database=None)
@given(T=st.integers(1, 6), lr=st.floats(0.01, 0.5), lam=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_sgd_unrolled_equals_the_recursion(T, lr, lam, seed):
    """W_T of the closed form = T steps of W <- W - lr (G_t + lam W)."""
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(5, 7, generator=g, dtype=torch.float64)
    grads = [torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(T)]
    W = W0.clone()
    for G in grads:
        W = W - lr * (G + lam * W)
    assert close(sgd_unrolled(W0, grads, lr, lam), W, 1e-12)


def test_sgd_unrolled_equals_torch_sgd_with_weight_decay():
    """The closed form is what torch.optim.SGD(lr, weight_decay=lam) does with the given gradients."""
    g = torch.Generator().manual_seed(3)
    W0 = torch.randn(4, 6, generator=g, dtype=torch.float64)
    grads = [torch.randn(4, 6, generator=g, dtype=torch.float64) for _ in range(5)]
    w = torch.nn.Parameter(W0.clone())
    opt = torch.optim.SGD([w], lr=0.2, weight_decay=0.3)
    for G in grads:
        opt.zero_grad()
        w.grad = G.clone()
        opt.step()
    assert close(sgd_unrolled(W0, grads, 0.2, 0.3), w.detach(), 1e-12)


@settings(max_examples=30, deadline=None, database=None)
@given(T=st.integers(1, 6), ranks=st.lists(st.integers(1, 3), min_size=6, max_size=6),
       shared=st.booleans(), lr=st.floats(0.01, 0.5), lam=st.floats(0.0, 1.0), seed=st.integers(0, 10_000))
def test_prop_sgd_unrolled_rank_bound(T, ranks, shared, lr, lam, seed):
    """rank(W_T - (1 - lr lam)^T W_0) <= min(dim sum of column spaces, dim sum of row spaces)
    <= sum_t rank G_t, for gradients of low rank that share (or not) their column and row spaces."""
    g = torch.Generator().manual_seed(seed)
    d_out, d_in = 9, 11
    U = torch.randn(d_out, 3, generator=g, dtype=torch.float64)
    V = torch.randn(3, d_in, generator=g, dtype=torch.float64)
    grads = []
    for t in range(T):
        r = ranks[t]
        if shared:  # G_t = U C_t V: column space in span U, row space in span V
            grads.append(U[:, :r] @ torch.randn(r, r, generator=g, dtype=torch.float64) @ V[:r])
        else:
            grads.append(torch.randn(d_out, r, generator=g, dtype=torch.float64)
                         @ torch.randn(r, d_in, generator=g, dtype=torch.float64))
    W0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    delta = sgd_unrolled(W0, grads, lr, lam) - (1 - lr * lam) ** T * W0
    b = sum_rank_bound(grads)
    assert np_rank(delta, 1e-9) <= b["bound"] <= sum(np_rank(G) for G in grads)
    assert b["columns"] == np_rank(torch.cat(grads, 1)) and b["rows"] == np_rank(torch.cat(grads, 0))
    if shared:
        assert b["bound"] <= 3


def test_rank_of_the_sgd_sum_is_not_bounded_by_the_span_dimension():
    """The bound rank(W_T - (1 - eta lambda)^T W_0) <= dim span{G_0, ..., G_{T-1}} (the statement before
    the correction) fails: G, G/2, 2G span a line, and W_T has the rank 4 of G."""
    g = torch.Generator().manual_seed(0)
    G = torch.randn(6, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 8, generator=g, dtype=torch.float64)
    grads = [G, 0.5 * G, 2 * G]
    W_T = sgd_unrolled(torch.zeros(6, 8, dtype=torch.float64), grads, 0.1, 0.1)
    b = sum_rank_bound(grads)
    assert b["span"] == 1
    assert np_rank(W_T) == 4 > b["span"]  # the old bound fails
    assert np_rank(W_T) <= b["bound"] == 4  # the corrected bound holds, with equality


def test_sum_rank_bound_refuses_no_gradients():
    with pytest.raises(ValueError, match="at least one"):
        sum_rank_bound([])


# --------------------------------------------------------------------------------------
# prop-cluster-split: the norms of the split, item 3's bound, item 4 only when d_l = K
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_cluster_split_norms_of_a_random_network(loss):
    N, d, K, lam = 48, 9, 4, 0.03
    X, y = make_data(N, d, K, seed=2)
    model = make_model(d, [10, 8], K, "tanh", seed=2)
    _, _, G = reference(model, X, y, loss)
    for sig, layer, g in zip(layer_signals(model, X, y, loss), model.layers, G):
        out = cluster_split_norms(sig, layer.weight, lam, y, K)
        split = cluster_split(sig, y, K)
        lamW = lam * layer.weight.detach()
        assert math.isclose(out["lamW"], lamW.norm().item(), rel_tol=1e-12)
        assert math.isclose(out["A"], split.class_part.norm().item(), rel_tol=1e-12)
        assert math.isclose(out["B"], split.variability_part.norm().item(), rel_tol=1e-12)
        assert math.isclose(out["R"], (g + lamW).norm().item(), rel_tol=1e-10)
        assert out["identity"] < 1e-12 * max(1.0, out["lamW"] + out["A"] + out["B"])
        assert out["rank_A"] == np_rank(split.class_part) <= K


def test_bias_class_part_bound_holds_and_vanishes_at_stationarity():
    """prop-cluster-split (3): sigma_K(A_l) <= ||grad_b L_0|| ||mean_c mu_c||; zero at a stationary point
    with an undecayed bias."""
    N, d, K, lam = 40, 8, 4, 0.05
    X, y = make_data(N, d, K, seed=5)
    model = make_model(d, [7], K, "tanh", bias=True, seed=5)
    for sig in layer_signals(model, X, y, "mse"):
        A = cluster_split(sig, y, K).class_part
        s = np.linalg.svd(A.numpy(), compute_uv=False)
        bound = bias_class_part_bound(sig, y, K)
        assert bound > 0 and s[K - 1] <= bound * (1 + 1e-9)
    W, b = ridge_stationary_point(X, y, K, lam, bias=True, decay_bias=False)
    sig = layer_signals(linear_model_at(W, b), X, y, "mse")[0]
    assert bias_class_part_bound(sig, y, K) < 1e-12


def test_item_4_gives_k_minus_1_only_when_d_l_is_k():
    """Signals that sum to zero over the outputs give rank A_l <= d_l - 1: that is K - 1 when d_l = K
    (the last layer with cross-entropy), but no refinement at all when d_l > K."""
    N, d, K = 60, 12, 4
    X, y = make_data(N, d, K, seed=8)
    for d_out, expected in ((K, K - 1), (K + 5, K)):
        model = make_model(d, [14], d_out, "tanh", seed=8)
        sig = layer_signals(model, X, y, "ce")[-1]  # last layer, cross-entropy: 1^T delta_i = 0
        assert sig.D.sum(1).abs().max().item() < 1e-12
        assert numerical_rank(cluster_split(sig, y, K).class_part, rtol=1e-10) == expected
