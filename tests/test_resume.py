"""An interrupted training run resumes from its checkpoint and ends exactly where an uninterrupted one ends."""

import dataclasses

import pytest
import torch

from nrc_utils import cache, data, models, train


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NRC_PROGRESS", "0")


class _Interrupt(Exception):
    pass


def _problem():
    ds = data.gaussian_mixture(K=3, d=8, n_per_class=20, s=0.3, seed=1)
    cfg = train.TrainConfig(lam=1e-2, lr=0.1, steps=60, batch_size=16, momentum=0.9, record_every=10, seed=3)
    return ds, cfg


def _model():
    return models.MLP(8, [12, 12], 3, activation="tanh", bias=True, seed=5)


@pytest.mark.parametrize("stop_at", [1, 25, 59])
def test_interrupted_run_resumes_to_the_same_result(monkeypatch, stop_at):
    ds, cfg = _problem()
    reference = train.train(_model(), ds.X, ds.y, cfg, use_cache=False)

    original = train.Checkpointer.__call__

    def interrupting(self, step, buffers):
        self.every = 0.0  # checkpoint after every step
        original(self, step, buffers)
        if step == stop_at:
            raise _Interrupt

    monkeypatch.setattr(train.Checkpointer, "__call__", interrupting)
    with pytest.raises(_Interrupt):
        train.train(_model(), ds.X, ds.y, cfg)
    key, _ = train.cache_key(_model(), cfg, ds.X, ds.y)
    assert cache.load(key + ".partial") is not None, "the interrupted run left no checkpoint"
    assert cache.load(key) is None

    monkeypatch.setattr(train.Checkpointer, "__call__", original)
    resumed = train.train(_model(), ds.X, ds.y, cfg)
    assert not resumed.from_cache
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert resumed.history["step"] == reference.history["step"]
    assert resumed.history["loss"] == pytest.approx(reference.history["loss"], rel=1e-5)
    assert cache.load(key + ".partial") is None, "the checkpoint outlived the finished run"
    assert train.train(_model(), ds.X, ds.y, cfg).from_cache


def test_short_runs_write_no_checkpoint(tmp_path):
    ds, cfg = _problem()
    train.train(_model(), ds.X, ds.y, cfg)
    assert not list((tmp_path / "cache").glob("*.partial.*"))


