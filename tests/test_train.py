"""Tests for nrc_utils.train: the weight-decay convention, stationarity, determinism, refusals, caching."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nrc_utils import data, gradients, models, train
from nrc_utils.losses import sample_losses
from nrc_utils.train import DivergenceError, TrainConfig, batch_indices, penalty

HISTORY_KEYS = {"step", "phase", "loss", "loss0", "acc", "residual", "seconds"}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NRC_PROGRESS", "0")
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def mixture():
    return data.gaussian_mixture(K=3, d=8, n_per_class=20, s=0.3, seed=0)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_seconds(history):
    return {k: v for k, v in history.items() if k != "seconds"}


SMALL = dict(lam=1e-2, lr=0.1, steps=30, record_every=10)


# --------------------------------------------------------------------------------------
# PyTorch's weight_decay is exactly the lambda of L_lambda = L_0 + (lambda/2) ||W||_F^2
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [1e-3, 0.05, 0.7])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_sgd_weight_decay_is_the_gradient_of_the_penalty(lam, loss, mixture):
    lr = 0.3
    X, y = mixture.X, mixture.y
    a = models.MLP(mixture.d, [10, 7], 3, bias=True, seed=1)
    b = copy.deepcopy(a)
    # (1) torch's SGD with weight_decay=lam on L_0
    opt = torch.optim.SGD(a.parameters(), lr=lr, weight_decay=lam)
    opt.zero_grad()
    sample_losses(a(X), y, loss).mean().backward()
    opt.step()
    # (2) plain SGD on L_0 + lam * penalty, penalty = (1/2) sum ||W||^2 (+ ||b||^2)
    opt = torch.optim.SGD(b.parameters(), lr=lr)
    opt.zero_grad()
    (sample_losses(b(X), y, loss).mean() + lam * penalty(b, decay_bias=True)).backward()
    opt.step()
    moved = 0.0
    for p, q, p0 in zip(a.parameters(), b.parameters(), models.MLP(mixture.d, [10, 7], 3, bias=True, seed=1).parameters()):
        assert (p - q).abs().max().item() < 1e-6
        moved = max(moved, (p - p0).abs().max().item())
    assert moved > 1e-3  # the step did something


def test_penalty_value():
    m = models.MLP(4, [3], 2, bias=True, seed=0).double()
    with torch.no_grad():
        for layer in m.layers:
            layer.bias.fill_(2.0)
    w2 = sum(layer.weight.pow(2).sum().item() for layer in m.layers)
    assert math.isclose(penalty(m, decay_bias=False).item(), 0.5 * w2, rel_tol=1e-12)
    assert math.isclose(penalty(m, decay_bias=True).item(), 0.5 * (w2 + 4.0 * (3 + 2)), rel_tol=1e-12)
    X, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1])
    L, out = train.regularised_loss(m, X, y, 0.3, "ce", decay_bias=True)
    assert math.isclose(L.item(), sample_losses(out, y, "ce").mean().item() + 0.3 * penalty(m).item(), rel_tol=1e-12)


@pytest.mark.parametrize("decay_bias", [True, False])
def test_run_sgd_step_is_a_gradient_step_on_L_lambda(decay_bias, mixture):
    """One step of the module's stage 1 is ``Theta <- Theta - lr grad L_lambda`` (bias decay as configured)."""
    lam, lr = 0.05, 0.2
    X, y = mixture.X.double(), mixture.y
    model = models.MLP(mixture.d, [6], 3, bias=True, seed=2).double()
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.normal_()
    ref = copy.deepcopy(model)
    cfg = TrainConfig(lam=lam, lr=lr, steps=1, decay_bias=decay_bias)
    train.run_sgd(model, X, y, cfg, {})
    L, _ = train.regularised_loss(ref, X, y, lam, "mse", decay_bias=decay_bias)
    grads = torch.autograd.grad(L, list(ref.parameters()))
    for p, q, g in zip(model.parameters(), ref.parameters(), grads):
        assert (p - (q - lr * g)).abs().max().item() < 1e-12


