"""Tests for nrc_utils.models and nrc_utils.device."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from nrc_utils import device, models


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_PROGRESS", "0")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))


# --------------------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("init_scale", [1.0, 0.3, 2.5])
def test_mlp_init_is_gaussian_with_variance_scale2_over_fan_in(init_scale):
    m = models.MLP(200, [300, 120], 40, seed=7, init_scale=init_scale, bias=True)
    for layer in m.layers:
        W = layer.weight.detach().double().numpy().ravel()
        sd = init_scale / math.sqrt(layer.in_features)
        n = W.size
        assert layer.weight.dtype == torch.float32
        assert abs(W.mean()) < 5 * sd / math.sqrt(n)
        assert abs(W.std() / sd - 1) < 5 / math.sqrt(2 * n)
        # the shape of the distribution, not just two moments
        assert stats.kstest(W / sd, "norm").pvalue > 1e-4
        assert torch.count_nonzero(layer.bias) == 0


def test_mlp_init_is_deterministic_and_layerwise_from_one_generator():
    a = models.MLP(5, [7, 6], 3, seed=11, init_scale=1.5)
    torch.manual_seed(999)  # the global RNG plays no part
    b = models.MLP(5, [7, 6], 3, seed=11, init_scale=1.5)
    c = models.MLP(5, [7, 6], 3, seed=12, init_scale=1.5)
    g = torch.Generator().manual_seed(11)
    for la, lb, lc in zip(a.layers, b.layers, c.layers):
        assert torch.equal(la.weight, lb.weight)
        assert not torch.equal(la.weight, lc.weight)
        expected = torch.randn(la.weight.shape, generator=g) * (1.5 / math.sqrt(la.in_features))
        assert torch.equal(la.weight, expected)
    # init_weights is the same draw
    for w, layer in zip(models.init_weights(models.layer_shapes(5, [7, 6], 3), 11, 1.5), a.layers):
        assert torch.equal(w, layer.weight)


def test_layer_shapes_and_config():
    assert models.layer_shapes(64, [32, 16], 10) == [(32, 64), (16, 32), (10, 16)]
    assert models.layer_shapes(3, [], 2) == [(2, 3)]
    m = models.MLP(6, (4, 5), 2, activation="gelu", bias=True, seed=2, init_scale=0.5)
    assert m.config == {"kind": "mlp", "d_in": 6, "widths": [4, 5], "d_out": 2, "activation": "gelu",
                        "bias": True, "seed": 2, "init_scale": 0.5}
    assert m.depth == 3
    assert [tuple(layer.weight.shape) for layer in m.layers] == [(4, 6), (5, 4), (2, 5)]
    assert isinstance(m.act, nn.GELU)


# --------------------------------------------------------------------------------------
# forward and features
# --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, database=None)
@given(
    widths=st.lists(st.integers(1, 8), min_size=0, max_size=3),
    d=st.integers(1, 8),
    K=st.integers(1, 5),
    act=st.sampled_from(sorted(models.ACTIVATIONS)),
    bias=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_features_are_consistent_with_forward(widths, d, K, act, bias, seed):
    m = models.MLP(d, widths, K, activation=act, bias=bias, seed=seed).double()
    if bias:
        with torch.no_grad():
            for layer in m.layers:
                layer.bias.normal_()
    X = torch.randn(7, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    hs, zs = m.features(X)
    assert len(hs) == len(zs) == m.depth == len(widths) + 1
    assert torch.equal(hs[0], X)
    s = models.ACTIVATIONS[act]()
    for l, layer in enumerate(m.layers):
        z = hs[l] @ layer.weight.T + (layer.bias if bias else 0.0)  # z_l = W_l h_{l-1} (+ b_l)
        assert torch.allclose(zs[l], z, rtol=1e-12, atol=1e-12)
        if l + 1 < m.depth:
            assert torch.allclose(hs[l + 1], s(zs[l]), rtol=0, atol=0)  # h_l = s(z_l)
    assert torch.allclose(zs[-1], m(X), rtol=0, atol=1e-14)
    assert zs[-1].shape == (7, K)


def test_forward_flattens_images():
    m = models.MLP(12, [5], 3, seed=0)
    X = torch.randn(4, 3, 2, 2)
    assert torch.equal(m(X), m(X.reshape(4, 12)))
    hs, _ = m.features(X)
    assert hs[0].shape == (4, 12)


def test_activations_are_the_named_functions():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    expected = {"tanh": torch.tanh(x), "relu": x.clamp(min=0), "identity": x,
                "softplus": torch.log1p(torch.exp(x)), "gelu": 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))}
    assert set(models.ACTIVATIONS) == set(expected)
    for name, y in expected.items():
        assert torch.allclose(models.make_activation(name)(x), y, atol=1e-12)
    assert set(models.SMOOTH_ACTIVATIONS) == {"tanh", "gelu", "softplus", "identity"}


@pytest.mark.parametrize("name", sorted(models.ACTIVATIONS))
def test_activation_derivative_equals_autograd(name):
    # points on both sides of relu's kink and of softplus's threshold 20, and large |z| for tanh/gelu
    z = torch.cat([torch.linspace(-30, 30, 241, dtype=torch.float64), torch.tensor([-1e-3, 1e-3, 19.99, 20.01],
                                                                                   dtype=torch.float64)])
    z.requires_grad_(True)
    h = models.make_activation(name)(z)
    (expected,) = torch.autograd.grad(h.sum(), z)
    got = models.activation_derivative(name, z.detach(), h.detach())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_activation_derivative_refuses_unknown_names():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        models.activation_derivative("swish", x, x)


@pytest.mark.parametrize("factory", [
    lambda: models.make_activation("swish"),
    lambda: models.MLP(3, [4], 2, activation="Tanh"),
    lambda: models.SmallCNN(activation="sigmoid"),
])
def test_unknown_activation_is_refused_in_one_line(factory):
    with pytest.raises(ValueError) as err:
        factory()
    msg = str(err.value)
    assert "\n" not in msg and "activation" in msg and "tanh" in msg


# --------------------------------------------------------------------------------------
# deep linear networks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_deep_linear_is_a_product_of_depth_matrices(depth):
    m = models.deep_linear(6, 4, depth, 3, seed=depth, init_scale=0.9).double()
    assert m.depth == depth and isinstance(m.act, nn.Identity)
    assert all(layer.bias is None for layer in m.layers)
    shapes = [tuple(layer.weight.shape) for layer in m.layers]
    assert shapes == models.layer_shapes(6, [4] * (depth - 1), 3)
    P = torch.eye(6, dtype=torch.float64)
    for layer in m.layers:
        P = layer.weight @ P
    X = torch.randn(9, 6, dtype=torch.float64)
    assert torch.allclose(m(X), X @ P.T, atol=1e-12)
    assert m.config["activation"] == "identity" and m.config["widths"] == [4] * (depth - 1)


def test_deep_linear_refuses_depth_zero():
    with pytest.raises(ValueError, match="depth"):
        models.deep_linear(3, 4, 0, 2)


# --------------------------------------------------------------------------------------
# weight_layers / weight_matrices, SmallCNN
# --------------------------------------------------------------------------------------


def test_small_cnn_weight_matrices_are_reshaped_views():
    cnn = models.SmallCNN(in_channels=3, image_size=12, n_classes=5, channels=(4, 6), hidden=7, seed=1)
    out = cnn(torch.randn(2, 3, 12, 12))
    assert out.shape == (2, 5)
    layers = models.weight_layers(cnn)
    assert layers == [cnn.conv1, cnn.conv2, cnn.fc1, cnn.fc2]
    mats = models.weight_matrices(cnn)
    assert [tuple(M.shape) for M in mats] == [(4, 3 * 9), (6, 4 * 9), (7, 6 * 3 * 3), (5, 7)]
    for M, layer in zip(mats, layers):
        assert M.data_ptr() == layer.weight.data_ptr()  # a view, not a copy
        assert torch.equal(M, layer.weight.reshape(layer.weight.shape[0], -1))
    # row o of the conv matrix is the kernel of output channel o, flattened (in, kh, kw)
    assert torch.equal(mats[0][2], cnn.conv1.weight[2].flatten())
    # writes through the view reach the module
    with torch.no_grad():
        mats[1][0, 5] = 123.0
    assert cnn.conv2.weight[0, 0, 1, 2].item() == 123.0


def test_small_cnn_is_deterministic_in_seed():
    a = models.SmallCNN(image_size=8, channels=(2, 3), hidden=4, seed=3)
    b = models.SmallCNN(image_size=8, channels=(2, 3), hidden=4, seed=3)
    c = models.SmallCNN(image_size=8, channels=(2, 3), hidden=4, seed=4)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q)
    assert not all(torch.equal(p, r) for p, r in zip(a.parameters(), c.parameters()))


def test_weight_matrices_of_mlp_are_its_weights():
    m = models.MLP(5, [4, 3], 2, bias=True)
    mats = models.weight_matrices(m)
    assert len(mats) == 3
    for M, layer in zip(mats, m.layers):
        assert M.shape == layer.weight.shape and M.data_ptr() == layer.weight.data_ptr()


# --------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------


def test_pick_device_auto():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert device.pick_device("auto") == torch.device(expected)
    assert device.pick_device() == torch.device(expected)
    assert device.pick_device("cpu") == torch.device("cpu")


def test_pick_device_auto_is_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA"):
        device.pick_device("cuda")
    with pytest.raises(ValueError):
        device.pick_device("cuda:0")


@pytest.mark.parametrize("name", ["gpu", "tpu", "mps", "", "CPU", "cuda0"])
def test_pick_device_refuses_unknown_names(name):
    with pytest.raises(ValueError) as err:
        device.pick_device(name)
    assert "\n" not in str(err.value)


def test_thread_count_and_progress(monkeypatch):
    cores = os.cpu_count() or 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert device.thread_count() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "10000")
    assert device.thread_count() == cores
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    assert device.thread_count() == cores
    monkeypatch.setenv("NRC_PROGRESS", "0")
    assert not device.progress_enabled()
    assert list(device.progress(range(3))) == [0, 1, 2]


def test_seed_everything_is_reproducible():
    device.seed_everything(5)
    a = (np.random.rand(), torch.rand(1).item(), random.random())
    device.seed_everything(5)
    b = (np.random.rand(), torch.rand(1).item(), random.random())
    assert a == b


def test_pick_device_accepts_what_setup_returns():
    from nrc_utils import device

    dev = device.setup(seed=0, max_threads=1)
    assert device.pick_device(dev) == dev
    assert torch.get_num_threads() == 1
