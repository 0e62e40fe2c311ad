"""Stationary points of ``L_lambda`` for any ``nn.Module`` (chapter 7, ``07_beyond_the_mlp``).

:mod:`nrc_utils.stationary` solves for MLPs only (batched, hand-written back-propagation). This
module does the same for a single network of any architecture whose weight-decayed parameters
``p`` are listed (``model.decayed``, the names of ``model.named_parameters()``):

    L_lambda(Theta) = L_0(Theta) + (lambda/2) sum_p ||p||_F^2,      L_0 = (1/N) sum_i loss(f(x_i), y_i),

and measures stationarity per parameter, as :func:`nrc_utils.gradients.stationarity_residuals`
does per layer:

    rho_p = ||grad_p L_0 + lambda p||_F / ||lambda p||_F,     residual = max_p rho_p.

Every trainable parameter must be decayed (an undecayed one would need its own absolute test).

Three stages, as in :mod:`nrc_utils.stationary`:

1. float64 L-BFGS (``torch.optim.LBFGS``, strong Wolfe line search) on ``L_lambda / lambda^2``
   (same stationary points; :func:`nrc_utils.train.polish` explains why the scaling keeps L-BFGS's
   curvature pairs alive near a stationary point with a small ``lambda``), in chunks, until
   ``residual <= lbfgs_tol``, a time cap, a chunk that no longer lowers the loss, or an iteration cap;
2. Newton's method on ``grad L_lambda = 0`` with the dense Hessian of the flattened parameters
   (columns ``H e_j`` as forward-over-reverse products, ``torch.func.jvp`` of ``torch.func.grad`` of
   ``torch.func.functional_call``, ``vmap``-ed over blocks of basis vectors; ``P`` up to a few
   thousand), to ``residual <= tol`` (``1e-12``) where it gets there, with the guard of
   :func:`nrc_utils.stationary.newton` (a full step when it lowers the residual, or raises it by less
   than ``raise_factor`` at most ``max_raises`` times in a row; else the pseudo-inverse step, which
   leaves out the flat directions of a continuous symmetry; else halving; "no progress" when no
   step helps or the best residual is stale for ``patience`` steps; the best point is returned);
3. the smallest eigenvalue of the Hessian of ``L_lambda`` at the returned point
   (``torch.linalg.eigvalsh``): positive at a strict local minimum, negative at a saddle.

Stop reasons are :data:`nrc_utils.train.POLISH_STOPS`. :func:`fit` caches a polished network with
:func:`nrc_utils.cache.cached` (key: the model's config and starting weights, the solver settings,
``lambda``, the loss, the data's fingerprint, the device type and the source of this module and of
:mod:`nrc_utils.architectures`).
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from . import cache
from .losses import check_loss, sample_losses
from .stationary import pseudo_inverse_step
from .train import POLISH_STOPS, fingerprint

__all__ = ["FitResult", "SolverConfig", "decayed_parameters", "fit", "hessian", "lbfgs", "min_eigenvalue",
           "newton", "polish", "residuals"]

#: The modules whose source decides a cached :func:`fit` (its own, and what it imports: the pseudo-inverse step of
#: :mod:`nrc_utils.stationary`).
CODE = ("architectures.py", "module_stationarity.py", "losses.py", "models.py", "cache.py", "stationary.py", "__init__.py")


class _Quiet:
    """A context that hides exactly the ``DeprecationWarning`` that ``torch.func``'s forward-mode
    products may emit from ``torch.jit`` internals (any stderr output fails a chapter's build)."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def decayed_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``[(name, p)]`` of the weight-decayed parameters (``model.decayed``; every parameter when the
    model does not say). Refuses a model with a trainable parameter that is not decayed."""
    named = dict(model.named_parameters())
    names = list(getattr(model, "decayed", named))
    missing = [n for n in names if n not in named]
    if missing:
        raise ValueError(f"model.decayed names parameters the model does not have: {missing}")
    free = [n for n, p in named.items() if p.requires_grad and n not in names]
    if free:
        raise ValueError(f"every trainable parameter must be weight-decayed here; not decayed: {free}")
    return [(n, named[n]) for n in names]


class _Flat:
    """The decayed parameters of a model as one float64 vector ``theta`` (``P``,) and back."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.named = decayed_parameters(model)
        self.names = [n for n, _ in self.named]
        self.shapes = [p.shape for _, p in self.named]
        self.sizes = [p.numel() for _, p in self.named]
        self.P = sum(self.sizes)

    def get(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for _, p in self.named]).double()

    def set(self, theta: torch.Tensor) -> None:
        with torch.no_grad():
            for (_, p), t in zip(self.named, theta.split(self.sizes)):
                p.copy_(t.reshape(p.shape))

    def split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.reshape(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}

    def loss(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str) -> torch.Tensor:
        """``L_lambda(theta)`` through ``torch.func.functional_call`` (differentiable in ``theta``)."""
        out = torch.func.functional_call(self.model, self.split(theta), (X,))
        return sample_losses(out, y, loss).mean() + 0.5 * lam * (theta * theta).sum()

    def grad_parts(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """``(L_lambda, grad L_lambda (P,), {name: rho_p})``."""
        th = theta.detach().clone().requires_grad_(True)
        L = self.loss(th, X, y, lam, loss)
        (g,) = torch.autograd.grad(L, th)
        rho = {}
        for n, gp, tp in zip(self.names, g.split(self.sizes), theta.split(self.sizes)):
            den = float(torch.linalg.norm(lam * tp))
            num = float(torch.linalg.norm(gp))
            rho[n] = num / den if den > 0 else (0.0 if num == 0 else math.inf)
        return L.detach(), g.detach(), rho


def residuals(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str) -> dict[str, float]:
    """``{name: rho_p}`` for every decayed parameter (float64 copy of the data; the model's dtype)."""
    if lam <= 0:
        raise ValueError(f"the relative stationarity residual needs lambda > 0, got {lam}")
    check_loss(loss)
    flat = _Flat(model)
    dtype = next(model.parameters()).dtype
    return flat.grad_parts(flat.get().to(dtype), X.to(dtype), y, lam, loss)[2]


def hessian(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
            theta: torch.Tensor | None = None, block: int | None = None, max_elements: int | None = None
            ) -> torch.Tensor:
    """The dense Hessian of ``L_lambda`` in the flattened decayed parameters, ``(P, P)`` float64,
    symmetrised: column ``j`` is ``H e_j`` = ``jvp`` of ``grad`` along ``e_j``, ``block`` columns at a
    time (``vmap``; by default as many as keep about ``max_elements`` activation numbers: ``2**22``
    on the CPU, where small blocks are fastest, ``2**28`` on a GPU)."""
    flat = _Flat(model)
    theta = flat.get() if theta is None else theta.detach().double()
    P = flat.P
    if max_elements is None:
        max_elements = 2**22 if theta.device.type == "cpu" else 2**28
    if block is None:
        n_act = X.numel() * 8  # a rough count of the activations of one product
        block = int(max(1, min(P, max_elements // max(1, n_act))))
    grad = torch.func.grad(lambda th: flat.loss(th, X, y, lam, loss))

    def column(v):
        return torch.func.jvp(grad, (theta,), (v,))[1]

    H = torch.empty(P, P, dtype=torch.float64, device=theta.device)
    eye = torch.eye(P, dtype=torch.float64, device=theta.device)
    with _Quiet():
        for j0 in range(0, P, block):
            H[:, j0:j0 + block] = torch.func.vmap(column)(eye[j0:j0 + block]).T
    return 0.5 * (H + H.T)


def min_eigenvalue(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
                   H: torch.Tensor | None = None) -> float:
    """The smallest eigenvalue of the Hessian of ``L_lambda`` (``torch.linalg.eigvalsh``)."""
    H = hessian(model, X, y, lam, loss) if H is None else H
    return float(torch.linalg.eigvalsh(H)[0])


@dataclass
class SolverConfig:
    """Settings of :func:`polish`: L-BFGS to ``lbfgs_tol`` (chunks of ``chunk`` iterations, at most
    ``lbfgs_max_iter``, ``max_seconds`` of wall time per stage), then Newton to ``tol`` (at most
    ``newton_max_iter`` steps) when the network has at most ``dense_max_params`` decayed parameters;
    the guard's ``raise_factor``, ``max_raises``, ``max_backtracks`` and ``patience`` as in
    :func:`nrc_utils.stationary.newton`; when the full Newton step is refused, the pseudo-inverse step
    (eigenvalues below ``pinv_rtol`` times the largest in magnitude left out) is tried before halving."""

    lbfgs_tol: float = 1e-6
    tol: float = 1e-12
    lbfgs_max_iter: int = 5000
    chunk: int = 100
    max_seconds: float = 60.0
    newton_max_iter: int = 20
    dense_max_params: int = 4000
    raise_factor: float = 1e4
    max_raises: int = 2
    max_backtracks: int = 12
    patience: int = 4
    pinv_rtol: float = 1e-10


def lbfgs(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
          cfg: SolverConfig = SolverConfig()) -> tuple[str, int]:
    """Stage 1 in place on ``model`` (float64): ``(stop, iterations)``, ``stop`` in
    :data:`~nrc_utils.train.POLISH_STOPS`. Minimises ``L_lambda / lambda^2``."""
    model.double()
    X = X.double()
    flat = _Flat(model)
    params = [p for _, p in flat.named]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=cfg.chunk, history_size=100, tolerance_grad=1e-300,
                            tolerance_change=1e-300, line_search_fn="strong_wolfe")
    scale = 1.0 / lam**2

    def closure():
        opt.zero_grad(set_to_none=True)
        L = (sample_losses(model(X), y, loss).mean() + 0.5 * lam * sum(p.pow(2).sum() for p in params)) * scale
        L.backward()
        return L

    t0, previous, done = time.perf_counter(), math.inf, 0
    for _ in range(max(1, cfg.lbfgs_max_iter // cfg.chunk)):
        opt.step(closure)
        done += cfg.chunk
        L, _g, rho = flat.grad_parts(flat.get(), X, y, lam, loss)
        if not math.isfinite(float(L)):
            raise FloatingPointError(f"L-BFGS diverged: the loss is {float(L)} (lambda={lam})")
        if max(rho.values()) <= cfg.lbfgs_tol:
            return "target", done
        if time.perf_counter() - t0 > cfg.max_seconds:
            return "time cap", done
        if float(L) >= previous:
            return "no progress", done
        previous = float(L)
    return "iteration cap", done


def newton(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
           cfg: SolverConfig = SolverConfig()) -> tuple[str, int, torch.Tensor]:
    """Stage 2 in place on ``model`` (float64): ``(stop, steps, H)`` with ``H`` the Hessian of
    ``L_lambda`` at the returned point (for :func:`min_eigenvalue`)."""
    model.double()
    X = X.double()
    flat = _Flat(model)
    t0 = time.perf_counter()

    def state(theta):
        L, g, rho = flat.grad_parts(theta, X, y, lam, loss)
        return {"x": theta, "L": L, "g": g, "rho": rho, "res": max(rho.values())}

    cur = state(flat.get())
    best, stale, in_row, steps, stop = cur, 0, 0, 0, "iteration cap"
    H = None
    for it in range(cfg.newton_max_iter + 1):
        if cur["res"] <= cfg.tol:
            stop = "target"
            break
        if it == cfg.newton_max_iter:
            stop = "iteration cap"
            break
        if time.perf_counter() - t0 > cfg.max_seconds:
            stop = "time cap"
            break
        H = hessian(model, X, y, lam, loss, theta=cur["x"])
        p, info = torch.linalg.solve_ex(H, -cur["g"])
        if int(info) != 0 or not torch.isfinite(p).all():  # singular: pseudo-inverse from eigh
            p = pseudo_inverse_step(H[None], cur["g"][None], rtol=flat.P * 1e-15)[0]
        steps += 1
        trial = state(cur["x"] + p)
        ok = math.isfinite(trial["res"]) and (
            trial["res"] < cur["res"] or (trial["res"] < cfg.raise_factor * best["res"] and in_row < cfg.max_raises))
        if not ok:
            # flat directions (a continuous symmetry: rotations of a residual stream or of a two-factor
            # product) make H singular up to round-off, and the solve's huge components along them leave
            # the curved orbit; the pseudo-inverse step ignores eigenvalues below pinv_rtol * max |ev|
            q = pseudo_inverse_step(H[None], cur["g"][None], rtol=cfg.pinv_rtol)[0]
            alt = state(cur["x"] + q)
            if math.isfinite(alt["res"]) and alt["res"] < cur["res"]:
                trial, ok, p = alt, True, q
        if ok:
            in_row = in_row + 1 if trial["res"] >= cur["res"] else 0
        else:
            t = 0.5
            for _ in range(cfg.max_backtracks):
                trial = state(cur["x"] + t * p)
                if trial["res"] < cur["res"]:
                    ok = True
                    break
                t *= 0.5
            in_row = 0
        if not ok:
            stop = "no progress"
            break
        cur = trial
        if cur["res"] < best["res"]:
            best, stale = cur, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                stop = "no progress"
                break
    final = cur if stop == "target" else best
    flat.set(final["x"])
    H = hessian(model, X, y, lam, loss, theta=final["x"])
    return stop, steps, H


@dataclass
class FitResult:
    """A polished network: ``model`` (float64), ``stop`` (the final stop reason), ``lbfgs_stop``,
    ``residual`` (``max_p rho_p``), ``residuals`` (``{name: rho_p}``), ``min_eig`` (smallest Hessian
    eigenvalue of ``L_lambda``; NaN when the network was too large for the dense Hessian),
    ``lbfgs_iterations``, ``newton_steps``, ``loss`` (``L_lambda``), ``loss0``, ``acc`` (training
    accuracy), ``seconds``, ``n_params``, ``lam``, ``loss_kind`` and ``from_cache``."""

    model: nn.Module
    stop: str
    lbfgs_stop: str
    residual: float
    residuals: dict[str, float]
    min_eig: float
    lbfgs_iterations: int
    newton_steps: int
    loss: float
    loss0: float
    acc: float
    seconds: float
    n_params: int
    lam: float
    loss_kind: str
    from_cache: bool = False
    extra: dict = field(default_factory=dict)


def polish(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
           cfg: SolverConfig = SolverConfig()) -> FitResult:
    """Stages 1-3 in place on ``model`` (made float64). Newton runs when L-BFGS stopped above ``tol``
    and the model has at most ``cfg.dense_max_params`` decayed parameters; the eigenvalue likewise."""
    if lam <= 0:
        raise ValueError(f"stationarity with weight decay needs lambda > 0, got {lam}")
    check_loss(loss)
    t0 = time.perf_counter()
    model.double()
    X = X.double()
    flat = _Flat(model)
    first, iters = lbfgs(model, X, y, lam, loss, cfg)
    stop, steps, eig, extra = first, 0, math.nan, {}
    if flat.P <= cfg.dense_max_params:
        stop, steps, H = newton(model, X, y, lam, loss, cfg)
        ev = torch.linalg.eigvalsh(H).cpu()
        eig = float(ev[0])
        extra = {"eigs_low": ev[:min(flat.P, 100)].numpy(), "eig_max": float(ev.abs().max())}
    L, _g, rho = flat.grad_parts(flat.get(), X, y, lam, loss)
    with torch.no_grad():
        out = model(X)
        L0 = float(sample_losses(out, y, loss).mean())
        acc = float((out.argmax(-1) == y).double().mean())
    assert stop in POLISH_STOPS
    return FitResult(model, stop, first, max(rho.values()), rho, eig, iters, steps, float(L), L0, acc,
                     time.perf_counter() - t0, flat.P, float(lam), loss, extra=extra)


def _start_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().double().contiguous().numpy().tobytes())
    return h.hexdigest()


def fit(build: Callable[[], nn.Module], X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
        cfg: SolverConfig = SolverConfig(), device: str | torch.device = "cpu", use_cache: bool = True) -> FitResult:
    """``build()`` a network, :func:`polish` it on ``(X, y)`` on ``device``, cached
    (:func:`nrc_utils.cache.cached`; a hit rebuilds the network and loads the stored weights)."""
    device = torch.device(device)
    model = build()
    X64, y = X.double().to(device), y.to(device)
    config = {"what": "module_stationarity.fit", "model": getattr(model, "config", None),
              "start": _start_hash(model), "lam": float(lam), "loss": loss, "solver": asdict(cfg),
              "data": fingerprint(X64.cpu(), y.cpu()), "device": device.type, "code": cache.code_fingerprint(CODE)}
    fresh = {}

    def compute():
        m = build().double().to(device)
        r = polish(m, X64, y, lam, loss, cfg)
        fresh["r"] = r
        meta = {k: getattr(r, k) for k in ("stop", "lbfgs_stop", "residual", "residuals", "min_eig",
                                           "lbfgs_iterations", "newton_steps", "loss", "loss0", "acc", "seconds",
                                           "n_params", "lam", "loss_kind")}
        meta["min_eig"] = None if math.isnan(meta["min_eig"]) else meta["min_eig"]
        meta["eig_max"] = r.extra.get("eig_max")
        arrays = {f"state.{k}": v.detach().cpu() for k, v in m.state_dict().items()}
        if "eigs_low" in r.extra:
            arrays["eigs_low"] = r.extra["eigs_low"]
        return arrays, meta

    arrays, meta = cache.cached(config, compute, enabled=use_cache)
    if "r" in fresh:
        return fresh["r"]
    m = build().double()
    m.load_state_dict({k[len("state."):]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()
                       if k.startswith("state.")})
    m = m.to(device)
    meta = dict(meta)
    meta["min_eig"] = math.nan if meta["min_eig"] is None else meta["min_eig"]
    eig_max = meta.pop("eig_max", None)
    extra = {} if "eigs_low" not in arrays else {"eigs_low": np.asarray(arrays["eigs_low"]), "eig_max": eig_max}
    return FitResult(model=m, from_cache=True, extra=extra, **meta)


def summary_row(r: FitResult) -> dict:
    """One table row of a :class:`FitResult` (no model)."""
    return {"stop": r.stop, "lbfgs_stop": r.lbfgs_stop, "residual": r.residual, "min_eig": r.min_eig,
            "lbfgs_iterations": r.lbfgs_iterations, "newton_steps": r.newton_steps, "loss": r.loss,
            "train_acc": r.acc, "n_params": r.n_params, "seconds": r.seconds}


__all__ += ["summary_row", "CODE"]
