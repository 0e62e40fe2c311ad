"""Tests for nrc_utils.ensemble: every member is the single run it stands for."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from nrc_utils import data, ensemble, train
from nrc_utils.gradients import stationarity_residuals
from nrc_utils.models import MLP

WIDTHS = [32, 32]


@pytest.fixture(autouse=True)
def quiet(monkeypatch, tmp_path):
    """No progress bars; a private cache folder for every test."""
    monkeypatch.setenv("NRC_PROGRESS", "0")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one torch thread is as fast, and far faster when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits256():
    ds = data.digits()
    return ds.X[:256], ds.y[:256]


def single_run(X, y, cfg, lam, seed, bias=False):
    """The single network ``train.train`` trains for member (lam, seed)."""
    model = MLP(64, WIDTHS, 10, bias=bias, seed=seed)
    return train.train(model, X, y, dataclasses.replace(cfg, lam=lam, seed=seed), use_cache=False)


def max_weight_diff(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


@pytest.mark.parametrize(
    "momentum,bias,decay_bias,batch_size,loss",
    [
        (0.0, False, False, 32, "mse"),
        (0.9, False, False, 32, "mse"),
        (0.0, True, False, 32, "mse"),
        (0.9, True, False, 32, "ce"),
        (0.9, True, True, 32, "mse"),
        (0.0, False, True, None, "mse"),  # full-batch gradient descent
        (0.9, True, False, None, "ce"),
    ],
)
def test_members_match_single_runs(digits256, momentum, bias, decay_bias, batch_size, loss):
    X, y = digits256
    cfg = train.TrainConfig(lr=0.05, steps=100, batch_size=batch_size, momentum=momentum, decay_bias=decay_bias,
                            loss=loss, record_every=25)
    lams, seeds = ensemble.grid([1e-3, 1e-2], [0, 1])
    results = ensemble.train_ensemble(64, WIDTHS, 10, lams, seeds, X, y, cfg, bias=bias, use_cache=False)
    assert len(results) == 4
    for r, lam, seed in zip(results, lams, seeds):
        ref = single_run(X, y, cfg, lam, seed, bias)
        assert r.config == ref.config  # same lambda and seed, so the same cache key
        assert r.model.config == ref.model.config
        assert max_weight_diff(r.model, ref.model) < 1e-5
        assert r.history.keys() == ref.history.keys()
        assert r.history["step"] == ref.history["step"] == [0, 25, 50, 75, 100]
        assert r.history["phase"] == ref.history["phase"]
        for k in ("loss", "loss0", "residual"):
            np.testing.assert_allclose(r.history[k], ref.history[k], rtol=1e-5, err_msg=k)
        np.testing.assert_allclose(r.history["acc"], ref.history["acc"], atol=1 / 256 + 1e-12)
        np.testing.assert_allclose(r.residuals, ref.residuals, rtol=1e-5)
        for k in ("loss", "loss0", "residual"):
            assert r.final[k] == pytest.approx(ref.final[k], rel=1e-5)
        assert not r.from_cache


def test_mini_batches_differ_between_seeds(digits256):
    """Members with different seeds see different batches: same init, different batch seed, different weights."""
    X, y = digits256
    cfg = train.TrainConfig(lr=0.05, steps=20, batch_size=32, record_every=20)
    a, b = ensemble.train_ensemble(64, WIDTHS, 10, [1e-3, 1e-3], [0, 1], X, y, cfg, use_cache=False)
    c = ensemble.train_ensemble(64, WIDTHS, 10, [1e-3], [1], X, y, cfg, use_cache=False)[0]
    assert max_weight_diff(a.model, b.model) > 1e-2
    assert max_weight_diff(b.model, c.model) < 1e-5  # a member does not depend on who else is in the ensemble


@pytest.mark.parametrize("batch_size", [32, None])
def test_members_do_not_interact(digits256, batch_size):
    X, y = digits256
    cfg = train.TrainConfig(lr=0.05, steps=50, batch_size=batch_size, momentum=0.9, record_every=10)
    seeds = [0, 1, 2]
    a = ensemble.train_ensemble(64, WIDTHS, 10, [1e-3, 1e-2, 0.0], seeds, X, y, cfg, bias=True, use_cache=False)
    b = ensemble.train_ensemble(64, WIDTHS, 10, [1e-3, 0.5, 0.0], seeds, X, y, cfg, bias=True, use_cache=False)
    for m in (0, 2):
        for k, v in a[m].model.state_dict().items():
            assert torch.equal(v, b[m].model.state_dict()[k]), (m, k)
        assert a[m].history["loss"] == b[m].history["loss"]
    assert max_weight_diff(a[1].model, b[1].model) > 1e-2
    assert np.isnan(a[2].history["residual"]).all() and a[2].residuals == []  # lambda = 0: no relative residual


def test_forward_and_member(digits256):
    X, _ = digits256
    ens = ensemble.MLPEnsemble(64, WIDTHS, 10, seeds=[3, 5], bias=True)
    with torch.no_grad():
        ens.biases[0].normal_()
        out = ens(X)
        assert out.shape == (2, 256, 10)
        for m, seed in enumerate([3, 5]):
            net = ens.member(m)
            assert net.config["seed"] == seed
            torch.testing.assert_close(out[m], net(X), rtol=1e-5, atol=1e-5)
            fresh = MLP(64, WIDTHS, 10, bias=True, seed=seed)
            torch.testing.assert_close(net.layers[1].weight, fresh.layers[1].weight, rtol=0, atol=0)
        per_member = ens(torch.stack([X[:10], X[10:20]]))
        torch.testing.assert_close(per_member[1], ens.member(1)(X[10:20]), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="inputs must have shape"):
            ens(X[:, :10])


def test_negative_lambda_refused(digits256):
    X, y = digits256
    cfg = train.TrainConfig(steps=5)
    with pytest.raises(ValueError, match="lambda must be a finite number >= 0, got -0.1"):
        ensemble.train_ensemble(64, WIDTHS, 10, [1e-3, -0.1], [0, 0], X, y, cfg)
    with pytest.raises(ValueError, match="one of each per member"):
        ensemble.train_ensemble(64, WIDTHS, 10, [1e-3, 1e-2], [0], X, y, cfg)
    with pytest.raises(ValueError, match="needs lam > 0"):
        ensemble.train_ensemble(64, WIDTHS, 10, [0.0], [0], X, y, dataclasses.replace(cfg, polish_tol=1e-6))


def test_divergence_names_the_member(digits256):
    X, y = digits256
    cfg = train.TrainConfig(lr=0.1, steps=30, batch_size=32, record_every=100)
    # lambda = 1e3 with lr = 0.1: W <- (1 - 100) W - ..., the weights blow up to inf and then NaN
    with pytest.raises(train.DivergenceError, match=r"member 1 \(lambda=1000.0, seed=7\)") as err:
        ensemble.train_ensemble(64, WIDTHS, 10, [1e-3, 1e3], [0, 7], X, y, cfg, use_cache=False)
    assert "member 0" not in str(err.value)
    assert "step" in str(err.value) and "lower the learning rate" in str(err.value)


def test_cache_shared_with_single_runs(digits256):
    """A single run hits the ensemble's cache and vice versa (same key as train.train)."""
    X, y = digits256
    cfg = train.TrainConfig(lr=0.05, steps=30, batch_size=32, record_every=10)
    first = single_run(X, y, cfg, 1e-2, 1)  # use_cache=False: not stored
    stored = train.train(MLP(64, WIDTHS, 10, seed=1), X, y, dataclasses.replace(cfg, lam=1e-2, seed=1))
    assert not stored.from_cache
    lams, seeds = ensemble.grid([1e-3, 1e-2], [0, 1])
    results = ensemble.train_ensemble(64, WIDTHS, 10, lams, seeds, X, y, cfg)
    assert [r.from_cache for r in results] == [False, False, False, True]
    assert max_weight_diff(results[3].model, first.model) == 0.0
    later = train.train(MLP(64, WIDTHS, 10, seed=0), X, y, dataclasses.replace(cfg, lam=1e-3, seed=0))
    assert later.from_cache
    assert max_weight_diff(later.model, results[0].model) == 0.0
    assert later.history == results[0].history
    again = ensemble.train_ensemble(64, WIDTHS, 10, lams, seeds, X, y, cfg)
    assert all(r.from_cache for r in again)


