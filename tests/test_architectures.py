"""nrc_utils.architectures (chapter 7): the conv gradient as a sum over patches against autograd, its
rank bound, the cluster bounds on rows, the attention balancedness identity (any weights, and at a
polished point), the residual MLP's shapes and its stream symmetry, the sequence task."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrc_utils import architectures as arch
from nrc_utils import module_stationarity as ms
from nrc_utils import spectral


def _images(N=6, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 1, side, side, generator=g, dtype=torch.float64), torch.arange(N) % 3


@pytest.mark.parametrize("bias", [False, True])
def test_conv_gradient_is_the_sum_over_patches_of_delta_times_patch(bias):
    X, y = _images()
    model = arch.ConvNet(1, 8, 3, (2, 3), 3, 1, 2, 4, "tanh", bias, seed=1)
    rows = arch.layer_rows(model, X, y, "ce")
    assert [r.name for r in rows] == ["conv1", "conv2", "fc1", "fc2"]
    for r in rows:
        assert torch.allclose(r.gradient(), r.grad, rtol=0, atol=1e-14 * float(r.grad.abs().max()) + 1e-300)
    c1 = rows[0]
    assert c1.W.shape == (2, 9 + bias) and c1.U.shape == (6 * 36, 9 + bias) and c1.positions == 36
    # the same sum through patch_gradient, from the signals at the conv output
    model = model.double()
    z = model.conv1(X)
    z.retain_grad()
    h = F.avg_pool2d(torch.tanh(z), 1)
    out = model.fc2(torch.tanh(model.fc1(F.adaptive_avg_pool2d(torch.tanh(model.conv2(h)), 2).flatten(1))))
    F.cross_entropy(out, y, reduction="sum").backward()
    patches = arch.conv_patches(X, 3, bias=bias)
    G = arch.patch_gradient(z.grad, patches)
    assert torch.allclose(G, c1.grad, atol=1e-14)


def test_kernel_matrix_acts_on_patches_as_the_convolution():
    X, _ = _images(N=2)
    conv = torch.nn.Conv2d(1, 3, 3, bias=True).double()
    z = conv(X)  # (2, 3, 6, 6)
    P = arch.conv_patches(X, 3, bias=True)  # (2, 36, 10)
    Wb = arch.kernel_matrix(conv.weight, conv.bias)  # (3, 10)
    assert torch.allclose(torch.einsum("oq,ipq->iop", Wb, P), z.flatten(2), atol=1e-13)


def test_conv_gradient_rank_is_bounded_by_the_patch_matrix_not_the_samples():
    # constant images: every 3x3 patch is a multiple of the all-ones vector, so rank U = 1
    g = torch.Generator().manual_seed(3)
    X = torch.randn(40, 1, 1, 1, generator=g, dtype=torch.float64).expand(40, 1, 8, 8).contiguous()
    y = torch.arange(40) % 4
    model = arch.ConvNet(1, 8, 4, (5, 3), 3, 1, 2, 4, "tanh", False, seed=0)
    c1 = arch.layer_rows(model, X, y, "ce")[0]
    rank_U = spectral.numerical_rank(spectral.singular_values(c1.U), 1e-10)
    rank_G = spectral.numerical_rank(spectral.singular_values(c1.grad), 1e-10)
    assert rank_U == 1 and rank_G <= 1 and c1.U.shape[0] == 40 * 36
    # random images: the bound is min(rank U, rank D) and it holds
    X, y = _images(N=40)
    for r in arch.layer_rows(model, X, y, "ce"):
        rk = spectral.numerical_rank(spectral.singular_values(r.grad), 1e-10)
        assert rk <= min(spectral.numerical_rank(spectral.singular_values(r.U), 1e-10),
                         spectral.numerical_rank(spectral.singular_values(r.D), 1e-10))


def test_cluster_bounds_hold_for_any_weights_and_partition():
    X, y = _images(N=12)
    model = arch.ConvNet(1, 8, 3, (4, 6), 3, 1, 2, 5, "tanh", False, seed=2)
    for r in arch.layer_rows(model, X, y, "ce"):
        parts = arch.row_partitions(r, y, 3, [1, 2], seed=0)
        assert set(parts) >= {"class"} and len(parts["class"]) == r.U.shape[0]
        for labels in parts.values():
            b = arch.cluster_bound(r, labels, lam=0.01)
            assert b["tail"] <= b["bound_a"] * (1 + 1e-12) <= b["bound_c"] * (1 + 1e-12)
            assert b["residual_term"] > 0 and 0 <= b["tcv2n"] <= 1 + 1e-12
    # one cluster: TCV_2 is the total variation, so the normalised TCV is 1
    r = arch.layer_rows(model, X, y, "ce")[2]
    b = arch.cluster_bound(r, np.zeros(r.U.shape[0], dtype=np.int64), 0.01)
    assert b["K"] == 1 and b["tcv2n"] == pytest.approx(1.0)


def test_attention_identity_holds_for_any_weights():
    X, y, _ = arch.sequence_task(6, 2, 4, 5, seed=0)
    model = arch.AttentionClassifier(5, 3, 3, 2, seed=4)
    b = arch.attention_balance(model, X, y, lam=0.05)
    assert b["identity_error"] < 1e-12 and b["grad_check"] < 1e-12
    assert b["imbalance"] > 1e-3  # random weights are not balanced
    assert b["certificate"] >= b["imbalance"] * (1 - 1e-12)  # the residual bound


def test_attention_balancedness_and_rank_at_a_polished_point():
    X, y, _ = arch.sequence_task(10, 2, 4, 5, seed=1)
    lam = 0.03
    r = ms.polish(arch.AttentionClassifier(5, 4, 3, 2, seed=0), X, y, lam, "ce", ms.SolverConfig(max_seconds=20))
    assert r.residual <= 1e-10, r.stop
    b = arch.attention_balance(r.model, X, y, lam)
    assert b["imbalance"] < 1e-8
    assert abs(b["nuclear_gap"]) < 1e-8
    rank_M = spectral.numerical_rank(b["sv_M"], 1e-6)
    n_unit = int(np.sum(np.abs(b["sv_G_over_lam"] - 1) < 1e-6))
    assert 1 <= rank_M <= n_unit


def test_residual_mlp_shapes_rows_and_stream_rotation():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(7, 10, generator=g, dtype=torch.float64)
    y = torch.arange(7) % 3
    m = arch.ResidualMLP(10, 6, 4, 2, 3, seed=0).double()
    assert m(X).shape == (7, 3)
    hs = m.stream(X)
    assert len(hs) == 3 and all(h.shape == (7, 6) for h in hs)
    rows = arch.layer_rows(m, X, y, "mse")
    assert [(r.name, tuple(r.W.shape), tuple(r.U.shape)) for r in rows] == [
        ("W_in", (6, 10), (7, 10)), ("W_1,1", (4, 6), (7, 6)), ("W_1,2", (6, 4), (7, 4)),
        ("W_2,1", (4, 6), (7, 6)), ("W_2,2", (6, 4), (7, 4)), ("W_out", (3, 6), (7, 6))]
    for r in rows:
        assert torch.allclose(r.gradient(), r.grad, atol=1e-14)
    # a rotation of the stream changes neither the function nor the penalty
    O, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    out, pen = m(X).detach(), float(sum(p.detach().pow(2).sum() for p in m.parameters()))
    with torch.no_grad():
        m.w_in.weight.copy_(O @ m.w_in.weight)
        m.w_out.weight.copy_(m.w_out.weight @ O.T)
        for a, b in zip(m.w1, m.w2):
            a.weight.copy_(a.weight @ O.T)
            b.weight.copy_(O @ b.weight)
    assert torch.allclose(m(X), out, atol=1e-12)
    assert float(sum(p.detach().pow(2).sum() for p in m.parameters())) == pytest.approx(pen)


def test_sequence_task_and_its_checks():
    X, y, P = arch.sequence_task(4, 3, 5, 7, seed=2)
    assert X.shape == (12, 5, 7) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and P.shape == (3, 7)
    assert torch.all(X[..., -1] == 1)
    Q = P[:, :-1]  # rows m + p_c with m, p_1, ..., p_K orthonormal: Gram matrix 1 + I
    assert np.allclose(Q @ Q.T, 1.0 + np.eye(3))
    with pytest.raises(ValueError, match="orthonormal"):
        arch.sequence_task(2, 4, 3, 5)
    with pytest.raises(ValueError, match="two tokens"):
        arch.sequence_task(2, 2, 1, 6)
    with pytest.raises(ValueError, match="too small"):
        arch.ConvNet(1, 4, 2, kernel=3)
