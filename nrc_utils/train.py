"""Training to stationarity of the weight-decayed loss.

``L_lambda(Theta) = L_0(Theta) + (lambda/2) sum_l ||W_l||_F^2`` (biases included in
the penalty when ``decay_bias``). Stage 1 is full-batch gradient descent or
mini-batch SGD, using ``torch.optim.SGD(weight_decay=lambda)``, whose update
``W <- W - lr (grad L_0 + lambda W)`` is exactly the gradient step on ``L_lambda``
(a test checks it; chapter 2, "Training to stationarity"). Stage 2, on request,
polishes with L-BFGS in float64 on the full batch until the relative stationarity
residual of every layer, ``||grad_{W_l} L_0 + lambda W_l||_F / ||lambda W_l||_F``, is
below ``polish_tol``.

With smooth activations (tanh) the residual reaches 1e-6 and below; with ReLU it stalls
far above, because the loss is not smooth (``benchmarks/README.md`` has the measured
times and residuals). Use smooth activations where exact stationarity matters and
report the residual of every network (``TrainResult.residuals``).
``polish_max_seconds`` is a wall-clock safeguard: set it well above the time
``polish_max_iter`` needs, so that results (which are cached) do not depend on
the machine's load.

For ``models.MLP`` networks both stages of the polish are those of :mod:`nrc_utils.stationary`,
one network (:func:`train`) or a whole ensemble (``ensemble.train_ensemble``) at a time: batched
L-BFGS to ``polish_tol``, then, with ``newton_tol`` and a smooth activation, Newton's method to
``newton_tol`` and the smallest eigenvalue of the Hessian of ``L_lambda`` at the final point
(:func:`polish_networks`). A single run and an ensemble member therefore run the same solver and
share their cached result. Other modules are polished by ``torch.optim.LBFGS`` (:func:`polish`).

Results are cached (:mod:`nrc_utils.cache`) under :func:`cache_key`; the SGD stage of a
cached run is checkpointed by a :class:`Checkpointer`, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import cache as _cache
from .device import pick_device, progress
from .gradients import stationarity_residuals
from .models import MLP, weight_layers
from .losses import accuracy, check_loss, sample_losses

log = logging.getLogger(__name__)

#: Names the polishing solver in cache keys, so results of an earlier solver are not reused: MLPs go
#: through :mod:`nrc_utils.stationary` (L-BFGS, history 50, then Newton), other modules through
#: ``torch.optim.LBFGS``; both on ``L_lambda / lambda^2`` in float64.
POLISH_METHOD = "stationary.lbfgs(h=50)+newton / torch-lbfgs, float64, L_lambda/lambda^2"

#: Keyword arguments of every ``stationary.lbfgs`` call made by :func:`polish_networks`.
LBFGS_OPTIONS = {"history_size": 50}


#: Why :func:`polish` stopped: the residual target, the wall-clock cap, a chunk that no longer
#: lowered the loss, or the iteration cap.
POLISH_STOPS = ("target", "time cap", "no progress", "iteration cap")


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and what to change."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class TrainConfig:
    """Every choice of a training run (all of it enters the cache key).

    ``batch_size=None`` is full-batch gradient descent. ``steps`` counts
    optimiser steps of stage 1. ``polish_tol=None`` skips the L-BFGS stage.
    ``newton_tol`` (with ``polish_tol``; MLPs only) adds the Newton stage after L-BFGS: at most
    ``newton_max_iter`` Newton steps and ``polish_max_seconds`` of wall time, to a residual at or
    below ``newton_tol``, skipped for non-smooth activations (ReLU), whose Hessian does not exist
    at every point. The Newton stage ends with the extreme eigenvalues of the Hessian of ``L_lambda``
    for networks of at most ``hessian_max_params`` parameters (``None``: every network); above it
    they are not computed (Lanczos needs thousands of Hessian-vector products on such networks).
    """

    lam: float = 1e-3
    loss: str = "mse"
    lr: float = 0.1
    steps: int = 1000
    batch_size: int | None = None
    momentum: float = 0.0
    decay_bias: bool = True
    seed: int = 0
    dtype: str = "float32"
    record_every: int = 50
    polish_tol: float | None = None
    polish_max_iter: int = 5000
    polish_max_seconds: float = 60.0
    polish_chunk: int = 50
    newton_tol: float | None = None
    newton_max_iter: int = 20
    hessian_max_params: int | None = None

    def validate(self) -> "TrainConfig":
        """Refuse bad input with one line saying what to do."""
        if isinstance(self.lam, bool) or not isinstance(self.lam, numbers.Real) or not math.isfinite(self.lam) \
                or self.lam < 0:
            raise ValueError(f"weight decay lambda must be a finite number >= 0, got {self.lam}; use lam=0 for no weight decay")
        check_loss(self.loss)
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real) or not (0 < self.lr < math.inf):
            raise ValueError(f"learning rate must be a finite number > 0, got {self.lr!r}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None (full batch), got {self.batch_size!r}")
        for name in ("steps", "record_every", "polish_max_iter", "polish_chunk", "newton_max_iter"):
            value = getattr(self, name)
            if not _is_int(value) or value < (0 if name == "steps" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'steps' else 'positive'} integer, "
                                 f"got {value!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.polish_tol is not None and self.lam == 0:
            raise ValueError("L-BFGS polishing targets the residual of lambda W = -grad L_0, which needs lam > 0")
        if self.newton_tol is not None:
            if self.polish_tol is None:
                raise ValueError("newton_tol needs polish_tol: Newton's stage starts where L-BFGS stops")
            if isinstance(self.newton_tol, bool) or not isinstance(self.newton_tol, numbers.Real) \
                    or not (0 < self.newton_tol < math.inf):
                raise ValueError(f"newton_tol must be a finite number > 0 (or None: no Newton stage), got {self.newton_tol!r}")
        if self.hessian_max_params is not None and (not _is_int(self.hessian_max_params) or self.hessian_max_params < 0):
            raise ValueError(f"hessian_max_params must be an integer >= 0 or None (every network), "
                             f"got {self.hessian_max_params!r}")
        return self


@dataclass
class TrainResult:
    """A trained model with its record.

    ``history`` holds lists keyed ``step, phase, loss, loss0, acc, residual,
    seconds`` (``loss`` is ``L_lambda``, ``residual`` the largest per-layer
    relative residual); ``residuals`` are the final per-layer residuals;
    ``polish_stop`` says why L-BFGS stopped (:data:`POLISH_STOPS`), ``None``
    when the run was not polished; ``newton_stop`` why Newton's stage stopped (``None`` when it
    did not run); ``min_eigenvalue`` the smallest eigenvalue of the Hessian of ``L_lambda`` at the
    returned weights (computed with the Newton stage; ``None`` otherwise): positive at a strict
    local minimum, negative at a saddle; ``max_eigenvalue`` the largest one, the scale that says whether
    the smallest is zero up to rounding (``nrc_utils.stationary.ZERO_RTOL``); ``hessian`` how they were
    found: ``"eigvalsh"`` or ``"lanczos"``, or why not: ``"lanczos: step cap"`` / ``"lanczos: time cap"``
    (not converged), ``"skipped"`` (more parameters than ``hessian_max_params``); ``None`` without a
    Newton stage.
    """

    model: nn.Module
    config: TrainConfig
    history: dict[str, list] = field(default_factory=dict)
    residuals: list[float] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    from_cache: bool = False
    polish_stop: str | None = None
    newton_stop: str | None = None
    min_eigenvalue: float | None = None
    max_eigenvalue: float | None = None
    hessian: str | None = None

    @property
    def max_residual(self) -> float:
        return max(self.residuals) if self.residuals else math.nan

    @property
    def stop(self) -> str | None:
        """Why the last polishing stage stopped: Newton's reason when it ran, else L-BFGS's (``None``: not polished)."""
        return self.newton_stop if self.newton_stop is not None else self.polish_stop

    @property
    def target(self) -> float | None:
        """The residual target of the last polishing stage (``newton_tol`` when Newton ran, else ``polish_tol``)."""
        return self.config.newton_tol if self.newton_stop is not None else self.config.polish_tol

    @property
    def reached(self) -> bool:
        """Whether the last polishing stage stopped at its target."""
        return self.stop == "target"


def batch_indices(N: int, batch_size: int | None, steps: int, seed: int) -> Iterator[torch.Tensor | None]:
    """Mini-batches for ``steps`` steps: reshuffled each epoch by a generator seeded with ``seed``.

    Yields ``None`` for full-batch steps. An ensemble member with the same seed
    sees exactly the same batches.
    """
    if batch_size is None or batch_size >= N:
        for _ in range(steps):
            yield None
        return
    g = torch.Generator().manual_seed(int(seed) + 1)
    per_epoch = N // batch_size
    t = 0
    while t < steps:
        perm = torch.randperm(N, generator=g)
        for b in range(per_epoch):
            if t >= steps:
                return
            yield perm[b * batch_size:(b + 1) * batch_size]
            t += 1


def penalty(model: nn.Module, decay_bias: bool = True) -> torch.Tensor:
    """``(1/2) sum_l ||W_l||_F^2`` (plus ``||b_l||^2`` when ``decay_bias``)."""
    total = 0.0
    for m in weight_layers(model):
        total = total + m.weight.pow(2).sum()
        if decay_bias and m.bias is not None:
            total = total + m.bias.pow(2).sum()
    return 0.5 * total


def regularised_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
                     decay_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_lambda, outputs)`` with ``L_lambda = L_0 + lambda * penalty``."""
    out = model(X)
    return sample_losses(out, y, loss).mean() + lam * penalty(model, decay_bias), out