def test_polish_reaches_tolerance(digits256):
    """The members are polished together (train.polish_networks: batched L-BFGS, float64) to the target."""
    X, y = digits256
    cfg = train.TrainConfig(lr=0.05, steps=50, record_every=50, polish_tol=1e-6, polish_chunk=20, polish_max_seconds=20)
    results = ensemble.train_ensemble(64, [8], 10, [5e-2, 1e-1], [0, 1], X, y, cfg, use_cache=False)
    for r in results:
        assert r.history["phase"][0] == "sgd" and r.history["phase"][-1] == "lbfgs"
        assert r.max_residual < 1e-6
        assert r.final["residual"] == pytest.approx(r.max_residual)
        assert next(r.model.parameters()).dtype == torch.float64
    unpolished = ensemble.train_ensemble(64, [8], 10, [5e-2], [0], X, y, cfg, polish=False, use_cache=False)[0]
    assert unpolished.config.polish_tol is None and set(unpolished.history["phase"]) == {"sgd"}
    assert unpolished.max_residual > 1e-3


def test_residual_at_zero_weights_is_zero(digits256):
    """W = 0 is a stationary point of a bias-free tanh net: residual 0/0 = 0, as gradients.stationarity_residuals."""
    X, y = digits256
    ens = ensemble.MLPEnsemble(64, WIDTHS, 10, seeds=[0, 1])
    with torch.no_grad():
        for W in ens.weights:
            W[1].zero_()  # member 1: all weights zero, so every gradient is zero too
    lams = torch.tensor([1e-2, 1e-2])
    metrics = ensemble.evaluate_ensemble(ens, X, y, lams, "mse", True)
    assert metrics["residuals"][1].tolist() == [0.0, 0.0, 0.0] and metrics["residual"][1].item() == 0.0
    assert (metrics["residuals"][0] > 0).all()
    for m in range(2):
        ref = stationarity_residuals(ens.member(m), X, y, 1e-2, "mse")
        np.testing.assert_allclose(metrics["residuals"][m].numpy(), ref, rtol=1e-5)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "softplus", "identity"])