# --------------------------------------------------------------------------------------
# training reaches stationarity
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def polished(mixture):
    """A tanh MLP 8-16-16-3 trained by GD then float64 L-BFGS to residual 1e-7 (2-5 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NRC_PROGRESS", "0")
        cfg = TrainConfig(lam=1e-2, lr=0.1, steps=200, polish_tol=1e-7, dtype="float64", polish_max_seconds=60)
        return train.train(models.MLP(mixture.d, [16, 16], 3, activation="tanh", seed=0), mixture.X, mixture.y, cfg,
                           use_cache=False)


def test_polish_reaches_stationarity(polished, mixture):
    result = polished
    assert next(result.model.parameters()).dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in result.model.parameters())
    assert result.max_residual < 1e-6
    assert len(result.residuals) == 3
    # the reported residuals are those of the returned model
    again = gradients.stationarity_residuals(result.model, mixture.X.double(), mixture.y, 1e-2, "mse")
    assert np.allclose(again, result.residuals, rtol=1e-9, atol=0)
    assert math.isclose(result.final["residual"], max(result.residuals), rel_tol=1e-9)
    assert result.final["acc"] == 1.0  # separable mixture, s=0.3 in d=8
    assert result.polish_stop == "target"


def test_history_keys_and_residual_decrease(polished):
    h = polished.history
    assert set(h) == HISTORY_KEYS
    n = len(h["step"])
    assert all(len(v) == n for v in h.values())
    phases = h["phase"]
    assert set(phases) == {"sgd", "lbfgs"}
    first_lbfgs = phases.index("lbfgs")
    assert all(p == "sgd" for p in phases[:first_lbfgs]) and all(p == "lbfgs" for p in phases[first_lbfgs:])
    assert h["step"][:first_lbfgs] == [0, 50, 100, 150, 200]  # record_every=50, steps=200, and the end
    assert all(b > a for a, b in zip(h["step"], h["step"][1:]))
    assert all(b >= a for a, b in zip(h["seconds"][:first_lbfgs], h["seconds"][1:first_lbfgs]))
    assert all(L > L0 > 0 for L, L0 in zip(h["loss"], h["loss0"]))  # L_lambda = L_0 + penalty
    # residual: large at the start, tiny at the end; L_lambda decreases over GD and L-BFGS
    assert h["residual"][0] > 1.0
    assert h["residual"][-1] < 1e-6
    assert h["residual"][-1] < 1e-5 * h["residual"][0]
    assert h["residual"][-1] < h["residual"][first_lbfgs - 1]
    assert h["loss"][-1] < h["loss"][first_lbfgs - 1] < h["loss"][0]
    assert h["residual"][-1] == pytest.approx(polished.final["residual"], rel=1e-12)
    assert h["loss"][-1] == pytest.approx(polished.final["loss"], rel=1e-12)


def test_history_loss_is_L0_plus_penalty(mixture):
    cfg = TrainConfig(**SMALL, dtype="float64")
    r = train.train(models.MLP(mixture.d, [5], 3, seed=0), mixture.X, mixture.y, cfg, use_cache=False)
    final_pen = penalty(r.model).item()
    assert math.isclose(r.history["loss"][-1], r.history["loss0"][-1] + cfg.lam * final_pen, rel_tol=1e-12)
    assert r.history["step"] == [0, 10, 20, 30]
    assert r.history["phase"] == ["sgd"] * 4


def test_zero_lambda_trains_without_residuals(mixture):
    r = train.train(models.MLP(mixture.d, [5], 3, seed=0), mixture.X, mixture.y,
                    TrainConfig(lam=0.0, lr=0.1, steps=5), use_cache=False)
    assert r.residuals == [] and math.isnan(r.max_residual)
    assert all(math.isnan(v) for v in r.history["residual"])


# --------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 16])
def test_same_seed_same_result(batch_size, mixture):
    cfg = TrainConfig(**SMALL, batch_size=batch_size, seed=3)
    runs = [train.train(models.MLP(mixture.d, [6], 3, seed=4), mixture.X, mixture.y, cfg, use_cache=False)
            for _ in range(2)]
    assert same_state(state(runs[0].model), state(runs[1].model))
    assert without_seconds(runs[0].history) == without_seconds(runs[1].history)
    assert runs[0].residuals == runs[1].residuals


def test_same_seed_same_result_with_polish(mixture):
    cfg = TrainConfig(lam=1e-2, lr=0.1, steps=20, polish_tol=1e-6, polish_max_iter=200, polish_max_seconds=600)
    runs = [train.train(models.MLP(mixture.d, [6], 3, seed=4), mixture.X, mixture.y, cfg, use_cache=False)
            for _ in range(2)]
    assert same_state(state(runs[0].model), state(runs[1].model))
    assert without_seconds(runs[0].history) == without_seconds(runs[1].history)


def test_different_seeds_differ(mixture):
    base = train.train(models.MLP(mixture.d, [6], 3, seed=4), mixture.X, mixture.y,
                       TrainConfig(**SMALL, batch_size=16, seed=3), use_cache=False)
    other_batches = train.train(models.MLP(mixture.d, [6], 3, seed=4), mixture.X, mixture.y,
                                TrainConfig(**SMALL, batch_size=16, seed=5), use_cache=False)
    other_init = train.train(models.MLP(mixture.d, [6], 3, seed=5), mixture.X, mixture.y,
                             TrainConfig(**SMALL, batch_size=16, seed=3), use_cache=False)
    for r in (other_batches, other_init):
        assert not same_state(state(base.model), state(r.model))
        assert without_seconds(base.history) != without_seconds(r.history)


def test_training_ignores_the_global_rng(mixture):
    cfg = TrainConfig(**SMALL, batch_size=16, seed=1)
    torch.manual_seed(0)
    a = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg, use_cache=False)
    torch.manual_seed(12345)
    b = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg, use_cache=False)
    assert same_state(state(a.model), state(b.model))


# --------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------


def one_line_value_error(cfg_kwargs, mixture):
    with pytest.raises(ValueError) as err:
        train.train(models.MLP(mixture.d, [4], 3), mixture.X, mixture.y, TrainConfig(**cfg_kwargs), use_cache=False)
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("kwargs, word", [
    ({"lam": -1e-3}, "lambda"),
    ({"lam": float("nan")}, "lambda"),
    ({"lam": float("inf")}, "lambda"),
    ({"loss": "hinge"}, "loss"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": -4}, "batch_size"),
    ({"lr": 0.0}, "learning rate"),
    ({"lr": float("nan")}, "learning rate"),
    ({"steps": -1}, "steps"),
    ({"dtype": "float16"}, "dtype"),
    ({"lam": 0.0, "polish_tol": 1e-6}, "lam"),
])
def test_bad_config_is_refused_in_one_line(kwargs, word, mixture):
    assert word in one_line_value_error(kwargs, mixture)


def test_non_integer_batch_size_is_refused(mixture):
    one_line_value_error({"batch_size": 2.5, "steps": 3}, mixture)


@pytest.mark.parametrize("kwargs", [{"record_every": 0}, {"polish_chunk": 0, "polish_tol": 1e-6}])
def test_zero_record_every_or_chunk_is_refused(kwargs, mixture):
    one_line_value_error({"steps": 3, **kwargs}, mixture)


def test_divergence_names_the_step_and_the_fix(mixture):
    with pytest.raises(DivergenceError) as err:
        train.train(models.MLP(mixture.d, [16, 16], 3, seed=0), mixture.X, mixture.y,
                    TrainConfig(lr=1e6, steps=100), use_cache=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert "lower the learning rate" in msg
    step = int(re.search(r"step (\d+)", msg).group(1))
    assert 0 < step < 100
    assert "lr=1000000.0" in msg


def test_divergence_is_not_cached(mixture, cache_dir):
    with pytest.raises(DivergenceError):
        train.train(models.MLP(mixture.d, [16, 16], 3, seed=0), mixture.X, mixture.y, TrainConfig(lr=1e6, steps=100))
    assert not cache_dir.exists() or not list(cache_dir.glob("*.npz"))


# --------------------------------------------------------------------------------------
# batch_indices
# --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, database=None)
@given(N=st.integers(2, 60), B=st.integers(1, 60), steps=st.integers(0, 40), seed=st.integers(0, 10**6))
def test_batch_indices_are_epochwise_permutations(N, B, steps, seed):
    batches = list(batch_indices(N, B, steps, seed))
    assert len(batches) == steps
    if B >= N:
        assert all(b is None for b in batches)
        return
    per_epoch = N // B
    for b in batches:
        assert b.dtype == torch.int64 and b.shape == (B,)
    for start in range(0, steps, per_epoch):
        epoch = torch.cat(batches[start:start + per_epoch])
        assert len(set(epoch.tolist())) == len(epoch)  # disjoint batches, no repeats
        assert int(epoch.min()) >= 0 and int(epoch.max()) < N
        if start + per_epoch <= steps:
            assert len(epoch) == per_epoch * B  # N // B * B samples per full epoch
    again = list(batch_indices(N, B, steps, seed))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_batch_indices_reshuffle_and_depend_on_seed():
    a = list(batch_indices(40, 8, 20, seed=0))
    assert not all(torch.equal(x, y) for x, y in zip(a[:5], a[5:10]))  # epoch 2 is a new permutation
    b = list(batch_indices(40, 8, 20, seed=1))
    assert not all(torch.equal(x, y) for x, y in zip(a, b))
    assert list(batch_indices(40, None, 3, seed=0)) == [None] * 3
    assert list(batch_indices(40, 40, 2, seed=0)) == [None] * 2


# --------------------------------------------------------------------------------------
# caching
# --------------------------------------------------------------------------------------


def test_cache_hit_restores_weights_and_history(mixture, cache_dir):
    cfg = TrainConfig(**SMALL)
    first = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    assert not first.from_cache
    assert len(list(cache_dir.glob("*.npz"))) == 1
    second = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    assert second.from_cache
    assert same_state(state(first.model), state(second.model))
    assert second.history == first.history  # including the recorded seconds
    assert second.residuals == first.residuals and second.final == first.final


def test_cache_hit_of_polished_run_is_float64(mixture):
    cfg = TrainConfig(lam=1e-2, lr=0.1, steps=10, polish_tol=1e-3, polish_max_iter=100)
    first = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    assert cfg.dtype == "float32"  # stage 1 in float32, polishing switches to float64
    assert all(p.dtype == torch.float64 for p in first.model.parameters())
    second = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    assert second.from_cache
    assert all(p.dtype == torch.float64 for p in second.model.parameters())
    assert same_state(state(first.model), state(second.model))


def test_polish_says_why_it_stopped(mixture):
    """Each stop of train.polish is reported, kept by the cache, and absent without polishing."""
    net = lambda: models.MLP(mixture.d, [6], 3, seed=1)  # noqa: E731
    base = dict(lam=1e-2, lr=0.1, steps=20, polish_chunk=10)
    cap = train.train(net(), mixture.X, mixture.y, TrainConfig(**base, polish_tol=1e-300, polish_max_iter=30),
                      use_cache=False)
    assert cap.polish_stop == "iteration cap"
    assert cap.history["step"][-1] == 20 + 30 and cap.max_residual > 1e-300
    timed = train.train(net(), mixture.X, mixture.y, TrainConfig(**base, polish_tol=1e-300, polish_max_seconds=0.0),
                        use_cache=False)
    assert timed.polish_stop == "time cap" and timed.history["step"][-1] == 20 + 1  # the clock is read every iteration
    reached = train.train(net(), mixture.X, mixture.y, TrainConfig(**base, polish_tol=1.0), use_cache=False)
    assert reached.polish_stop == "target" and reached.max_residual < 1.0
    # at the float64 floor no step lowers the loss: it stands still to rounding at the end
    flat = train.train(net(), mixture.X, mixture.y, TrainConfig(**base, polish_tol=1e-300, polish_max_iter=10**5,
                                                                 polish_max_seconds=120), use_cache=False)
    assert flat.polish_stop == "no progress"
    assert abs(flat.history["loss"][-1] - flat.history["loss"][-2]) <= 1e-12 * flat.history["loss"][-1]
    assert train.train(net(), mixture.X, mixture.y, TrainConfig(**base), use_cache=False).polish_stop is None
    cfg = TrainConfig(**base, polish_tol=1e-300, polish_max_iter=30)
    first = train.train(net(), mixture.X, mixture.y, cfg)
    again = train.train(net(), mixture.X, mixture.y, cfg)
    assert again.from_cache and again.polish_stop == first.polish_stop == "iteration cap"


def test_corrupt_cache_entry_is_recomputed(mixture, cache_dir):
    cfg = TrainConfig(**SMALL)
    first = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    (npz,) = cache_dir.glob("*.npz")
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz.write_bytes(bytes(blob))
    again = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    assert not again.from_cache
    assert same_state(state(first.model), state(again.model))
    assert without_seconds(again.history) == without_seconds(first.history)
    # the recomputed entry is valid again
    assert train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg).from_cache


def test_cache_keys_separate_configs_models_and_data(mixture, cache_dir):
    cfg = TrainConfig(**SMALL)
    base = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    other_lam = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y,
                            TrainConfig(**{**SMALL, "lam": 2e-2}))
    assert not other_lam.from_cache
    assert not same_state(state(base.model), state(other_lam.model))
    assert not train.train(models.MLP(mixture.d, [6], 3, seed=1), mixture.X, mixture.y, cfg).from_cache
    assert not train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X + 1e-3, mixture.y, cfg).from_cache
    assert len(list(cache_dir.glob("*.npz"))) == 4
    # use_cache=False and a callback neither read nor write
    calls = []
    r = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg,
                    callback=lambda step, model: calls.append(step))
    assert not r.from_cache and calls == list(range(SMALL["steps"]))
    assert not train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg, use_cache=False).from_cache
    assert len(list(cache_dir.glob("*.npz"))) == 4


def test_cache_key_depends_on_starting_weights(mixture):
    cfg = TrainConfig(**SMALL)
    warm = models.MLP(mixture.d, [6], 3, seed=0)
    with torch.no_grad():
        for p in warm.parameters():
            p.mul_(3.0)
    train.train(warm, mixture.X, mixture.y, cfg)  # cached under MLP(seed=0).config
    cold = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg)
    fresh = train.train(models.MLP(mixture.d, [6], 3, seed=0), mixture.X, mixture.y, cfg, use_cache=False)
    assert same_state(state(cold.model), state(fresh.model))


def test_newton_stage_reaches_1e_12_and_reports_the_hessian(mixture):
    """newton_tol: after L-BFGS, Newton to a residual <= newton_tol; the smallest eigenvalue of the Hessian of
    L_lambda at the result is reported (here > 0: a strict local minimum) and kept by the cache."""
    cfg = TrainConfig(lam=1e-2, lr=0.1, steps=50, polish_tol=1e-6, newton_tol=1e-12)
    r = train.train(models.MLP(mixture.d, [6], 3, seed=1), mixture.X, mixture.y, cfg)
    assert r.polish_stop == "target" and r.newton_stop == "target" and r.stop == "target" and r.reached
    assert r.target == 1e-12 and r.max_residual <= 1e-12
    again = gradients.stationarity_residuals(r.model, mixture.X.double(), mixture.y, 1e-2, "mse")
    assert max(again) <= 1e-12
    assert r.history["phase"][-2:] == ["lbfgs", "newton"] and r.history["step"][-1] > r.history["step"][-2]
    assert r.history["residual"][-1] == pytest.approx(r.max_residual, rel=1e-6)
    assert r.min_eigenvalue is not None and r.min_eigenvalue > 0
    hit = train.train(models.MLP(mixture.d, [6], 3, seed=1), mixture.X, mixture.y, cfg)
    assert hit.from_cache and (hit.newton_stop, hit.min_eigenvalue) == (r.newton_stop, r.min_eigenvalue)
    assert r.hessian == hit.hessian == "eigvalsh"
    # without newton_tol: L-BFGS only, nothing about the Hessian
    plain = train.train(models.MLP(mixture.d, [6], 3, seed=1), mixture.X, mixture.y,
                        TrainConfig(lam=1e-2, lr=0.1, steps=50, polish_tol=1e-6), use_cache=False)
    assert plain.newton_stop is None and plain.min_eigenvalue is None and plain.stop == plain.polish_stop
    assert plain.target == 1e-6 and plain.hessian is None


def test_newton_stage_skips_relu_networks(mixture):
    """ReLU's loss is not twice differentiable everywhere: no Newton stage, L-BFGS's stop is the final one."""
    cfg = TrainConfig(lam=1e-2, lr=0.1, steps=50, polish_tol=1e-6, polish_max_seconds=10, newton_tol=1e-12)
    r = train.train(models.MLP(mixture.d, [6], 3, activation="relu", seed=1), mixture.X, mixture.y, cfg,
                    use_cache=False)
    assert r.newton_stop is None and r.min_eigenvalue is None and r.stop == r.polish_stop
    assert "newton" not in r.history["phase"]


@pytest.mark.parametrize("kwargs, word", [
    ({"newton_tol": 1e-12}, "needs polish_tol"),
    ({"newton_tol": 0.0, "polish_tol": 1e-6}, "newton_tol must be a finite number > 0"),
    ({"newton_tol": float("nan"), "polish_tol": 1e-6}, "newton_tol must be a finite number > 0"),
    ({"newton_max_iter": 0}, "newton_max_iter must be a positive integer"),
])
def test_bad_newton_settings_are_refused_in_one_line(kwargs, word, mixture):
    message = one_line_value_error(kwargs, mixture)
    assert word in message


def test_newton_stage_needs_an_mlp(mixture):
    """The Newton stage is nrc_utils.stationary's (MLPs): another module is refused before training."""
    model = torch.nn.Sequential(torch.nn.Linear(mixture.d, 3, bias=False))
    with pytest.raises(ValueError, match="newton_tol needs a models.MLP"):
        train.train(model, mixture.X, mixture.y, TrainConfig(lam=1e-2, steps=1, polish_tol=1e-6, newton_tol=1e-12),
                    use_cache=False)


