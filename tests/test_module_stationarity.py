"""nrc_utils.module_stationarity (chapter 7): Newton reaches 1e-12 on a tiny network, the smallest Hessian
eigenvalue is positive at a minimum and negative (with its exact value) at a constructed saddle, every
stop reason, the Hessian against autograd, the refusal of undecayed parameters, the cache."""

import math

import pytest
import torch
from torch import nn

from nrc_utils import module_stationarity as ms
from nrc_utils.train import POLISH_STOPS


def _net(seed=0, d=4, h=5, K=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h, bias=False), nn.Tanh(), nn.Linear(h, K, bias=False)).double()


def _data(N=20, d=4, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, d, generator=g, dtype=torch.float64), torch.arange(N) % K


def test_newton_reaches_1e_12_and_the_minimum_has_a_positive_smallest_eigenvalue():
    X, y = _data()
    r = ms.polish(_net(), X, y, 0.01, "ce")
    assert r.stop == "target" and r.residual <= 1e-12
    assert r.newton_steps >= 1 or r.lbfgs_stop == "target"
    assert r.min_eig > 0 and r.extra["eig_max"] >= r.min_eig
    assert set(r.residuals) == {"0.weight", "2.weight"}
    assert ms.residuals(r.model, X, y, 0.01, "ce") == pytest.approx(r.residuals, abs=1e-15)


def test_the_origin_is_a_saddle_with_smallest_eigenvalue_lambda_minus_sigma1():
    # at Theta = 0 of a bias-free tanh net every gradient vanishes; the Hessian of L_lambda there is
    # [[lam I, C], [C^T, lam I]] with the coupling of f ~ W_2 W_1 x, so its smallest eigenvalue is
    # lam - sigma_1(G), G = (1/N) sum_i (softmax(0) - e_{y_i}) x_i^T
    X, y = _data(N=30)
    lam = 0.01
    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    G = ((torch.full((30, 3), 1 / 3, dtype=torch.float64) - nn.functional.one_hot(y, 3)).T @ X) / 30
    expected = lam - float(torch.linalg.svdvals(G)[0])
    assert expected < 0
    assert ms.min_eigenvalue(net, X, y, lam, "ce") == pytest.approx(expected, abs=1e-12)
    stop, steps, H = ms.newton(net, X, y, lam, "ce")
    assert stop == "target" and steps == 0  # already stationary: residual 0 / 0 counts as 0
    assert float(torch.linalg.eigvalsh(H)[0]) == pytest.approx(expected, abs=1e-12)


def test_dense_hessian_matches_autograd():
    X, y = _data(N=8)
    net = _net(seed=3)
    H = ms.hessian(net, X, y, 0.02, "mse", block=3)
    flat = ms._Flat(net)
    ref = torch.autograd.functional.hessian(lambda th: flat.loss(th, X, y, 0.02, "mse"), flat.get())
    assert torch.allclose(H, ref, atol=1e-12) and torch.equal(H, H.T)


def test_stop_reasons():
    X, y = _data()
    cfg = ms.SolverConfig(lbfgs_tol=1e-300, lbfgs_max_iter=10, chunk=10, newton_max_iter=0)
    r = ms.polish(_net(), X, y, 0.01, "ce", cfg)
    assert r.lbfgs_stop in ("iteration cap", "no progress") and r.stop == "iteration cap"
    r = ms.polish(_net(), X, y, 0.01, "ce", ms.SolverConfig(lbfgs_tol=1e-300, max_seconds=1e-9, chunk=5))
    assert r.lbfgs_stop == "time cap" and r.stop == "time cap"
    # at the float64 floor no Newton step lowers a target of 0: "no progress"
    net = ms.polish(_net(), X, y, 0.01, "ce").model
    stop, _steps, _H = ms.newton(net, X, y, 0.01, "ce", ms.SolverConfig(tol=0.0, newton_max_iter=60, patience=2))
    assert stop == "no progress"
    for s in (r.stop, r.lbfgs_stop, stop):
        assert s in POLISH_STOPS
    # a network too large for the dense Hessian keeps its L-BFGS stop and no eigenvalue
    r = ms.polish(_net(), X, y, 0.01, "ce", ms.SolverConfig(dense_max_params=5))
    assert r.stop == r.lbfgs_stop and math.isnan(r.min_eig) and r.newton_steps == 0


def test_undecayed_parameters_are_refused_and_bad_lambda():
    net = _net()
    net.decayed = ["0.weight"]
    with pytest.raises(ValueError, match="not decayed"):
        ms.decayed_parameters(net)
    net.decayed = ["nope"]
    with pytest.raises(ValueError, match="does not have"):
        ms.decayed_parameters(net)
    X, y = _data()
    with pytest.raises(ValueError, match="lambda > 0"):
        ms.polish(_net(), X, y, 0.0, "ce")


def test_fit_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path))
    X, y = _data()
    first = ms.fit(lambda: _net(seed=5), X, y, 0.01, "ce")
    again = ms.fit(lambda: _net(seed=5), X, y, 0.01, "ce")
    assert not first.from_cache and again.from_cache
    assert again.residual == first.residual and again.stop == first.stop and again.min_eig == first.min_eig
    for a, b in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(a.detach(), b.detach())
    assert torch.equal(torch.as_tensor(again.extra["eigs_low"]), torch.as_tensor(first.extra["eigs_low"]))
    other = ms.fit(lambda: _net(seed=5), X, y, 0.02, "ce")
    assert not other.from_cache