@pytest.mark.parametrize("loss,bias,shared", [("mse", False, True), ("ce", True, False), ("ce", False, True),
                                              ("mse", True, False)])
def test_signals_equal_autograd_for_every_member(digits256, activation, loss, bias, shared):
    """The batched back-propagation gives each member's losses, h_{l-1} and delta_l exactly as autograd does."""
    from nrc_utils.gradients import layer_signals
    from nrc_utils.losses import sample_losses

    X, y = digits256[0][:40].double(), digits256[1][:40]
    ens = ensemble.MLPEnsemble(64, WIDTHS, 10, seeds=[0, 1, 2], activation=activation, bias=bias).double()
    with torch.no_grad():
        for b in (ens.biases or []):
            b.normal_()  # nonzero biases, so a missing bias term would show
    if shared:
        xb, yb = X, y
    else:  # each member its own 20 samples
        picks = [torch.arange(m, m + 20) for m in range(3)]
        xb, yb = torch.stack([X[p] for p in picks]), torch.stack([y[p] for p in picks])
    losses, out, inputs, deltas = ensemble.signals(ens, xb, yb, loss)
    for m in range(3):
        net = ens.member(m)
        xm, ym = (xb, yb) if shared else (xb[m], yb[m])
        torch.testing.assert_close(out[m].T, net(xm), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(losses[m], sample_losses(net(xm), ym, loss), rtol=1e-12, atol=1e-12)
        for l, ref in enumerate(layer_signals(net, xm, ym, loss)):
            h = inputs[l] if inputs[l].dim() == 2 else inputs[l][m]
            torch.testing.assert_close(h.T, ref.H, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(deltas[l][m].T, ref.D, rtol=1e-10, atol=1e-12)


def test_newton_stage_of_an_ensemble_is_that_of_single_runs(digits256):
    """With newton_tol, every member ends at a residual <= newton_tol, with the smallest Hessian eigenvalue of
    L_lambda, exactly as the single run of the same member (one solver for both)."""
    X, y = digits256
    cfg = train.TrainConfig(lr=0.05, steps=50, record_every=50, polish_tol=1e-6, polish_max_seconds=60,
                            newton_tol=1e-12)
    results = ensemble.train_ensemble(64, [8], 10, [5e-2, 1e-1], [0, 1], X, y, cfg, use_cache=False)
    for r, (lam, seed) in zip(results, [(5e-2, 0), (1e-1, 1)]):
        assert r.polish_stop == "target" and r.newton_stop == "target" and r.reached and r.target == 1e-12
        assert r.max_residual <= 1e-12 and r.history["phase"][-1] == "newton"
        assert r.min_eigenvalue is not None and math.isfinite(r.min_eigenvalue)
        ref = train.train(MLP(64, [8], 10, seed=seed), X, y, dataclasses.replace(cfg, lam=lam, seed=seed),
                          use_cache=False)
        assert ref.newton_stop == r.newton_stop and ref.min_eigenvalue == pytest.approx(r.min_eigenvalue, rel=1e-6)
        for a, b in zip(ref.model.state_dict().values(), r.model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