def evaluate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> dict[str, float]:
    """Full-batch ``L_lambda``, ``L_0``, accuracy and the largest relative residual."""
    with torch.no_grad():
        out = model(X)
        L0 = sample_losses(out, y, cfg.loss).mean().item()
        L = L0 + cfg.lam * penalty(model, cfg.decay_bias).item()
    res = max(stationarity_residuals(model, X, y, cfg.lam, cfg.loss, cfg.decay_bias)) if cfg.lam > 0 else math.nan
    return {"loss": L, "loss0": L0, "acc": accuracy(out, y), "residual": res}


def _check_finite(value: float, step: int, phase: str, cfg: TrainConfig) -> None:
    if not math.isfinite(value):
        raise DivergenceError(
            f"training diverged: the loss is {value} at {phase} step {step} (lr={cfg.lr}, lambda={cfg.lam}); "
            "lower the learning rate")


def _record(history: dict[str, list], step: int, phase: str, metrics: dict[str, float], t0: float) -> None:
    for k, v in {"step": step, "phase": phase, **metrics, "seconds": time.perf_counter() - t0}.items():
        history.setdefault(k, []).append(v)


def _sgd_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    weights, biases = [], []
    for m in weight_layers(model):
        weights.append(m.weight)
        if m.bias is not None:
            biases.append(m.bias)
    groups = [{"params": weights, "weight_decay": cfg.lam}]
    if biases:
        groups.append({"params": biases, "weight_decay": cfg.lam if cfg.decay_bias else 0.0})
    return groups