def test_polish_warm_is_train_with_steps_0_for_every_network(mixture):
    """polish_warm polishes warm starts together; each result is the one train(model, cfg) gives with steps=0
    (same solver, same key: either call hits the other's cache)."""
    starts = []
    for seed, lam in ((1, 1e-2), (2, 3e-2)):
        r = train.train(models.MLP(mixture.d, [6], 3, seed=seed), mixture.X, mixture.y,
                        TrainConfig(lam=lam, lr=0.1, steps=30, seed=seed), use_cache=False)
        starts.append((r.model, TrainConfig(lam=lam, lr=0.1, steps=0, seed=seed, polish_tol=1e-6, newton_tol=1e-12)))
    together = train.polish_warm([copy.deepcopy(m) for m, _ in starts], mixture.X, mixture.y, [c for _, c in starts],
                                 device="cpu")
    for (model, cfg), r in zip(starts, together):
        assert r.reached and r.max_residual <= 1e-12 and r.min_eigenvalue is not None and r.history["step"][0] == 0
        alone = train.train(copy.deepcopy(model), mixture.X, mixture.y, cfg, device="cpu")
        assert alone.from_cache  # the key train() uses
        assert same_state(state(alone.model), state(r.model))
    again = train.polish_warm([copy.deepcopy(m) for m, _ in starts], mixture.X, mixture.y, [c for _, c in starts],
                              device="cpu")
    assert all(r.from_cache for r in again)


