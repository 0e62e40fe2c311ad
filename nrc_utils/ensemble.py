"""Many networks (a lambda grid times seeds) trained as one batched model.

An ensemble of ``M`` members shares the architecture ``d_in -> widths -> d_out``
(activation, biases) and stores layer ``l`` of all members as one tensor
``W_l`` of shape ``(M, d_l, d_{l-1})`` (biases ``(M, d_l)``). The forward pass
is ``z_l^T = W_l h_{l-1}^T (+ b_l)`` with ``torch.bmm``/``torch.baddbmm``, so
member ``m`` computes exactly ``f_m(x) = W_{L,m} s(... s(W_{1,m} x))``.

Each member's gradient comes from back-propagation written out in the paper's
notation (:func:`signals`), with no autograd graph: ``delta_{L,i} = d loss_i / d f``,
``delta_{l,i} = s'(z_{l,i}) * W_{l+1}^T delta_{l+1,i}`` and

    grad_{W_l} L_0^{(m)} = (1/B) sum_i delta_{l,i} h_{l-1,i}^T        (one torch.bmm for all members).

On a CPU the batched products of small matrices run near the machine's
matrix-multiply peak, so a step costs little besides them (benchmarks/benchmark.py,
part 1). No parameter is shared, so member ``m``'s gradient is ``grad L_0^{(m)}``
exactly, and each member takes the step ``torch.optim.SGD(weight_decay=lambda_m, momentum=mu)`` takes
(``SGD(weight_decay=lambda)`` is the gradient step on
``L_lambda = L_0 + (lambda/2) sum_l ||W_l||_F^2``, chapter 2, "Training to stationarity"):

    d = grad L_0^{(m)} + lambda_m W,   buf = d (first step),  buf = mu buf + d (later),
    W <- W - lr buf                      (W <- W - lr d when mu = 0).

Member ``m`` starts from ``models.init_weights(shapes, seed_m, init_scale)``
(the weights of ``MLP(..., seed=seed_m)``) and draws its mini-batches from
``train.batch_indices(N, batch_size, steps, seed_m)``; so member ``m`` follows
``train.train(MLP(..., seed=seed_m), X, y, TrainConfig(lam=lambda_m, seed=seed_m, ...))``
up to floating-point rounding (``tests/test_ensemble.py`` checks it), and its
result is cached under the same key as that single run (on the same device type).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .device import pick_device, progress
from .losses import check_loss
from .models import MLP, activation_derivative, init_weights, layer_shapes, make_activation
from . import cache as _cache
from . import train as _train
from .train import DivergenceError, TrainConfig, TrainResult, batch_indices

# Full-batch evaluation runs over chunks of samples so that one activation tensor
# (members x samples x width) holds at most this many numbers.
EVAL_ELEMENTS = 2**24


def grid(lams: Sequence[float], seeds: Sequence[int]) -> tuple[list[float], list[int]]:
    """Every combination of a lambda grid and seeds, lambda-major: ``(lams per member, seeds per member)``.

    ``grid([1e-3, 1e-2], [0, 1])`` gives ``([1e-3, 1e-3, 1e-2, 1e-2], [0, 1, 0, 1])``.
    """
    pairs = list(itertools.product(lams, seeds))
    return [float(lam) for lam, _ in pairs], [int(s) for _, s in pairs]


class MLPEnsemble(nn.Module):
    """``M`` MLPs ``d_in -> widths -> d_out`` with stacked weights ``W_l`` of shape ``(M, d_l, d_{l-1})``.

    Member ``m`` is initialised exactly as ``MLP(d_in, widths, d_out, activation,
    bias, seed=seeds[m], init_scale)``: ``W_l ~ N(0, init_scale^2 / fan_in)``,
    biases zero.
    """

    def __init__(self, d_in: int, widths: Sequence[int], d_out: int, seeds: Sequence[int], activation: str = "tanh",
                 bias: bool = False, init_scale: float = 1.0) -> None:
        super().__init__()
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("an ensemble needs at least one member; pass one seed per member")
        self.d_in, self.widths, self.d_out = int(d_in), [int(w) for w in widths], int(d_out)
        self.activation, self.bias, self.init_scale = activation, bool(bias), float(init_scale)
        self.seeds = seeds
        self.act = make_activation(activation)
        shapes = layer_shapes(d_in, widths, d_out)
        inits = [init_weights(shapes, s, init_scale) for s in seeds]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([w[l] for w in inits])) for l in range(len(shapes)))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.zeros(len(seeds), o)) for o, _ in shapes) if bias else None

    @property
    def n_members(self) -> int:
        """Number of members ``M``."""
        return len(self.seeds)

    @property
    def depth(self) -> int:
        """Number of weight matrices ``L``."""
        return len(self.weights)

    def params(self) -> list[torch.Tensor]:
        """The stacked parameters in the order ``W_1, (b_1,) W_2, (b_2,) ...``."""
        out = []
        for l, W in enumerate(self.weights):
            out.append(W)
            if self.biases is not None:
                out.append(self.biases[l])
        return out

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Outputs ``(M, N, d_out)`` for inputs ``X`` of shape ``(N, d_in)`` (shared) or ``(M, N, d_in)`` (per member).

        Computed as ``z_l^T = W_l h_{l-1}^T (+ b_l)``, activations laid out ``(M, d_l, N)``
        as in :func:`signals` (which training uses; this differentiable forward pass is
        for inspecting the members).
        """
        hT = _inputs_T(self, X)
        for l, W in enumerate(self.weights):
            if l > 0:
                hT = _activate(self, hT)
            hT = torch.matmul(W, hT)  # shared inputs: one (M d_1, d) @ (d, N) product for the first layer
            if self.biases is not None:
                hT = hT + self.biases[l][:, :, None]
        return hT.transpose(1, 2)

    def member(self, m: int) -> MLP:
        """An independent ``MLP`` (its ``config`` carries ``seed=seeds[m]``) holding a copy of member ``m``'s weights.

        It lives on the ensemble's device, in its dtype.
        """
        if not 0 <= m < self.n_members:
            raise IndexError(f"member index {m} out of range; the ensemble has {self.n_members} members")
        net = MLP(self.d_in, self.widths, self.d_out, self.activation, self.bias, seed=self.seeds[m],
                  init_scale=self.init_scale)
        net.to(device=self.weights[0].device, dtype=self.weights[0].dtype)
        with torch.no_grad():
            for l, layer in enumerate(net.layers):
                layer.weight.copy_(self.weights[l][m])
                if self.biases is not None:
                    layer.bias.copy_(self.biases[l][m])
        return net