def run_sgd(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, history: dict[str, list],
            callback: Callable[[int, nn.Module], None] | None = None, start_step: int = 0,
            momentum_buffers: list[torch.Tensor | None] | None = None,
            checkpoint: Callable[[int, list[torch.Tensor | None]], None] | None = None) -> None:
    """Stage 1: ``cfg.steps`` of (mini-batch) SGD on ``L_lambda`` via ``SGD(weight_decay=lambda)``.

    To resume an interrupted run, pass the ``start_step`` and ``momentum_buffers`` of a
    checkpoint (the weights already loaded in ``model``): the batch sequence is
    replayed from the same seed, so the resumed run equals an uninterrupted one.
    ``checkpoint(step, buffers)`` is called after every step with the steps done.
    A ``history`` that already ends with the record of step ``cfg.steps`` (a checkpoint of
    the finished stage, ``start_step == cfg.steps``) is not recorded again.
    """
    opt = torch.optim.SGD(_sgd_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)
    params = [p for group in opt.param_groups for p in group["params"]]
    if momentum_buffers is not None:
        for p, buf in zip(params, momentum_buffers):
            if buf is not None:
                opt.state[p]["momentum_buffer"] = buf.to(p)
    t0 = time.perf_counter()
    batches = batch_indices(X.shape[0], cfg.batch_size, cfg.steps, cfg.seed)
    for step, idx in enumerate(progress(batches, total=cfg.steps, desc=f"SGD lambda={cfg.lam:g}")):
        if step < start_step:
            continue  # replay the batch order up to the checkpoint
        if step % cfg.record_every == 0:
            metrics = evaluate(model, X, y, cfg)
            _check_finite(metrics["loss"], step, "SGD", cfg)
            _record(history, step, "sgd", metrics, t0)
        xb, yb = (X, y) if idx is None else (X[idx], y[idx])
        opt.zero_grad(set_to_none=True)
        L0 = sample_losses(model(xb), yb, cfg.loss).mean()
        L0.backward()
        _check_finite(L0.item(), step, "SGD", cfg)
        opt.step()
        if callback is not None:
            callback(step, model)
        if checkpoint is not None:
            checkpoint(step + 1, [opt.state[p].get("momentum_buffer") for p in params])
    if start_step >= cfg.steps and _finished_sgd(history, cfg.steps):
        return  # resumed from the end of the stage: its last record is there already
    metrics = evaluate(model, X, y, cfg)
    _check_finite(metrics["loss"], cfg.steps, "SGD", cfg)
    _record(history, cfg.steps, "sgd", metrics, t0)