def test_polish_warm_refuses_what_it_does_not_polish(mixture):
    net = models.MLP(mixture.d, [4], 3)
    with pytest.raises(ValueError, match="steps=0 and a polish_tol"):
        train.polish_warm([net], mixture.X, mixture.y, [TrainConfig(lam=1e-2, steps=5, polish_tol=1e-6)])
    with pytest.raises(ValueError, match="steps=0 and a polish_tol"):
        train.polish_warm([net], mixture.X, mixture.y, [TrainConfig(lam=1e-2, steps=0)])
    with pytest.raises(ValueError, match="one config per model"):
        train.polish_warm([net, net], mixture.X, mixture.y, [TrainConfig(lam=1e-2, steps=0, polish_tol=1e-6)])
    with pytest.raises(TypeError, match="models.MLP"):
        train.polish_warm([torch.nn.Linear(mixture.d, 3)], mixture.X, mixture.y,
                          [TrainConfig(lam=1e-2, steps=0, polish_tol=1e-6)])


def test_hessian_max_params_leaves_the_eigenvalues_of_larger_networks_out(mixture):
    """Above hessian_max_params the Newton stage still runs (residual <= newton_tol) but no eigenvalue is computed."""
    net = lambda: models.MLP(mixture.d, [6], 3, seed=1)  # noqa: E731  (8*6 + 6*3 = 66 parameters)
    base = dict(lam=1e-2, lr=0.1, steps=50, polish_tol=1e-6, newton_tol=1e-12)
    small = train.train(net(), mixture.X, mixture.y, TrainConfig(**base, hessian_max_params=66), use_cache=False)
    assert small.reached and small.min_eigenvalue is not None and small.max_eigenvalue > small.min_eigenvalue > 0
    large = train.train(net(), mixture.X, mixture.y, TrainConfig(**base, hessian_max_params=65), use_cache=False)
    assert large.reached and large.max_residual <= 1e-12
    assert large.min_eigenvalue is None and large.max_eigenvalue is None and large.hessian == "skipped"
    message = one_line_value_error({"hessian_max_params": -1}, mixture)
    assert "hessian_max_params must be an integer >= 0" in message