def _inputs_T(ens: MLPEnsemble, X: torch.Tensor) -> torch.Tensor:
    """``h_0^T``: ``(d_in, N)`` for inputs shared by all members, ``(M, d_in, N)`` for inputs ``(M, N, d_in)``."""
    if X.dim() == 2 and X.shape[1] == ens.d_in:
        return X.T
    if X.dim() == 3 and X.shape[0] == ens.n_members and X.shape[2] == ens.d_in:
        return X.transpose(1, 2)
    raise ValueError(f"inputs must have shape (N, {ens.d_in}) or ({ens.n_members}, N, {ens.d_in}), got "
                     f"{tuple(X.shape)}; flatten images to (N, d) first")


def _activate(ens: MLPEnsemble, z: torch.Tensor) -> torch.Tensor:
    """``h = s(z)``; tanh as ``2 sigmoid(2z) - 1``.

    The identity is exact; computed, it differs from ``torch.tanh`` by at most
    1.8e-7 in float32 and 3.3e-16 in float64. On the CPU build this book uses,
    ``torch.tanh`` is not vectorised and this form is faster (``benchmarks/README.md``
    has the timings).
    """
    if ens.activation == "tanh":
        return torch.sigmoid(2 * z).mul_(2).sub_(1)
    return ens.act(z)