def _finished_sgd(history: dict[str, list], steps: int) -> bool:
    """Whether ``history`` ends with the record that closes an SGD stage of ``steps`` steps.

    Records inside the stage are at steps ``< steps``, so only the closing one is at ``steps``."""
    return bool(history.get("step")) and history["step"][-1] == steps and history["phase"][-1] == "sgd"


def polish(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, history: dict[str, list]) -> str:
    """Stage 2: full-batch L-BFGS on ``L_lambda`` in float64 until every layer's residual is below ``polish_tol``.

    Runs in chunks of ``polish_chunk`` L-BFGS iterations, checking the residual
    after each, and stops at the target, at ``polish_max_iter`` iterations, after
    ``polish_max_seconds``, or when a chunk no longer lowers the loss (a
    non-smooth loss, e.g. ReLU, stalls there: its residual is reported as is).
    Returns which of these stopped it (one of :data:`POLISH_STOPS`).

    L-BFGS minimises ``L_lambda / lambda^2`` (same minimisers, same stationary
    points). ``torch.optim.LBFGS`` keeps a curvature pair ``(s, y)`` only when
    ``y.s > 1e-10`` in absolute terms; near a stationary point of ``L_lambda`` with
    a small lambda the pairs fall below that, the Hessian model freezes and the
    residual stalls (``benchmarks/README.md``, "Time to stationarity"). The
    scaling multiplies ``y.s`` by ``1/lambda^2`` and removes the stall. The record
    and the stopping tests use the unscaled loss.
    """
    model.double()
    X = X.double()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=cfg.polish_chunk, history_size=100,
                            tolerance_grad=1e-300, tolerance_change=1e-300, line_search_fn="strong_wolfe")
    scale = 1.0 / cfg.lam**2 if cfg.lam > 0 else 1.0

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        L, _ = regularised_loss(model, X, y, cfg.lam, cfg.loss, cfg.decay_bias)
        L = L * scale
        L.backward()
        return L

    t0 = time.perf_counter()
    start = history["step"][-1] if history.get("step") else 0
    previous = math.inf
    chunks = max(1, cfg.polish_max_iter // cfg.polish_chunk)
    for c in progress(range(chunks), total=chunks, desc=f"L-BFGS lambda={cfg.lam:g}"):
        opt.step(closure)
        metrics = evaluate(model, X, y, cfg)
        _check_finite(metrics["loss"], (c + 1) * cfg.polish_chunk, "L-BFGS", cfg)
        _record(history, start + (c + 1) * cfg.polish_chunk, "lbfgs", metrics, t0)
        if metrics["residual"] < cfg.polish_tol:
            return "target"
        if time.perf_counter() - t0 > cfg.polish_max_seconds:
            return "time cap"
        if metrics["loss"] >= previous:
            return "no progress"
        previous = metrics["loss"]
    return "iteration cap"


@dataclass
class PolishOutcome:
    """How :func:`polish_networks` ended for one network: the stop reasons of its two stages and the
    extreme eigenvalues of the Hessian of ``L_lambda`` with how they were found (``None`` where the
    Newton stage did not run; :class:`TrainResult` says more)."""

    polish_stop: str
    newton_stop: str | None
    min_eigenvalue: float | None
    max_eigenvalue: float | None = None
    hessian: str | None = None


def finished_result(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, history: dict[str, list],
                    outcome: PolishOutcome | None) -> TrainResult:
    """The :class:`TrainResult` of a finished run: the final metrics and per-layer residuals of ``model`` on
    ``(X, y)`` (in the model's dtype), the polish ``outcome``'s stops and eigenvalues (``None``: not polished);
    the model is moved to the CPU. Shared by :func:`train`, :func:`polish_warm` and
    ``ensemble.train_ensemble``."""
    X = X.to(next(model.parameters()).dtype)
    final = evaluate(model, X, y, cfg)
    residuals = stationarity_residuals(model, X, y, cfg.lam, cfg.loss, cfg.decay_bias) if cfg.lam > 0 else []
    model.cpu()
    if outcome is None:
        return TrainResult(model, cfg, history, residuals, final)
    return TrainResult(model, cfg, history, residuals, final, polish_stop=outcome.polish_stop,
                       newton_stop=outcome.newton_stop, min_eigenvalue=outcome.min_eigenvalue,
                       max_eigenvalue=outcome.max_eigenvalue, hessian=outcome.hessian)


def polish_networks(nets: list[nn.Module], X: torch.Tensor, y: torch.Tensor, cfgs: list[TrainConfig],
                    histories: list[dict[str, list]]) -> list[PolishOutcome]:
    """Stage 2 for ``models.MLP`` networks of one architecture, all at once, in float64 on ``X``'s device.

    :func:`nrc_utils.stationary.lbfgs` (batched over the networks, each with its own lambda, target
    ``polish_tol``, ``polish_max_iter`` and ``polish_max_seconds``) on ``L_lambda / lambda^2``; then,
    for the networks whose config sets ``newton_tol`` and whose activation is smooth
    (``models.SMOOTH_ACTIVATIONS``), :func:`nrc_utils.stationary.newton` to ``newton_tol`` with the
    smallest Hessian eigenvalue at the returned point. The networks' weights are replaced by the
    result (float64). Each history gets the stages' records: ``"lbfgs"`` every ``polish_chunk``
    iterations (``acc`` NaN there: no outputs are computed) and at its end, ``"newton"`` at the end
    of Newton's stage, at steps counted on from the history's last step.
    """
    from . import stationary  # imports this module
    from .models import MLP, SMOOTH_ACTIVATIONS

    if not nets:
        return []
    if not all(isinstance(n, MLP) for n in nets):
        raise TypeError("polish_networks polishes models.MLP networks; polish other modules with train.polish")
    X = X.double()
    for n in nets:
        n.double()
    problem, theta = stationary.Problem.from_mlps(nets, X, y, [c.lam for c in cfgs], cfgs[0].loss, cfgs[0].decay_bias)
    first = stationary.lbfgs(problem, theta, tol=[c.polish_tol for c in cfgs], max_iter=[c.polish_max_iter for c in cfgs],
                             max_seconds=max(c.polish_max_seconds for c in cfgs), trace_every=cfgs[0].polish_chunk,
                             **LBFGS_OPTIONS)
    for m, c in enumerate(cfgs):
        if not math.isfinite(float(first.loss[m])):
            raise DivergenceError(f"L_lambda became {float(first.loss[m])} in L-BFGS (lambda={c.lam:g}, seed={c.seed}); "
                                  "lower lr or raise lam")
    theta = first.theta.clone()
    newton_rows = [m for m, c in enumerate(cfgs)
                   if c.newton_tol is not None and problem.activation in SMOOTH_ACTIVATIONS]
    second = None
    if newton_rows:
        rows = torch.tensor(newton_rows, device=problem.device)
        sub = stationary.Problem(problem.d_in, problem.widths, problem.d_out, X if problem.shared else X[rows],
                                 y if problem.shared else y[rows], problem.lams[rows], problem.loss, problem.activation,
                                 problem.bias, problem.decay_bias, [problem.seeds[m] for m in newton_rows])
        caps = [cfgs[m].hessian_max_params for m in newton_rows]
        spectra = all(cap is None or problem.P <= cap for cap in caps)
        second = stationary.newton(sub, theta[rows], tol=[cfgs[m].newton_tol for m in newton_rows],
                                   max_iter=max(cfgs[m].newton_max_iter for m in newton_rows),
                                   max_seconds=max(cfgs[m].polish_max_seconds for m in newton_rows),
                                   eigenvalues=spectra)
        theta[rows] = second.theta
    weights, biases = problem.unflatten(theta)
    outcomes = []
    for m, (net, c, history) in enumerate(zip(nets, cfgs, histories)):
        with torch.no_grad():
            for l, layer in enumerate(net.layers):
                layer.weight.copy_(weights[l][m])
                if biases is not None:
                    layer.bias.copy_(biases[l][m])
        start = history["step"][-1] if history.get("step") else 0
        t0 = time.perf_counter() - first.seconds[m]
        for it, loss, loss0, res, sec in first.trace[m]:
            _record(history, start + it, "lbfgs", {"loss": loss, "loss0": loss0, "acc": math.nan, "residual": res},
                    time.perf_counter() - sec)
        Xm = X if problem.shared else X[m]
        ym = y if problem.shared else y[m]
        newton_stop = min_eig = max_eig = hessian = None
        if m in newton_rows:
            j = newton_rows.index(m)
            newton_stop = second.stops[j]
            hessian = second.eig_method[j] if spectra else "skipped"
            if math.isfinite(float(second.min_eigenvalue[j])):
                min_eig, max_eig = float(second.min_eigenvalue[j]), float(second.max_eigenvalue[j])
            # the L-BFGS stage's closing record is not kept apart: its point is the start of Newton's
            pen = 0.5 * float(problem.lams[m] * (first.theta[m] ** 2 * problem.decay).sum())
            _record(history, start + first.iterations[m], "lbfgs",
                    {"loss": float(first.loss[m]), "loss0": float(first.loss[m]) - pen, "acc": math.nan,
                     "residual": float(first.max_residuals[m])}, t0)
            _record(history, start + first.iterations[m] + second.iterations[j], "newton", evaluate(net, Xm, ym, c),
                    t0 - second.seconds[j])
        else:
            _record(history, start + first.iterations[m], "lbfgs", evaluate(net, Xm, ym, c), t0)
        outcomes.append(PolishOutcome(first.stops[m], newton_stop, min_eig, max_eig, hessian))
    return outcomes


def fingerprint(X: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of the data's bytes, so cached results are tied to the exact data."""
    h = hashlib.sha256()
    h.update(str((tuple(X.shape), str(X.dtype))).encode())
    h.update(X.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_key(model: nn.Module, cfg: TrainConfig, X: torch.Tensor, y: torch.Tensor,
              device: str | torch.device = "auto") -> tuple[str, dict]:
    """``(key, config)`` a trained result is cached under.

    The config holds the model's constructor arguments, a hash of its starting
    weights (so a warm-started model never takes a cold start's result), ``cfg``,
    a hash of the data and the type of the device it is trained on (``device`` as
    :func:`train` takes it: ``"auto"`` is CUDA when present). The key adds what
    :func:`nrc_utils.cache.config_key` adds: the package version, the code fingerprint
    (:func:`nrc_utils.cache.code_fingerprint`), the torch version and the thread count.
    A single run and an ensemble member with the same start, config, data and device
    share the key.
    """
    start = hashlib.sha256()
    for name, value in model.state_dict().items():
        start.update(name.encode())
        start.update(value.detach().cpu().double().contiguous().numpy().tobytes())
    config = {"what": "train", "polish": POLISH_METHOD, "model": getattr(model, "config", None), "start": start.hexdigest(),
              "train": asdict(cfg), "data": fingerprint(X, y), "device": pick_device(device).type}
    return _cache.config_key(config), config


def load_result(key: str, model: nn.Module, cfg: TrainConfig) -> TrainResult | None:
    """The result cached under ``key`` restored into ``model`` (weights, dtype, record), or ``None``."""
    hit = _cache.load(key)
    if hit is None:
        return None
    arrays, meta = hit
    if cfg.polish_tol is not None and meta.get("polish_stop") not in POLISH_STOPS:
        return None  # written before polishing recorded why it stopped: recompute
    if meta.get("newton_stop") is not None and meta["newton_stop"] not in POLISH_STOPS:
        return None
    model.to(dtype=torch.float64 if cfg.dtype == "float64" or cfg.polish_tol is not None else torch.float32)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    return TrainResult(model, cfg, meta["history"], meta["residuals"], meta["final"], from_cache=True,
                       polish_stop=meta.get("polish_stop"), newton_stop=meta.get("newton_stop"),
                       min_eigenvalue=meta.get("min_eigenvalue"), max_eigenvalue=meta.get("max_eigenvalue"),
                       hessian=meta.get("hessian"))


def save_result(key: str, config: dict, result: TrainResult) -> bool:
    """Store a finished result (weights and record) under ``key``; ``config`` documents the entry.

    Returns ``False`` (logged, :func:`nrc_utils.cache.try_save`) when the cache folder
    refuses the write: the result is still the caller's to use."""
    arrays = {k: v.detach().cpu().numpy() for k, v in result.model.state_dict().items()}
    return _cache.try_save(key, arrays, {"history": result.history, "residuals": result.residuals,
                                         "final": result.final, "polish_stop": result.polish_stop,
                                         "newton_stop": result.newton_stop, "min_eigenvalue": result.min_eigenvalue,
                                         "max_eigenvalue": result.max_eigenvalue, "hessian": result.hessian},
                           config=config)


class Checkpointer:
    """Checkpoints of an SGD stage, kept in the cache under ``<key>.partial``, so that an interrupted run resumes.

    ``key`` is the key of the result being trained (:func:`cache_key`; for a batched
    ensemble, a key of its members); ``model`` the network (an ``MLP``, any module, or an
    ``ensemble.MLPEnsemble``); ``history`` its record, or a list of records (one per
    ensemble member), saved with the weights and restored in place.

    - Passed as the ``checkpoint`` argument of :func:`run_sgd` (or
      ``ensemble.run_sgd_ensemble``), it is called after every step and saves at most every
      ``every_seconds`` (so nothing for runs shorter than that).
    - :meth:`save` saves now; :func:`train` and ``ensemble.train_ensemble`` save once at the
      end of the SGD stage when polishing follows, so that a run interrupted while polishing
      starts polishing again instead of redoing SGD. A checkpoint at ``step == cfg.steps``
      whose record ends with the stage's closing record marks a finished SGD stage
      (:meth:`resume_finished`).
    - :meth:`resume` restores the latest checkpoint; :meth:`discard` removes it once the
      result is cached.

    An entry holds the arrays ``model.<name>`` (the state dict) and ``momentum.<i>`` (the SGD
    momentum buffers, in the optimiser's parameter order) and the meta ``step``, ``history``
    and ``n_buffers``. A cache folder that refuses a checkpoint does not stop training: the
    refusal is logged once (:func:`nrc_utils.cache.try_save`) and this run checkpoints no
    more.
    """

    def __init__(self, key: str, model: nn.Module, history: dict[str, list] | list[dict[str, list]],
                 every_seconds: float) -> None:
        self.key, self.model, self.history, self.every = key + ".partial", model, history, every_seconds
        self.last = time.perf_counter()
        self.enabled = True

    def __call__(self, step: int, buffers: list[torch.Tensor | None]) -> None:
        if not self.enabled or time.perf_counter() - self.last < self.every:
            return
        self.save(step, buffers)

    def save(self, step: int, buffers: list[torch.Tensor | None] = ()) -> bool:
        """Save the model, history and ``buffers`` as the state after ``step`` steps; ``False`` when refused."""
        arrays = {f"model.{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        arrays.update({f"momentum.{i}": b.detach().cpu().numpy() for i, b in enumerate(buffers) if b is not None})
        saved = _cache.try_save(self.key, arrays, {"step": step, "history": self.history, "n_buffers": len(buffers)})
        self.enabled = self.enabled and saved
        self.last = time.perf_counter()
        return saved

    def _restore(self, arrays: dict, meta: dict, dev: torch.device, dtype: torch.dtype
                 ) -> tuple[int, list[torch.Tensor | None]]:
        self.model.load_state_dict({k[len("model."):]: torch.from_numpy(v) for k, v in arrays.items()
                                    if k.startswith("model.")})
        self.model.to(device=dev, dtype=dtype)
        if isinstance(self.history, dict):
            self.history.clear()
            self.history.update(meta["history"])
        else:
            self.history[:] = meta["history"]
        buffers = [torch.from_numpy(arrays[f"momentum.{i}"]) if f"momentum.{i}" in arrays else None
                   for i in range(meta["n_buffers"])]
        return int(meta["step"]), buffers

    def resume(self, dev: torch.device, dtype: torch.dtype) -> tuple[int, list[torch.Tensor | None] | None]:
        """Load the latest checkpoint into the model and history; return ``(start_step, momentum_buffers)``
        (``(0, None)``, nothing touched, when there is none)."""
        hit = _cache.load(self.key)
        if hit is None:
            return 0, None
        return self._restore(*hit, dev, dtype)

    def resume_finished(self, dev: torch.device, dtype: torch.dtype, steps: int) -> bool:
        """Restore the checkpoint only if it is that of a finished SGD stage of ``steps`` steps (see the
        class docstring); return whether it was. Model and history are untouched otherwise."""
        hit = _cache.load(self.key)
        if hit is None:
            return False
        arrays, meta = hit
        if meta.get("step") != steps or not isinstance(meta.get("history"), dict) \
                or not _finished_sgd(meta["history"], steps):
            return False
        self._restore(arrays, meta, dev, dtype)
        return True

    def discard(self) -> None:
        """Remove the checkpoint (a folder that refuses is logged and left as it is)."""
        try:
            _cache.discard(self.key)
        except OSError as err:
            log.info("checkpoint %s could not be removed (%s: %s)", self.key, type(err).__name__, err)


def train(model: nn.Module, X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, device: str = "auto",
          callback: Callable[[int, nn.Module], None] | None = None, use_cache: bool = True,
          checkpoint_seconds: float = 60.0) -> TrainResult:
    """Train ``model`` on ``(X, y)`` (integer labels) with ``cfg``; polish to stationarity if asked.

    The result is cached under :func:`cache_key` (:mod:`nrc_utils.cache`)
    unless a ``callback`` is given or ``use_cache`` is false; a cache hit restores
    the exact trained weights and record. While caching, the SGD stage saves a
    checkpoint every ``checkpoint_seconds``, and an interrupted run resumes from
    it with the same result as an uninterrupted one; when polishing follows, the end
    of the SGD stage is checkpointed too, so an interruption during L-BFGS restarts
    L-BFGS from there (:class:`Checkpointer`). The checkpoint is removed once the
    result is cached. The model is returned on the CPU.

    While caching, the cache folder is checked before anything else
    (:func:`nrc_utils.cache.check_cache_dir` raises ``CacheDirError`` for a folder
    that cannot be written); a folder that refuses the final save later does not
    lose the result, which is returned (the refusal is logged).
    """
    cfg.validate()
    if cfg.newton_tol is not None and not isinstance(model, MLP):
        raise ValueError(f"newton_tol needs a models.MLP (the Newton stage is nrc_utils.stationary's), got "
                         f"{type(model).__name__}; set newton_tol=None")
    dev = pick_device(device)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    history: dict[str, list] = {}
    key = checkpointer = None
    if use_cache and callback is None:
        _cache.check_cache_dir()
        key, key_config = cache_key(model, cfg, X, y, device=dev)
        hit = load_result(key, model, cfg)
        if hit is not None:
            return hit
        checkpointer = Checkpointer(key, model, history, checkpoint_seconds)

    model.to(device=dev, dtype=dtype)
    Xd, yd = X.to(dev, dtype), y.to(dev)
    start, buffers = checkpointer.resume(dev, dtype) if checkpointer else (0, None)
    run_sgd(model, Xd, yd, cfg, history, callback, start, buffers, checkpointer)
    outcome = None
    if cfg.polish_tol is not None:
        if checkpointer is not None and start < cfg.steps:
            checkpointer.save(cfg.steps)  # an interruption while polishing resumes from here
        if isinstance(model, MLP):
            outcome = polish_networks([model], Xd, yd, [cfg], [history])[0]
        else:
            outcome = PolishOutcome(polish(model, Xd, yd, cfg, history), None, None)
    result = finished_result(model, Xd, yd, cfg, history, outcome)
    if key is not None:
        save_result(key, key_config, result)
        checkpointer.discard()
    return result


def polish_warm(models_: list[nn.Module], X: torch.Tensor, y: torch.Tensor, cfgs: list[TrainConfig],
                device: str = "auto", use_cache: bool = True) -> list[TrainResult]:
    """``[train(model, X, y, cfg, device) for model, cfg in zip(models_, cfgs)]`` for warm starts
    (``cfg.steps == 0``, ``cfg.polish_tol`` set; e.g. SGD networks of an ensemble trained with
    ``polish=False``), with the networks that are not cached polished together by one
    :func:`polish_networks` call. Each result is cached under the key :func:`train` uses, so either
    call hits the other's cache. The models are polished in place and returned on the CPU."""
    if len(models_) != len(cfgs):
        raise ValueError(f"got {len(models_)} models and {len(cfgs)} configs; pass one config per model")
    for model, cfg in zip(models_, cfgs):
        cfg.validate()
        if cfg.steps != 0 or cfg.polish_tol is None:
            raise ValueError(f"polish_warm polishes warm starts: every config needs steps=0 and a polish_tol, "
                             f"got steps={cfg.steps}, polish_tol={cfg.polish_tol}; use train() for the others")
        if not isinstance(model, MLP):
            raise TypeError(f"polish_warm polishes models.MLP networks, got {type(model).__name__}; use train()")
    dev = pick_device(device)
    out: list[TrainResult | None] = [None] * len(models_)
    keys: list[tuple[str, dict] | None] = [None] * len(models_)
    if use_cache:
        _cache.check_cache_dir()
        for i, (model, cfg) in enumerate(zip(models_, cfgs)):
            keys[i] = cache_key(model, cfg, X, y, device=dev)
            out[i] = load_result(keys[i][0], model, cfg)
    todo = [i for i, r in enumerate(out) if r is None]
    histories: dict[int, dict[str, list]] = {i: {} for i in todo}
    Xd, yd = X.to(dev, torch.float64), y.to(dev)
    for i in todo:
        models_[i].to(device=dev, dtype=torch.float64)
        run_sgd(models_[i], Xd, yd, cfgs[i], histories[i])  # steps=0: the record of the start
    if todo:
        outcomes = polish_networks([models_[i] for i in todo], Xd, yd, [cfgs[i] for i in todo],
                                   [histories[i] for i in todo])
        for i, o in zip(todo, outcomes):
            out[i] = finished_result(models_[i], Xd, yd, cfgs[i], histories[i], o)
            if keys[i] is not None:
                save_result(*keys[i], out[i])
    return out  # type: ignore[return-value]


def history_frame(result: TrainResult) -> "object":
    """The record as a pandas DataFrame (pandas is a book dependency, imported lazily)."""
    import pandas as pd

    return pd.DataFrame(result.history)


__all__ = [
    "Checkpointer", "DivergenceError", "LBFGS_OPTIONS", "POLISH_METHOD", "POLISH_STOPS", "PolishOutcome", "TrainConfig", "TrainResult", "batch_indices", "cache_key", "load_result", "save_result", "evaluate", "finished_result", "fingerprint", "history_frame",
    "penalty", "polish", "polish_networks", "polish_warm", "regularised_loss", "run_sgd", "train",
]