def test_small_cnn_trains_with_weight_decay_and_reports_residuals():
    """Training and the stationarity residual cover conv layers (reshaped kernels) too."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(24, 1, 8, 8, generator=g)
    y = torch.arange(24) % 3
    net = models.SmallCNN(in_channels=1, image_size=8, n_classes=3, channels=(4, 4), hidden=8, seed=0)
    before = [w.detach().clone() for w in models.weight_matrices(net)]
    result = train.train(net, X, y, train.TrainConfig(lam=1e-2, lr=0.05, steps=5, record_every=5), use_cache=False)
    assert len(result.residuals) == 4 and all(r > 0 for r in result.residuals)
    assert all(not torch.equal(a, b) for a, b in zip(before, models.weight_matrices(result.model)))


def test_building_a_model_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.MLP(5, [7], 2, seed=4)
    models.SmallCNN(seed=4)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("stop_at", [1, 33])
def test_interrupted_ensemble_resumes_to_the_same_result(monkeypatch, stop_at):
    """An ensemble interrupted in its batched SGD stage resumes from the checkpoint to the same members."""
    from nrc_utils import ensemble

    ds, cfg = _problem()
    lams, seeds = ensemble.grid([1e-3, 1e-2], [3, 4])

    def run():
        return ensemble.train_ensemble(8, [12, 12], 3, lams, seeds, ds.X, ds.y, cfg, bias=True, polish=False,
                                       device="cpu")

    monkeypatch.setenv("NRC_CACHE_DIR", str(cache.cache_dir().parent / "reference"))
    reference = run()
    monkeypatch.setenv("NRC_CACHE_DIR", str(cache.cache_dir().parent / "interrupted"))

    original = train.Checkpointer.__call__
    steps_seen = []

    def interrupting(self, step, buffers):
        self.every = 0.0  # checkpoint after every step
        original(self, step, buffers)
        steps_seen.append(step)
        if step == stop_at:
            raise _Interrupt

    monkeypatch.setattr(train.Checkpointer, "__call__", interrupting)
    with pytest.raises(_Interrupt):
        run()
    partial = list(cache.cache_dir().glob("*.partial.*"))
    assert partial, "the interrupted ensemble left no checkpoint"

    steps_seen.clear()
    monkeypatch.setattr(train.Checkpointer, "__call__", lambda self, step, buffers: steps_seen.append(step))
    resumed = run()
    assert steps_seen[0] == stop_at + 1, "the resumed run did not start from the checkpoint"
    for ref, res in zip(reference, resumed):
        assert not res.from_cache
        for (name, a), b in zip(ref.model.state_dict().items(), res.model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        assert res.history["step"] == ref.history["step"]
        assert res.history["loss"] == pytest.approx(ref.history["loss"], rel=1e-5)
    assert not list(cache.cache_dir().glob("*.partial.*")), "the checkpoint outlived the finished ensemble"


def _polish_problem():
    ds, cfg = _problem()
    return ds, dataclasses.replace(cfg, polish_tol=1e-5, polish_max_iter=400, polish_chunk=20)


def _killing_polish(monkeypatch) -> None:
    """``train.polish_networks`` (the polish of every MLP, single or batched) that raises _Interrupt."""
    def polish_networks(*args, **kwargs):
        raise _Interrupt

    monkeypatch.setattr(train, "polish_networks", polish_networks)


def test_run_killed_while_polishing_resumes_from_the_end_of_sgd(monkeypatch):
    ds, cfg = _polish_problem()
    reference = train.train(_model(), ds.X, ds.y, cfg, use_cache=False)
    _killing_polish(monkeypatch)
    with pytest.raises(_Interrupt):
        train.train(_model(), ds.X, ds.y, cfg)
    key, _ = train.cache_key(_model(), cfg, ds.X, ds.y)
    assert cache.load(key + ".partial")[1]["step"] == cfg.steps, "no checkpoint of the finished SGD stage"
    monkeypatch.setattr(train, "polish_networks", _real_polish_networks)
    steps = []
    monkeypatch.setattr(train.Checkpointer, "__call__", lambda self, step, buffers: steps.append(step))
    resumed = train.train(_model(), ds.X, ds.y, cfg)
    assert steps == [], "the resumed run redid SGD steps"
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=name)
    assert resumed.history["step"] == reference.history["step"]
    assert resumed.history["phase"] == reference.history["phase"]
    assert resumed.polish_stop == reference.polish_stop
    assert not list(cache.cache_dir().glob("*.partial.*")), "the checkpoint outlived the finished run"


def test_ensemble_killed_while_polishing_resumes_from_its_sgd_checkpoint(monkeypatch, tmp_path):
    """Killed while its members are polished (one batched solve): every member is polished again from the
    end of the batched SGD stage (no SGD step is redone), the result is the uninterrupted one, and no
    ``.partial`` entry remains."""
    from nrc_utils import ensemble

    ds, cfg = _polish_problem()
    lams, seeds = ensemble.grid([1e-3, 1e-2], [3, 4])

    def run():
        return ensemble.train_ensemble(8, [12, 12], 3, lams, seeds, ds.X, ds.y, cfg, bias=True, device="cpu")

    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "reference"))
    reference = run()
    monkeypatch.setenv("NRC_CACHE_DIR", str(tmp_path / "interrupted"))
    _killing_polish(monkeypatch)
    with pytest.raises(_Interrupt):
        run()
    assert len(list(cache.cache_dir().glob("*.partial.json"))) == len(lams)

    monkeypatch.setattr(train, "polish_networks", _real_polish_networks)
    sgd_calls = []
    real_sgd = ensemble.run_sgd_ensemble
    monkeypatch.setattr(ensemble, "run_sgd_ensemble", lambda *a, **k: sgd_calls.append(1) or real_sgd(*a, **k))
    resumed = run()
    assert sgd_calls == [], "the resumed ensemble redid its SGD stage"
    assert not any(r.from_cache for r in resumed)
    for ref, res in zip(reference, resumed):
        for (name, a), b in zip(ref.model.state_dict().items(), res.model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=name)
        assert res.history["step"] == ref.history["step"] and res.history["phase"] == ref.history["phase"]
        assert res.history["loss"] == pytest.approx(ref.history["loss"], rel=1e-9)
        assert res.polish_stop == ref.polish_stop and res.residuals == pytest.approx(ref.residuals, rel=1e-6)
    assert not list(cache.cache_dir().glob("*.partial.*")), "a checkpoint outlived the finished ensemble"
    assert not list((tmp_path / "reference").glob("*.partial.*"))
    assert all(r.from_cache for r in run())


def test_ensemble_killed_before_its_batched_checkpoint_was_removed_leaves_nothing(monkeypatch, tmp_path):
    """Killed after the members' end-of-SGD checkpoints were written but before the batched one was removed."""
    from nrc_utils import ensemble

    ds, cfg = _polish_problem()
    lams, seeds = ensemble.grid([1e-3, 1e-2], [3, 4])
    real_discard = train.Checkpointer.discard

    def stuck(self):
        raise _Interrupt

    monkeypatch.setattr(train.Checkpointer, "discard", stuck)
    monkeypatch.setattr(train.Checkpointer, "__call__", lambda self, step, buffers: (
        setattr(self, "every", 0.0), _real_call(self, step, buffers)))
    with pytest.raises(_Interrupt):
        ensemble.train_ensemble(8, [12, 12], 3, lams, seeds, ds.X, ds.y, cfg, bias=True, device="cpu")
    assert len(list(cache.cache_dir().glob("*.partial.json"))) == len(lams) + 1
    monkeypatch.setattr(train.Checkpointer, "discard", real_discard)
    monkeypatch.setattr(train.Checkpointer, "__call__", _real_call)
    ensemble.train_ensemble(8, [12, 12], 3, lams, seeds, ds.X, ds.y, cfg, bias=True, device="cpu")
    assert not list(cache.cache_dir().glob("*.partial.*"))


_real_polish_networks = train.polish_networks
_real_call = train.Checkpointer.__call__