def _output_signals(out: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses ``(M, N)`` and ``delta_L = d loss_i / d f`` ``(M, K, N)`` from outputs ``f`` laid out ``(M, K, N)``.

    Square loss ``(1/2) ||f - e_y||^2``: ``delta_L = f - e_y``. Cross-entropy
    ``-log p_y`` with ``p = softmax(f)``: ``delta_L = p - e_y``
    (:mod:`nrc_utils.losses` defines both; ``y`` is ``(N,)`` or ``(M, N)``).
    """
    M, K, N = out.shape
    target = torch.zeros_like(out).scatter_(1, y.expand(M, N).unsqueeze(1), 1.0)  # e_{y_i} in column i
    if check_loss(loss) == "ce":
        logp = torch.log_softmax(out, 1)
        return -(logp * target).sum(1), logp.exp_().sub_(target)
    delta = out - target
    return 0.5 * delta.pow(2).sum(1), delta


def signals(ens: MLPEnsemble, X: torch.Tensor, y: torch.Tensor, loss: str
            ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Forward and backward pass of every member: ``(losses, outputs, inputs, deltas)``, nothing recorded for autograd.

    ``losses[m, i] = loss(f_m(x_i), y_i)`` ``(M, N)``; ``outputs`` ``(M, K, N)``;
    ``inputs[l-1] = h_{l-1}^T`` (``(M, d_{l-1}, N)``, or ``(d_in, N)`` for shared inputs)
    and ``deltas[l-1] = delta_l^T = (d loss_i / d z_l)_i`` ``(M, d_l, N)`` for
    ``l = 1 .. L`` (the book's notation, chapter 2; :func:`nrc_utils.gradients.layer_signals` gives
    the same for one network by autograd). The weight gradient of member ``m`` is
    ``grad_{W_l} L_0 = (1/N) deltas[l-1][m] @ inputs[l-1][m]^T``, the bias gradient
    ``(1/N) deltas[l-1][m].sum(1)``. ``X`` is ``(N, d_in)`` (shared) or ``(M, N, d_in)``;
    ``y`` is ``(N,)`` or ``(M, N)``.
    """
    with torch.no_grad():
        hT = _inputs_T(ens, X)
        inputs, zs, hs = [], [], []
        for l, W in enumerate(ens.weights):
            inputs.append(hT)
            z = torch.matmul(W, hT)  # shared inputs: one (M d_l, d) @ (d, N) product
            if ens.biases is not None:
                z += ens.biases[l][:, :, None]
            if l < ens.depth - 1:
                hT = _activate(ens, z)
                zs.append(z)
                hs.append(hT)
        losses, delta = _output_signals(z, y, loss)
        deltas = [delta]
        for l in range(ens.depth - 1, 0, -1):  # delta_l = s'(z_l) * W_{l+1}^T delta_{l+1}
            delta = torch.bmm(ens.weights[l].transpose(1, 2), delta)
            delta *= activation_derivative(ens.activation, zs[l - 1], hs[l - 1])
            deltas.append(delta)
    return losses, z, inputs, deltas[::-1]


def _add_gradient_(out: torch.Tensor, delta: torch.Tensor, hT: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """``out += alpha * sum_i delta_i h_i^T`` per member (``hT is None``: ``out += alpha * sum_i delta_i``, a bias)."""
    if hT is None:
        return out.add_(delta.sum(2), alpha=alpha)
    if hT.dim() == 2:  # inputs shared by all members
        return out.add_(torch.matmul(delta, hT.T), alpha=alpha)
    return out.baddbmm_(delta, hT.transpose(1, 2), alpha=alpha)


def _gradient_terms(ens: MLPEnsemble, inputs: list[torch.Tensor], deltas: list[torch.Tensor]
                    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(delta_l, h_{l-1}^T)`` for each parameter of ``ens.params()`` in order (``None`` in place of ``h`` for a bias)."""
    terms = []
    for hT, delta in zip(inputs, deltas):
        terms.append((delta, hT))
        if ens.biases is not None:
            terms.append((delta, None))
    return terms


def _penalties(ens: MLPEnsemble, decay_bias: bool) -> torch.Tensor:
    """``(1/2) sum_l ||W_{l,m}||_F^2`` (plus ``||b_{l,m}||^2`` when ``decay_bias``) per member, shape ``(M,)``."""
    total = sum(W.pow(2).sum((1, 2)) for W in ens.weights)
    if decay_bias and ens.biases is not None:
        total = total + sum(b.pow(2).sum(1) for b in ens.biases)
    return 0.5 * total


def evaluate_ensemble(ens: MLPEnsemble, X: torch.Tensor, y: torch.Tensor, lams: torch.Tensor, loss: str,
                      decay_bias: bool) -> dict[str, torch.Tensor]:
    """Full-batch ``L_lambda``, ``L_0``, accuracy and residuals of every member, batched.

    Same quantities as :func:`nrc_utils.train.evaluate`: ``loss = L_0 + lambda_m *
    penalty``; ``residuals[m, l] = ||grad_{Theta_l} L_0 + lambda_m Theta_l||_F /
    ||lambda_m Theta_l||_F`` (:func:`nrc_utils.gradients.stationarity_residuals`,
    undecayed biases in the numerator only), ``residual`` its maximum over layers
    (NaN when ``lambda_m = 0``).
    Gradients come from :func:`signals`, accumulated over chunks of samples.
    """
    M, N = ens.n_members, X.shape[0]
    chunk = max(1, EVAL_ELEMENTS // (M * max([ens.d_in, *ens.widths, ens.d_out])))
    grads = [torch.zeros_like(p) for p in ens.params()]
    loss_sum = torch.zeros(M, dtype=torch.float64, device=X.device)
    correct = torch.zeros(M, dtype=torch.float64, device=X.device)
    with torch.no_grad():
        for start in range(0, N, chunk):
            xb, yb = X[start:start + chunk], y[start:start + chunk]
            per_sample, out, inputs, deltas = signals(ens, xb, yb, loss)
            for g, (delta, hT) in zip(grads, _gradient_terms(ens, inputs, deltas)):
                _add_gradient_(g, delta, hT, 1 / N)
            loss_sum += per_sample.double().sum(1)
            correct += (out.argmax(1) == yb).double().sum(1)
        L0 = loss_sum / N
        L = L0 + lams.double() * _penalties(ens, decay_bias).double()
        lam3 = lams.double()[:, None, None]
        num, den = [], []
        for l, W in enumerate(ens.weights):
            gW = grads[l] if ens.biases is None else grads[2 * l]
            n = (gW.double() + lam3 * W.double()).pow(2).sum((1, 2))
            d = (lam3 * W.double()).pow(2).sum((1, 2))
            if ens.biases is not None:
                b, gb = ens.biases[l].double(), grads[2 * l + 1].double()
                lam_b = lams.double()[:, None] if decay_bias else torch.zeros_like(lams.double())[:, None]
                n = n + (gb + lam_b * b).pow(2).sum(1)
                d = d + (lam_b * b).pow(2).sum(1)
            num.append(n)
            den.append(d)
        num, den = torch.stack(num, 1), torch.stack(den, 1)
        # 0/0 = 0 (W = 0 is stationary), x/0 = inf, as gradients.stationarity_residuals
        residuals = torch.where(den > 0, (num / den.clamp(min=1e-300)).sqrt(),
                                torch.where(num == 0, torch.zeros_like(num), torch.full_like(num, math.inf)))
        residual = torch.where(lams > 0, residuals.max(1).values, torch.full_like(L0, math.nan))
    return {"loss": L, "loss0": L0, "acc": correct / N, "residual": residual, "residuals": residuals}


def _member_configs(cfg: TrainConfig, lams: Sequence[float], seeds: Sequence[int], do_polish: bool) -> list[TrainConfig]:
    """One ``TrainConfig`` per member: ``cfg`` with ``lam=lams[m]``, ``seed=seeds[m]`` (and no polishing unless asked)."""
    if len(lams) != len(seeds) or not lams:
        raise ValueError(f"got {len(lams)} lambdas and {len(seeds)} seeds; pass one of each per member "
                         "(ensemble.grid(lams, seeds) makes every combination)")
    out = []
    for lam, seed in zip(lams, seeds):
        member = dataclasses.replace(cfg, lam=lam, seed=int(seed), polish_tol=cfg.polish_tol if do_polish else None,
                                     newton_tol=cfg.newton_tol if do_polish else None)
        out.append(member.validate())
    return out


def _divergence(ens_losses: torch.Tensor, cfgs: list[TrainConfig], step: int, phase: str) -> DivergenceError:
    bad = [m for m in range(len(cfgs)) if not math.isfinite(ens_losses[m].item())]
    names = ", ".join(f"member {m} (lambda={cfgs[m].lam}, seed={cfgs[m].seed}): {ens_losses[m].item()}" for m in bad)
    return DivergenceError(f"training diverged: the loss is not finite at {phase} step {step} for {names} "
                           f"(lr={cfgs[0].lr}); lower the learning rate")


def run_sgd_ensemble(ens: MLPEnsemble, X: torch.Tensor, y: torch.Tensor, cfgs: list[TrainConfig],
                     histories: list[dict[str, list]] | None = None, start_step: int = 0,
                     momentum_buffers: list[torch.Tensor | None] | None = None,
                     checkpoint: Callable[[int, list[torch.Tensor | None]], None] | None = None,
                     ) -> tuple[list[dict[str, list]], dict[str, torch.Tensor]]:
    """Stage 1 for every member at once: ``steps`` of (mini-batch) SGD, each member with its own lambda and batches.

    Records every ``record_every`` steps and at the end, like ``train.run_sgd``, into
    ``histories`` (one record per member, new ones when ``None``); returns the
    histories and the final batched evaluation. Resuming works as in
    ``train.run_sgd``: pass the ``start_step``, the ``momentum_buffers`` (one per
    stacked parameter) and the histories of a checkpoint, the weights already in
    ``ens``; the members' batch sequences are replayed up to ``start_step``.
    ``checkpoint(step, buffers)`` is called after every step with the steps done.
    """
    cfg = cfgs[0]
    M, N = ens.n_members, X.shape[0]
    lams = torch.tensor([c.lam for c in cfgs], dtype=X.dtype, device=X.device)
    params = ens.params()
    # per-parameter lambda_m, broadcast over the member's entries; undecayed biases get 0
    decays = []
    for p in params:
        is_bias = p.dim() == 2
        lam_p = lams if (not is_bias or cfg.decay_bias) else torch.zeros_like(lams)
        decays.append(lam_p.reshape(M, *([1] * (p.dim() - 1))))
    bufs: list[torch.Tensor | None] = [None] * len(params)
    if momentum_buffers is not None:
        bufs = [None if b is None else b.to(p) for b, p in zip(momentum_buffers, params)]
    histories = [{} for _ in range(M)] if histories is None else histories
    t0 = time.perf_counter()

    def record(step: int) -> dict[str, torch.Tensor]:
        metrics = evaluate_ensemble(ens, X, y, lams, cfg.loss, cfg.decay_bias)
        if not torch.isfinite(metrics["loss"]).all():
            raise _divergence(metrics["loss"], cfgs, step, "SGD")
        seconds = time.perf_counter() - t0
        for m, h in enumerate(histories):
            for k, v in (("step", step), ("phase", "sgd"), ("loss", metrics["loss"][m].item()),
                         ("loss0", metrics["loss0"][m].item()), ("acc", metrics["acc"][m].item()),
                         ("residual", metrics["residual"][m].item()), ("seconds", seconds)):
                h.setdefault(k, []).append(v)
        return metrics

    batches = [batch_indices(N, c.batch_size, c.steps, c.seed) for c in cfgs]
    for step in progress(range(cfg.steps), total=cfg.steps, desc=f"ensemble SGD, {M} members"):
        idx = [next(b) for b in batches]
        if step < start_step:
            continue  # replay the batch order up to the checkpoint
        if step % cfg.record_every == 0:
            record(step)
        if idx[0] is None:  # full batch: every member sees all of X
            xb, yb = X, y
        else:
            flat = torch.cat(idx).to(X.device)
            xb, yb = X[flat].reshape(M, -1, X.shape[1]), y[flat].reshape(M, -1)
        per_sample, _, inputs, deltas = signals(ens, xb, yb, cfg.loss)
        if not torch.isfinite(per_sample).all():
            raise _divergence(per_sample.mean(1), cfgs, step, "SGD")
        B = per_sample.shape[1]
        with torch.no_grad():
            for i, (p, (delta, hT)) in enumerate(zip(params, _gradient_terms(ens, inputs, deltas))):
                # d = grad L_0 + lambda_m W with grad L_0 = (1/B) sum_i delta_i h_i^T, added in place
                if cfg.momentum == 0:  # W <- W - lr lambda_m W - lr grad L_0
                    # (not (1 - lr lambda_m) W: that factor, rounded, would shrink W a little wrongly at every step)
                    _add_gradient_(p.addcmul_(decays[i], p, value=-cfg.lr), delta, hT, -cfg.lr / B)
                    continue
                if bufs[i] is None:  # buf = d
                    bufs[i] = _add_gradient_(decays[i] * p, delta, hT, 1 / B)
                else:  # buf = mu buf + d
                    _add_gradient_(bufs[i].mul_(cfg.momentum).addcmul_(decays[i], p), delta, hT, 1 / B)
                p.sub_(bufs[i], alpha=cfg.lr)
        if checkpoint is not None:
            checkpoint(step + 1, bufs)
    return histories, record(cfg.steps)


def train_ensemble(d_in: int, widths: Sequence[int], d_out: int, lams: Sequence[float], seeds: Sequence[int],
                   X: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, activation: str = "tanh", bias: bool = False,
                   init_scale: float = 1.0, device: str = "auto", polish: bool = True,
                   use_cache: bool = True, checkpoint_seconds: float = 60.0) -> list[TrainResult]:
    """Train member ``m`` with ``lambda = lams[m]`` from seed ``seeds[m]``, all members as one batched model.

    ``cfg.lam`` and ``cfg.seed`` are ignored: member ``m`` is trained with
    ``dataclasses.replace(cfg, lam=lams[m], seed=seeds[m])`` (its ``TrainResult.config``),
    which is validated like any ``TrainConfig`` (every lambda must be >= 0). Use
    :func:`grid` for every combination of a lambda grid and seeds. After the batched
    SGD stage, the members are polished together by ``train.polish_networks`` (batched L-BFGS
    in float64, then Newton when ``cfg.newton_tol`` is set: the solver a single run uses)
    when ``cfg.polish_tol`` is set and ``polish`` is true; with
    ``polish=False`` the members' configs carry ``polish_tol=None``, so they describe
    (and are cached as) unpolished runs.

    Returns one ``train.TrainResult`` per member, in order, with an independent
    ``MLP`` on the CPU, exactly the fields ``train.train`` returns. Each member is
    cached under the key ``train.train`` uses for the single run
    ``train.train(MLP(d_in, widths, d_out, activation, bias, seed=seeds[m], init_scale), X, y, config_m, device)``,
    so either run hits the other's cache; members found in the cache are not trained.

    While caching (the cache folder is checked first, ``cache.check_cache_dir``, before
    anything is trained):

    - the batched SGD stage saves a checkpoint every ``checkpoint_seconds`` (a
      ``train.Checkpointer`` keyed by the members it trains) and an interrupted call
      resumes from it with the same result;
    - when polishing follows, the end of the SGD stage is checkpointed per member, under
      the member's own key (the checkpoint ``train.train`` itself writes before it
      polishes), and the batched checkpoint is removed; a call interrupted while
      polishing polishes the members again from their checkpoints without redoing SGD
      (a single run of such a member resumes from it too);
    - every checkpoint (``.partial`` entry) of the call is removed once every member is
      cached; a folder that refuses a save loses nothing: the members are returned.

    Raises ``train.DivergenceError`` naming the member (lambda, seed) and the step
    when a member's loss becomes NaN or infinite.
    """
    cfgs = _member_configs(cfg, list(lams), list(seeds), polish)
    if X.dim() != 2 or X.shape[1] != d_in or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (N, {d_in}) and y (N,) integer labels, got X {tuple(X.shape)} and y {tuple(y.shape)}; "
                         "flatten images to (N, d) first")
    check_loss(cfg.loss)
    dev = pick_device(device)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    M = len(cfgs)
    results: list[TrainResult | None] = [None] * M
    keys: list[tuple[str, dict] | None] = [None] * M

    def member_net(m: int) -> MLP:
        return MLP(d_in, widths, d_out, activation, bias, seed=cfgs[m].seed, init_scale=init_scale)

    if use_cache:
        _cache.check_cache_dir()
        for m, c in enumerate(cfgs):
            net = member_net(m)
            keys[m] = _train.cache_key(net, c, X, y, device=dev)
            results[m] = _train.load_result(keys[m][0], net, c)
    todo = [m for m in range(M) if results[m] is None]
    if not todo:
        return results  # type: ignore[return-value]

    polishing = cfgs[0].polish_tol is not None
    nets: dict[int, MLP] = {}
    histories: dict[int, dict[str, list]] = {}
    if use_cache and polishing:  # members whose SGD stage finished before an interruption
        for m in todo:
            net, history = member_net(m), {}
            if _train.Checkpointer(keys[m][0], net, history, math.inf).resume_finished(dev, dtype, cfgs[m].steps):
                nets[m], histories[m] = net, history
    batched = [m for m in todo if m not in nets]
    position = {m: j for j, m in enumerate(batched)}
    Xd, yd = X.to(dev, dtype), y.to(dev)
    last = None
    if batched:
        sub = [cfgs[m] for m in batched]
        ens = MLPEnsemble(d_in, widths, d_out, [c.seed for c in sub], activation, bias, init_scale).to(dev, dtype)
        sub_histories: list[dict[str, list]] = [{} for _ in sub]
        checkpointer, start, buffers = None, 0, None
        if use_cache:
            checkpointer = _train.Checkpointer(_sgd_key(keys, batched), ens, sub_histories, checkpoint_seconds)
            start, buffers = checkpointer.resume(dev, dtype)
        sub_histories, last = run_sgd_ensemble(ens, Xd, yd, sub, sub_histories, start, buffers, checkpointer)
        for j, m in enumerate(batched):
            nets[m], histories[m] = ens.member(j), sub_histories[j]
            if use_cache and polishing:  # polishing resumes from here if interrupted
                _train.Checkpointer(keys[m][0], nets[m], histories[m], math.inf).save(cfgs[m].steps)
        if checkpointer is not None and polishing:
            checkpointer.discard()  # superseded by the members' checkpoints
    outcomes = {}
    if polishing:  # one batched solve for every member left (nrc_utils.stationary, as a single run polishes)
        outcomes = dict(zip(todo, _train.polish_networks([nets[m] for m in todo], Xd, yd, [cfgs[m] for m in todo],
                                                         [histories[m] for m in todo])))
    for m in todo:
        c, net, history = cfgs[m], nets[m], histories[m]
        if polishing:
            results[m] = _train.finished_result(net, Xd, yd, c, history, outcomes[m])
        else:  # the batched SGD stage's own last record
            j = position[m]
            final = {k: last[k][j].item() for k in ("loss", "loss0", "acc", "residual")}
            net.cpu()
            results[m] = TrainResult(net, c, history, last["residuals"][j].tolist() if c.lam > 0 else [], final)
        if keys[m] is not None:
            _train.save_result(*keys[m], results[m])
            _train.Checkpointer(keys[m][0], net, history, math.inf).discard()
    if use_cache:
        # the batched checkpoints of this call: of the members it trained, and of every member it had
        # to train (left behind when an interruption came between the members' checkpoints and its removal)
        for group in {tuple(batched), tuple(todo)}:
            if group:
                _train.Checkpointer(_sgd_key(keys, list(group)), None, [], math.inf).discard()
    return results  # type: ignore[return-value]


def _sgd_key(keys: list[tuple[str, dict] | None], members: list[int]) -> str:
    """The key of the batched SGD checkpoint of ``members`` (by their result keys)."""
    return _cache.config_key({"what": "ensemble-sgd", "members": [keys[m][0] for m in members]})


__all__ = ["MLPEnsemble", "evaluate_ensemble", "grid", "run_sgd_ensemble", "train_ensemble"]
