"""nrc_utils.truncation: truncated networks have the ranks and distances Eckart-Young says,
the truncation curve equals truncating one rank at a time, standardisation uses training
statistics only."""

import numpy as np
import pytest
import torch

from nrc_utils import data, models, spectral, truncation


def _net(seed=0, widths=(12, 9), d_in=7, d_out=4, bias=False):
    return models.MLP(d_in, list(widths), d_out, activation="tanh", bias=bias, seed=seed).double()


@pytest.mark.parametrize("r", [0, 1, 3, 5])
def test_truncate_gives_rank_and_eckart_young_distance(r):
    net = _net()
    cut = truncation.truncate(net, r)
    for W, Wr in zip(models.weight_matrices(net), models.weight_matrices(cut)):
        W, Wr = W.detach(), Wr.detach()
        assert spectral.numerical_rank(Wr, 1e-10) == min(r, min(W.shape))
        # the distance is the tail of the singular values (best rank-r approximation)
        assert torch.linalg.norm(W - Wr).item() == pytest.approx(spectral.tail_distance(W, r), rel=1e-9, abs=1e-12)
        # the kept singular values are the top r of W
        s, sr = spectral.singular_values(W), spectral.singular_values(Wr)
        np.testing.assert_allclose(sr[:r], s[:r], rtol=1e-10)


def test_truncate_leaves_original_and_full_rank_layers_alone():
    net = _net(bias=True)
    before = [p.detach().clone() for p in net.parameters()]
    cut = truncation.truncate(net, 100)
    for p, q, b in zip(net.parameters(), cut.parameters(), before):
        assert torch.equal(p.detach(), b)
        assert torch.equal(q.detach(), b)
    cut1 = truncation.truncate(net, 1)
    for layer, layer1 in zip(models.weight_layers(net), models.weight_layers(cut1)):
        assert torch.equal(layer.bias, layer1.bias)  # biases untouched
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p.detach(), b)


def test_truncate_per_layer_ranks_and_bad_input():
    net = _net()
    cut = truncation.truncate(net, [2, 9, 1])
    ranks = [spectral.numerical_rank(W.detach(), 1e-10) for W in models.weight_matrices(cut)]
    assert ranks == [2, 9, 1]  # W_2 (9 x 12) has full rank 9, kept whole
    with pytest.raises(ValueError):
        truncation.truncate(net, [1, 2])
    with pytest.raises(ValueError):
        truncation.truncate(net, -1)


def test_truncate_relative_keeps_numerical_rank():
    net = _net(seed=3)
    with torch.no_grad():  # make the spectra decay so the threshold bites
        for layer in models.weight_layers(net):
            U, S, Vh = torch.linalg.svd(layer.weight, full_matrices=False)
            layer.weight.copy_((U * (S * 0.3 ** torch.arange(S.numel()))) @ Vh)
    for rtol in (1e-1, 5e-2):
        cut = truncation.truncate_relative(net, rtol)
        for W, Wr in zip(models.weight_matrices(net), models.weight_matrices(cut)):
            expected = spectral.numerical_rank(W.detach(), rtol)
            assert spectral.numerical_rank(Wr.detach(), 1e-12) == expected
            assert expected < min(W.shape)


def test_truncation_curve_matches_truncate_one_rank_at_a_time():
    torch.manual_seed(0)
    net = _net(seed=1)
    X = torch.randn(200, 7, dtype=torch.float64)
    y = net(X).argmax(1)  # labels the full network gets right
    ranks = [1, 2, 3, 5, 9, 12]
    curve = truncation.truncation_curve(net, X, y, ranks)
    expected = [truncation.accuracy(truncation.truncate(net, r), X, y) for r in ranks]
    np.testing.assert_array_equal(curve, expected)
    assert curve[-1] == 1.0  # r = full rank is the network itself
    assert curve[0] < 1.0  # rank one in every layer changes some predictions of a random net


def test_smallest_sufficient_rank_stays_within_tolerance_for_every_larger_rank():
    ranks = [1, 2, 5, 10, 20]
    # 0.95 at r = 2 but a dip at r = 5: the network needs r = 10 to stay within 0.01 of 0.96
    assert truncation.smallest_sufficient_rank(ranks, [0.2, 0.95, 0.90, 0.955, 0.96], 0.96, 0.01) == 10
    assert truncation.smallest_sufficient_rank(ranks, [0.96] * 5, 0.96, 0.0) == 1
    assert truncation.smallest_sufficient_rank(ranks, [0.1, 0.2, 0.3, 0.4, 0.5], 0.96, 0.01) == 20  # none: the last


def test_smallest_sufficient_rank_on_a_curve_and_bad_input():
    net = _net(seed=2)
    X = torch.randn(100, 7, dtype=torch.float64)
    y = net(X).argmax(1)
    ranks = [1, 2, 3, 5, 9, 12]  # 12: every layer whole, the network itself
    curve = truncation.truncation_curve(net, X, y, ranks)
    r = truncation.smallest_sufficient_rank(ranks, curve, 1.0, 0.05)
    assert all(a >= 0.95 for k, a in zip(ranks, curve) if k >= r)
    assert r == 1 or curve[ranks.index(r) - 1] < 0.95
    for bad in (([], [], 1.0, 0.0), ([2, 1], [0.5, 0.5], 1.0, 0.0), ([1, 2], [0.5], 1.0, 0.0),
                ([1, 2], [0.5, 0.5], 1.0, -0.1)):
        with pytest.raises(ValueError):
            truncation.smallest_sufficient_rank(*bad)
