"""A batched solver for stationary points of ``L_lambda``: L-BFGS, then Newton, for many networks at once.

The networks are ``M`` MLPs of one architecture ``d_in -> widths -> d_out`` (activation ``s``,
biases on or off), ``f_m(x) = W_{L,m} s(... s(W_{1,m} x))``, member ``m`` with its own weight
decay ``lambda_m`` and, if wanted, its own data ``(X_m, y_m)``. Each minimises

    L_lambda(Theta) = L_0(Theta) + (lambda/2) sum_l ||W_l||_F^2,   L_0 = (1/N) sum_i loss(f(x_i), y_i)

(biases in the penalty when ``decay_bias``), and its stationarity is measured as in
:func:`nrc_utils.gradients.stationarity_residuals`: per layer

    rho_l = ||grad_{Theta_l} L_0 + lambda Theta_l||_F / ||lambda Theta_l||_F,       residual = max_l rho_l.

The members' parameters are held as one ``(M, P)`` float64 tensor ``theta`` (per member, the
flattened ``W_1, (b_1,) W_2, (b_2,) ...``, the order of ``ensemble.MLPEnsemble.params``).

Two stages, both batched over members, and a spectral check:

1. :func:`lbfgs`: limited-memory BFGS with a history of ``history_size`` curvature pairs per
   member, applied in the compact form of Byrd, Nocedal & Schnabel (1994, "Representations of
   quasi-Newton matrices", eq. 3.13; Nocedal & Wright, *Numerical Optimization*, eq. 7.24),

       H_k g = gamma g + S u - gamma Y w,   w = R^{-1} S^T g,   u = R^{-T} ((D + gamma Y^T Y) w - gamma Y^T g),

   ``R_ij = s_i^T y_j`` for pairs ``i`` not newer than ``j`` (``D`` its diagonal),
   ``gamma = s^T y / y^T y`` of the newest pair: every product is a batched matrix product over
   members, with ``(M, P, 2 history)`` histories. Each member has its own backtracking Armijo line
   search (``f(x + t d) <= f(x) + c_1 t g^T d``, safeguarded quadratic interpolation). The history
   holds the pairs of a member's last ``history_size`` iterations: a ring whose slot ``t % history_size``
   every member writes at the batch's iteration ``t`` (one age order for the whole batch), left empty
   when the member did not move or its pair fails ``s^T y > curvature_eps ||s|| ||y||`` (a relative
   test).
   Members that stop leave the batch, and waiting members take their places (at most
   ``max_batch`` at a time: that bounds the memory). The function minimised is
   ``L_lambda / lambda^2``, as in :func:`nrc_utils.train.polish` (same stationary points; its
   docstring says why the scaling matters to L-BFGS). Gradients come from the hand-written
   back-propagation :func:`nrc_utils.ensemble.signals`.
2. :func:`newton`: Newton's method for ``grad L_lambda = 0`` from where L-BFGS stopped. The
   step ``p = -H^{-1} g`` uses the exact Hessian ``H`` of ``L_lambda / lambda^2``
   (``torch.func``: forward-over-reverse products with the basis vectors) when ``P`` is at most
   ``dense_max_params``, and conjugate gradients on Hessian-vector products otherwise (Newton-CG,
   forcing term ``min(0.1, sqrt(residual))``; negative curvature met by CG ends it, the step
   so far is used, the gradient direction if it was the first). The guard: a full step is taken
   when it lowers the residual, or, counted in ``NewtonResult.raised``, when it raises it by less
   than a bounded factor (a few times in a row at most: with Hessian eigenvalues over seven decades
   the first full step can overshoot and the next ones still converge quadratically); otherwise
   ``t = 1/2, 1/4, ...`` until the residual is lower. A member that no step helps, or whose best
   residual stops improving, stops with ``"no progress"``, and every member that did not reach its
   target returns its best point. Newton converges to the stationary point near the start whatever
   its index (minimum or saddle), which is what stationarity asks; the Hessian's spectrum then says
   which it is.
3. The smallest eigenvalue of the Hessian of ``L_lambda`` at every polished point
   (``torch.linalg.eigvalsh`` of the dense Hessian; beyond ``dense_max_params``, :func:`lanczos`:
   Lanczos with full reorthogonalisation on Hessian-vector products, batched over members):
   positive means a strict local minimum, negative a saddle.

Why Newton at the end: near a stationary point the loss changes by about the residual squared,
so a line search on the loss stops seeing a decrease (with float64, around residuals of 1e-7 to
1e-8); Newton's test is the residual itself, and one or two steps take a smooth network from
about 1e-5 to 1e-12 and below.

Stop reasons are those of :data:`nrc_utils.train.POLISH_STOPS`: ``"target"`` (residual at or
below the tolerance), ``"time cap"`` (wall clock since the member entered the batch),
``"no progress"`` (L-BFGS: no Armijo step along the quasi-Newton direction nor, after the
history is dropped, along ``-g``; Newton: no step lowers the residual), ``"iteration cap"``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .ensemble import signals as _signals
from .losses import check_loss
from .models import MLP, layer_shapes, make_activation
from .train import POLISH_STOPS, DivergenceError

# Forward-mode AD (``torch.func.jvp``, behind every Hessian-vector product here) loads its decompositions
# on first use through ``torch.jit.script``, which torch 2.13 deprecates with a DeprecationWarning: a
# chapter's stderr must stay empty, so they are loaded here once, with exactly that warning silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
    torch.autograd.forward_ad._maybe_load_decompositions()

#: Hessian eigenvalues below ``ZERO_RTOL`` times the largest one, in absolute value, are zero up to rounding:
#: Newton's pseudo-inverse step ignores them, and :func:`extreme_eigenvalues` reads them as flat directions.
ZERO_RTOL = 1e-10

#: Full-batch evaluations run over chunks of samples so that one activation tensor
#: (members x width x samples) holds at most this many numbers.
EVAL_ELEMENTS = 2**24


class _View:
    """What :func:`nrc_utils.ensemble.signals` reads of an ``MLPEnsemble``: weights ``(m, d_l, d_{l-1})``,
    biases ``(m, d_l)`` or ``None``, the activation."""

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor] | None, activation: str,
                 act: torch.nn.Module) -> None:
        self.weights, self.biases, self.activation, self.act = weights, biases, activation, act
        self.depth, self.d_in, self.n_members = len(weights), weights[0].shape[2], weights[0].shape[0]


class Problem:
    """``M`` networks ``d_in -> widths -> d_out`` and their data, weight decays and loss.

    ``X`` is ``(N, d_in)`` (shared by every member) or ``(M, N, d_in)`` (member ``m`` on ``X[m]``);
    ``y`` holds integer labels, ``(N,)`` or ``(M, N)``; ``lams`` one ``lambda_m > 0`` per member.
    Everything is float64 on ``X``'s device. Parameters travel as ``theta`` ``(M, P)``
    (:meth:`flatten`, :meth:`unflatten`).
    """

    def __init__(self, d_in: int, widths: Sequence[int], d_out: int, X: torch.Tensor, y: torch.Tensor,
                 lams: Sequence[float] | torch.Tensor, loss: str = "mse", activation: str = "tanh",
                 bias: bool = False, decay_bias: bool = True, seeds: Sequence[int] | None = None) -> None:
        self.d_in, self.widths, self.d_out = int(d_in), [int(w) for w in widths], int(d_out)
        self.loss, self.activation, self.bias, self.decay_bias = check_loss(loss), activation, bool(bias), bool(decay_bias)
        self.act = make_activation(activation)
        self.device = X.device
        self.lams = torch.as_tensor(lams, dtype=torch.float64).to(self.device).reshape(-1)
        self.M = self.lams.numel()
        if self.M == 0 or not torch.all(self.lams > 0) or not torch.isfinite(self.lams).all():
            raise ValueError(f"every member needs a finite lambda > 0 (the residual divides by lambda W), got "
                             f"{self.lams.tolist()}")
        self.seeds = [int(s) for s in seeds] if seeds is not None else list(range(self.M))
        if len(self.seeds) != self.M:
            raise ValueError(f"got {len(self.seeds)} seeds for {self.M} members; pass one per member or none")
        if X.dim() == 2 and X.shape[1] == d_in and y.shape == (X.shape[0],):
            self.shared = True
        elif X.dim() == 3 and X.shape[0] == self.M and X.shape[2] == d_in and y.shape == X.shape[:2]:
            self.shared = False
        else:
            raise ValueError(f"X must be (N, {d_in}) with y (N,), or ({self.M}, N, {d_in}) with y ({self.M}, N), "
                             f"got X {tuple(X.shape)} and y {tuple(y.shape)}")
        self.X, self.y = X.to(torch.float64), y.to(self.device).long()
        self.N = X.shape[-2]
        # layout of one member's flat parameter vector: (offset, shape, layer index, is bias)
        self.layout: list[tuple[int, tuple[int, ...], int, bool]] = []
        offset = 0
        for l, (o, i) in enumerate(layer_shapes(d_in, widths, d_out)):
            self.layout.append((offset, (o, i), l, False))
            offset += o * i
            if self.bias:
                self.layout.append((offset, (o,), l, True))
                offset += o
        self.P, self.depth = offset, len(self.widths) + 1
        layer_of = torch.empty(self.P, dtype=torch.long)
        decay = torch.ones(self.P, dtype=torch.float64)
        for off, shape, l, is_bias in self.layout:
            n = math.prod(shape)
            layer_of[off:off + n] = l
            if is_bias and not self.decay_bias:
                decay[off:off + n] = 0.0
        self.layer_of, self.decay = layer_of.to(self.device), decay.to(self.device)
        self.layer_sum = torch.nn.functional.one_hot(self.layer_of, self.depth).to(torch.float64)  # (P, L)

    # ------------------------------------------------------------------ construction and conversion
    @classmethod
    def from_mlps(cls, nets: Sequence[MLP], X: torch.Tensor, y: torch.Tensor, lams: Sequence[float], loss: str,
                  decay_bias: bool = True) -> tuple["Problem", torch.Tensor]:
        """``(problem, theta)`` for ``models.MLP`` networks of one architecture (their ``config``), weights copied."""
        cfg = nets[0].config
        if any(n.config | {"seed": 0} != cfg | {"seed": 0} for n in nets):
            raise ValueError("every network must have the same architecture (MLP config apart from the seed)")
        problem = cls(cfg["d_in"], cfg["widths"], cfg["d_out"], X, y, lams, loss, cfg["activation"], cfg["bias"],
                      decay_bias, seeds=[n.config["seed"] for n in nets])
        weights = [torch.stack([n.layers[l].weight.detach() for n in nets]) for l in range(problem.depth)]
        biases = [torch.stack([n.layers[l].bias.detach() for n in nets]) for l in range(problem.depth)] \
            if problem.bias else None
        return problem, problem.flatten(weights, biases)

    @classmethod
    def from_ensemble(cls, ens: "object", X: torch.Tensor, y: torch.Tensor, lams: Sequence[float], loss: str,
                      decay_bias: bool = True) -> tuple["Problem", torch.Tensor]:
        """``(problem, theta)`` for an ``ensemble.MLPEnsemble`` (its stacked weights copied)."""
        problem = cls(ens.d_in, ens.widths, ens.d_out, X, y, lams, loss, ens.activation, ens.bias, decay_bias,
                      seeds=ens.seeds)
        return problem, problem.flatten([W.detach() for W in ens.weights],
                                        [b.detach() for b in ens.biases] if ens.biases is not None else None)

    def flatten(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``theta`` ``(m, P)`` float64 from weights ``W_l`` ``(m, d_l, d_{l-1})`` (and biases ``(m, d_l)``)."""
        parts = []
        for l, W in enumerate(weights):
            parts.append(W.reshape(W.shape[0], -1))
            if self.bias:
                parts.append(biases[l].reshape(W.shape[0], -1))
        return torch.cat(parts, 1).to(self.device, torch.float64).contiguous()

    def unflatten(self, theta: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Views ``(W_l (m, d_l, d_{l-1}), b_l (m, d_l))`` of ``theta`` ``(m, P)``."""
        m = theta.shape[0]
        weights, biases = [], []
        for off, shape, _l, is_bias in self.layout:
            part = theta[:, off:off + math.prod(shape)].reshape(m, *shape)
            (biases if is_bias else weights).append(part)
        return weights, (biases if self.bias else None)

    def mlps(self, theta: torch.Tensor) -> list[MLP]:
        """One float64 ``models.MLP`` per member (``config`` with the member's seed), holding ``theta[m]``."""
        weights, biases = self.unflatten(theta.detach())
        out = []
        for m in range(theta.shape[0]):
            net = MLP(self.d_in, self.widths, self.d_out, self.activation, self.bias, seed=self.seeds[m]).double()
            net.to(self.device)
            with torch.no_grad():
                for l, layer in enumerate(net.layers):
                    layer.weight.copy_(weights[l][m])
                    if self.bias:
                        layer.bias.copy_(biases[l][m])
            out.append(net)
        return out

    def data(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(X, y, lams)`` of the members ``idx`` (shared inputs are not copied)."""
        if self.shared:
            return self.X, self.y, self.lams[idx]
        return self.X[idx], self.y[idx], self.lams[idx]

    # ------------------------------------------------------------------ objective, gradient, residual
    def evaluate(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lams: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(phi, grad phi, L_lambda, rho)`` for members with parameters ``theta`` ``(m, P)``.

        ``phi = L_lambda / lambda^2`` ``(m,)`` and its gradient ``(grad L_0 + lambda Theta) / lambda^2``
        ``(m, P)``; ``rho`` ``(m, L)`` the relative residual of every layer (0/0 = 0: ``W = 0`` is
        stationary; x/0 = inf), as :func:`nrc_utils.gradients.stationarity_residuals`. ``grad L_0``
        is ``(1/N) sum_i delta_{l,i} h_{l-1,i}^T`` from :func:`nrc_utils.ensemble.signals`, summed
        over chunks of samples.
        """
        m = theta.shape[0]
        weights, biases = self.unflatten(theta)
        view = _View(weights, biases, self.activation, self.act)
        parts: list[torch.Tensor] | None = None  # per layout entry: sum_i delta_i h_i^T (weights), sum_i delta_i (biases)
        loss_sum = torch.zeros(m, dtype=torch.float64, device=theta.device)
        chunk = max(1, EVAL_ELEMENTS // (m * max(self.d_in, *self.widths, self.d_out)))
        for start in range(0, self.N, chunk):
            xb = X[..., start:start + chunk, :]
            yb = y[..., start:start + chunk]
            losses, _out, inputs, deltas = _signals(view, xb, yb, self.loss)
            terms = []
            for hT, delta in zip(inputs, deltas):
                terms.append(torch.matmul(delta, hT.transpose(-1, -2)))  # (m, d_l, d_{l-1})
                if biases is not None:
                    terms.append(delta.sum(2))
            parts = terms if parts is None else [acc.add_(t) for acc, t in zip(parts, terms)]
            loss_sum += losses.sum(1)
        grad = torch.cat([t.reshape(m, -1) for t in parts], 1)
        dec = theta * self.decay
        L = loss_sum / self.N + 0.5 * lams * (dec * theta).sum(1)
        R = torch.addcmul(grad.div_(self.N), dec, lams[:, None])  # grad L_0 + lambda Theta (decayed entries)
        rho = self.layer_residuals(R, dec * lams[:, None])
        inv = lams.pow(-2)
        return L * inv, R * inv[:, None], L, rho

    def layer_residuals(self, R: torch.Tensor, lam_theta: torch.Tensor) -> torch.Tensor:
        """``rho_l = ||R_l||_F / ||lambda Theta_l||_F`` per member and layer ``(m, L)`` from ``R = grad L_lambda``
        and ``lambda Theta`` (undecayed entries zero), both ``(m, P)``."""
        sums = torch.matmul(torch.stack([R, lam_theta], 1).square_(), self.layer_sum)  # (m, 2, L)
        num, den = sums[:, 0], sums[:, 1]
        return torch.where(den > 0, (num / den).sqrt_(), torch.where(num == 0, 0.0, math.inf))

    def phi(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lams: torch.Tensor) -> torch.Tensor:
        """``L_lambda / lambda^2`` ``(m,)`` written with differentiable torch operations (for ``torch.func``)."""
        weights, biases = self.unflatten(theta)
        hT = X.T if X.dim() == 2 else X.transpose(1, 2)
        for l, W in enumerate(weights):
            if l > 0:
                hT = self.act(hT)
            hT = torch.matmul(W, hT)  # z_l^T = W_l h_{l-1}^T, (m, d_l, N)
            if biases is not None:
                hT = hT + biases[l][:, :, None]
        m, K, N = hT.shape
        target = torch.zeros(m, K, N, dtype=hT.dtype, device=hT.device)
        target.scatter_(1, y.expand(m, N).unsqueeze(1), 1.0)
        if self.loss == "ce":
            per = -(torch.log_softmax(hT, 1) * target).sum(1)
        else:
            per = 0.5 * (hT - target).pow(2).sum(1)
        L = per.mean(1) + 0.5 * lams * (theta * theta * self.decay).sum(1)
        return L / lams**2

    def hvp(self, theta: torch.Tensor, v: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lams: torch.Tensor
            ) -> torch.Tensor:
        """``H_m v_m`` per member ``(m, P)``, ``H_m`` the Hessian of ``L_lambda / lambda^2`` at ``theta[m]``
        (forward-over-reverse: ``jvp`` of ``grad``; members are independent, so the gradient of the sum
        over members is every member's gradient)."""
        grad = torch.func.grad(lambda th: self.phi(th, X, y, lams).sum())
        return torch.func.jvp(grad, (theta,), (v,))[1]

    def hessians(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, lams: torch.Tensor,
                 max_elements: int = 2**25) -> torch.Tensor:
        """Dense Hessians of ``L_lambda / lambda^2``, ``(m, P, P)``: column ``j`` is ``H e_j``, computed for a
        block of ``j`` at a time with ``torch.func.vmap`` (the block sized so that its activations hold
        about ``max_elements`` numbers), then symmetrised."""
        m, P = theta.shape
        per_column = m * self.N * (sum(self.widths) + self.d_out) * 4
        block = int(max(1, min(P, max_elements // max(1, per_column))))
        grad = torch.func.grad(lambda th: self.phi(th, X, y, lams).sum())

        def column(v: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(grad, (theta,), (v,))[1]

        H = torch.empty(m, P, P, dtype=torch.float64, device=theta.device)
        eye = torch.eye(P, dtype=torch.float64, device=theta.device)
        for j0 in range(0, P, block):
            V = eye[j0:j0 + block, None, :].expand(-1, m, P)
            H[:, :, j0:j0 + block] = torch.func.vmap(column)(V).permute(1, 2, 0)
        return 0.5 * (H + H.transpose(1, 2))


# ====================================================================== results
@dataclass
class LBFGSResult:
    """What :func:`lbfgs` returns; member ``m`` in row ``m`` of every array.

    ``theta`` ``(M, P)``; ``stops`` (:data:`nrc_utils.train.POLISH_STOPS`); ``iterations`` (direction +
    line search, counted per member); ``evaluations`` (function and gradient evaluations, the start
    included); ``residuals`` ``(M, L)`` per-layer ``rho_l`` and ``loss`` ``L_lambda`` at the end;
    ``seconds`` each member spent in the batch; ``batch_sizes`` the number of members in the batch
    at every iteration (their sum is the sum of ``iterations``); ``trace`` per member, with
    ``trace_every``, the tuples ``(iteration, L_lambda, L_0, max_l rho_l, seconds in the batch)`` after every
    ``trace_every``-th iteration (empty lists otherwise).
    """

    theta: torch.Tensor
    stops: list[str]
    iterations: list[int]
    evaluations: list[int]
    residuals: torch.Tensor
    loss: torch.Tensor
    seconds: list[float]
    batch_sizes: list[int] = field(default_factory=list)
    trace: list[list[tuple[int, float, float, float, float]]] = field(default_factory=list)

    @property
    def max_residuals(self) -> torch.Tensor:
        """``max_l rho_l`` per member ``(M,)``."""
        return self.residuals.max(1).values


@dataclass
class NewtonResult:
    """What :func:`newton` returns; member ``m`` in row ``m``.

    ``theta``, ``stops``, ``iterations`` (Newton steps tried), ``residuals`` ``(M, L)`` and ``loss``
    at the end; ``start_residuals`` ``(M,)``; ``min_eigenvalue`` ``(M,)``: the smallest eigenvalue of
    the Hessian of ``L_lambda`` at the final point (that of ``L_lambda / lambda^2`` times
    ``lambda^2``), NaN when not computed; ``method`` ``"dense"`` or ``"cg"`` and ``eig_method``
    per member (:func:`extreme_eigenvalues`'s ``how``; ``"none"`` without ``eigenvalues``);
    ``backtracked``: steps shortened because neither the full step lowered the residual nor could it be
    taken as a raise; ``raised``: full steps taken although they raised the residual (the returned point is the best one seen, never one of those);
    ``negative_curvature``: Newton-CG solves that met negative curvature; ``seconds`` per member
    (the Newton steps of its chunk; the eigenvalue not included);
    ``lams`` the members' lambdas; ``max_eigenvalue`` ``(M,)`` the largest Hessian eigenvalue of ``L_lambda``
    (the scale against which ``min_eigenvalue`` is zero or not, :data:`ZERO_RTOL`).
    """

    theta: torch.Tensor
    stops: list[str]
    iterations: list[int]
    residuals: torch.Tensor
    loss: torch.Tensor
    start_residuals: torch.Tensor
    min_eigenvalue: torch.Tensor
    method: list[str]
    eig_method: list[str]
    backtracked: list[int]
    raised: list[int]
    negative_curvature: list[int]
    seconds: list[float]
    lams: torch.Tensor
    max_eigenvalue: torch.Tensor | None = None

    @property
    def max_residuals(self) -> torch.Tensor:
        return self.residuals.max(1).values

    @property
    def min_eigenvalue_scaled(self) -> torch.Tensor:
        """The smallest eigenvalue of the Hessian of ``L_lambda / lambda^2``."""
        return self.min_eigenvalue / self.lams**2


def _per_member(value: float | Sequence[float], M: int, name: str, dtype=torch.float64) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype)
    if t.dim() == 0:
        t = t.expand(M).clone()
    if t.shape != (M,):
        raise ValueError(f"{name} must be one number or one per member ({M}), got {tuple(t.shape)}")
    return t


# ====================================================================== L-BFGS
def _inverse_hessian_product(g: torch.Tensor, Zt: torch.Tensor, SY: torch.Tensor, YY: torch.Tensor,
                             filled: torch.Tensor, gamma: torch.Tensor, oldest: int) -> torch.Tensor:
    """``H g`` per member for the L-BFGS inverse-Hessian approximation ``H`` of the stored pairs, compact form.

    ``g`` ``(m, P)``; ``Zt = [S, Y]`` ``(m, P, 2h)`` (columns ``i`` and ``h + i`` hold ``s_i`` and ``y_i``);
    ``SY[i, j] = s_i^T y_j`` and ``YY[i, j] = y_i^T y_j`` ``(m, h, h)``; ``filled`` ``(m, h)`` which slots
    hold a pair (an empty slot has zero columns and zero rows of ``SY`` and ``YY``); ``gamma`` ``(m,)``.
    The slots are a ring written in turn by every member of the batch, one slot per iteration, so
    that the age order is the same for all: ``oldest`` is the slot written longest ago (the next to
    be written), the pairs from oldest to newest sit in slots ``(oldest + j) % h``, ``j = 0 .. h-1``.
    ``H g = gamma g + S u - gamma Y w`` with ``R w = S^T g`` and
    ``R^T u = (D + gamma Y^T Y) w - gamma Y^T g``, ``R_ij = s_i^T y_j`` for pair ``i`` not newer than pair
    ``j`` (else 0: upper triangular in age order), ``D = diag(s_i^T y_i)`` (Byrd, Nocedal & Schnabel 1994,
    eq. 3.13). Empty slots get ``R_ii = 1``, so they add nothing, wherever they sit in the ring.
    """
    h = SY.shape[1]
    order = [(oldest + j) % h for j in range(h)]  # slots, oldest pair first
    rank = [(slot - oldest) % h for slot in range(h)]  # the age of the pair in each slot
    o = torch.tensor(order, device=g.device)
    ab = torch.bmm(g[:, None, :], Zt).squeeze(1)[:, torch.cat([o, o + h])]  # (m, 2h): s_i^T g, y_i^T g, age order
    a, bb = ab[:, :h, None], ab[:, h:, None]
    SYa, YYa = SY[:, o][:, :, o], YY[:, o][:, :, o]
    R = SYa.triu() + torch.diag_embed((~filled[:, o]).to(SY.dtype))
    gam = gamma[:, None, None]
    w = torch.linalg.solve_triangular(R, a, upper=True)  # (m, h, 1)
    rhs = torch.diagonal(SYa, dim1=1, dim2=2)[:, :, None] * w + gam * (torch.bmm(YYa, w) - bb)
    u = torch.linalg.solve_triangular(R.transpose(1, 2), rhs, upper=False)
    coef = torch.cat([u, -gam * w], 1).squeeze(2)  # age order
    r = torch.tensor(rank, device=g.device)
    coef = coef[:, torch.cat([r, r + h])]  # slot order
    return gamma[:, None] * g + torch.bmm(Zt, coef[:, :, None]).squeeze(2)


class _Batch:
    """The members in the L-BFGS batch: every tensor has the batch as its first dimension."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        for n in names:
            setattr(self, n, None)

    def keep(self, mask: torch.Tensor) -> None:
        for n in self.names:
            setattr(self, n, getattr(self, n)[mask])

    def extend(self, other: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            cur = getattr(self, n)
            setattr(self, n, other[n] if cur is None else torch.cat([cur, other[n]]))


def lbfgs(problem: Problem, theta0: torch.Tensor, tol: float | Sequence[float] = 1e-6,
          max_iter: int | Sequence[int] = 5000, max_seconds: float = 60.0, history_size: int = 50,
          max_batch: int | None = None, c1: float = 1e-4, max_ls: int = 30, curvature_eps: float = 1e-10,
          trace_every: int | None = None) -> LBFGSResult:
    """Batched L-BFGS on ``L_lambda / lambda^2`` from ``theta0`` ``(M, P)`` until every member stops.

    Member ``m`` stops at ``max_l rho_l <= tol[m]`` ("target"), after ``max_iter[m]`` iterations
    ("iteration cap"), ``max_seconds`` after it entered the batch ("time cap"), or when neither its
    quasi-Newton direction nor ``-g`` (after its history is dropped) gives an Armijo step in
    ``max_ls`` trials ("no progress"). ``tol`` and ``max_iter`` are one value or one per member.
    At most ``max_batch`` members (all by default) are in the batch; a member that stops leaves
    it and the next waiting member enters. The members' iterates do not depend on one another:
    member ``m`` takes the steps it would take alone (up to the rounding of batched products).
    The first step of a member without curvature pairs is ``t = min(1, 1/||g||_1)`` along ``-g``
    (as ``torch.optim.LBFGS``), later steps start from ``t = 1``. With ``trace_every``, every member's
    loss and residual are recorded after every ``trace_every``-th iteration (``LBFGSResult.trace``).
    """
    M, P = theta0.shape
    if M != problem.M or P != problem.P:
        raise ValueError(f"theta0 must be ({problem.M}, {problem.P}), got {tuple(theta0.shape)}")
    if history_size < 1:
        raise ValueError(f"history_size must be >= 1, got {history_size}")
    tols = _per_member(tol, M, "tol")
    caps = _per_member(max_iter, M, "max_iter", torch.long)
    max_batch = M if max_batch is None else max(1, int(max_batch))
    dev, h = problem.device, int(history_size)
    out_theta = theta0.detach().to(dev, torch.float64).clone()
    out_res = torch.full((M, problem.depth), math.nan, dtype=torch.float64, device=dev)
    out_loss = torch.full((M,), math.nan, dtype=torch.float64, device=dev)
    stops: list[str | None] = [None] * M
    iterations, evaluations, seconds = [0] * M, [0] * M, [0.0] * M
    batch_sizes: list[int] = []
    trace: list[list[tuple[int, float, float, float, float]]] = [[] for _ in range(M)]
    names = ["ids", "x", "f", "g", "res", "Zt", "SY", "YY", "filled", "gamma", "steep", "lam", "tol", "cap", "iters",
             "evals", "entered"]
    b = _Batch(names if problem.shared else names + ["Xb", "yb"])
    caps, tols = caps.to(dev), tols.to(dev)
    clock0 = time.perf_counter()
    queue = list(range(M))

    def data_of(sel: torch.Tensor | None = None):
        if problem.shared:
            return problem.X, problem.y, b.lam if sel is None else b.lam[sel]
        if sel is None:
            return b.Xb, b.yb, b.lam
        return b.Xb[sel], b.yb[sel], b.lam[sel]

    def finish(local: torch.Tensor, reason: str) -> None:
        now = time.perf_counter() - clock0
        for j in local.tolist():
            m = int(b.ids[j])
            stops[m] = reason
            seconds[m] = now - float(b.entered[j])
            iterations[m], evaluations[m] = int(b.iters[j]), int(b.evals[j])
        rows = b.ids[local]
        out_theta[rows], out_res[rows], out_loss[rows] = b.x[local], b.res[local], b.f[local] * b.lam[local] ** 2

    def admit() -> None:
        n = min(max_batch - (0 if b.ids is None else len(b.ids)), len(queue))
        if n <= 0:
            return
        ids = torch.tensor(queue[:n], device=dev)
        del queue[:n]
        x = out_theta[ids].clone()
        X, y, lam = problem.data(ids)
        f, g, _L, rho = problem.evaluate(x, X, y, lam)
        if not torch.isfinite(f).all():
            bad = ids[~torch.isfinite(f)].tolist()
            raise DivergenceError(f"L_lambda is not finite at the start of members {bad}; check their weights")
        new = {"ids": ids, "x": x, "f": f, "g": g, "res": rho,
               "Zt": torch.zeros(n, P, 2 * h, dtype=torch.float64, device=dev),
               "SY": torch.zeros(n, h, h, dtype=torch.float64, device=dev), "YY": torch.zeros(n, h, h, dtype=torch.float64, device=dev),
               "filled": torch.zeros(n, h, dtype=torch.bool, device=dev),
               "gamma": torch.ones(n, dtype=torch.float64, device=dev), "steep": torch.zeros(n, dtype=torch.bool, device=dev),
               "lam": lam, "tol": tols[ids], "cap": caps[ids], "iters": torch.zeros(n, dtype=torch.long, device=dev),
               "evals": torch.ones(n, dtype=torch.long, device=dev),
               "entered": torch.full((n,), time.perf_counter() - clock0, dtype=torch.float64, device=dev)}
        if not problem.shared:
            new["Xb"], new["yb"] = X, y
        b.extend(new)
        # members already at their target stop before any iteration
        done = b.res.max(1).values <= b.tol
        if done.any():
            finish(done.nonzero().flatten(), "target")
            b.keep(~done)
            admit()

    admit()
    tick = 0  # the batch's iterations: iteration ``tick`` writes every member's pair to ring slot ``tick % h``
    while b.ids is not None and len(b.ids) > 0:
        n = len(b.ids)
        batch_sizes.append(n)
        ar = torch.arange(n, device=dev)
        slot = tick % h
        # ---- direction: d = -H g, compact L-BFGS form (empty slots contribute nothing)
        has = b.filled.any(1)
        d = -_inverse_hessian_product(b.g, b.Zt, b.SY, b.YY, b.filled, b.gamma, oldest=slot)
        use_steep = b.steep | ~has
        d = torch.where(use_steep[:, None], -b.g, d)
        gd = (b.g * d).sum(1)
        bad = ~(gd < 0) | ~torch.isfinite(gd)
        if bad.any():  # not a descent direction (rounding): take -g, the history is dropped below
            d = torch.where(bad[:, None], -b.g, d)
            gd = torch.where(bad, -(b.g * b.g).sum(1), gd)
        no_pairs = ~has | bad
        t = torch.ones_like(gd)
        if no_pairs.any():
            t = torch.where(no_pairs, (1.0 / b.g.abs().sum(1)).clamp(max=1.0), t)
        # ---- backtracking Armijo line search, per member
        x_new = f_new = g_new = r_new = None
        ok_all = torch.zeros(n, dtype=torch.bool, device=dev)
        pending = ar
        for trial in range(max_ls):
            if trial == 0:  # every member, without copying the batch
                tp, fo, gdo = t, b.f, gd
                xp = torch.addcmul(b.x, t[:, None], d)
                fp, gp, _L, rp = problem.evaluate(xp, *data_of())
                b.evals += 1
            else:
                tp, fo, gdo = t[pending], b.f[pending], gd[pending]
                xp = b.x[pending] + tp[:, None] * d[pending]
                fp, gp, _L, rp = problem.evaluate(xp, *data_of(pending))
                b.evals[pending] += 1
            # Armijo on the difference: ``fp <= fo + c1 t g.d`` would accept fp == fo once c1 t g.d is below
            # fo's rounding, and L-BFGS would then creep along at the float64 floor without ever stopping
            ok = torch.isfinite(fp) & (fp - fo <= c1 * tp * gdo)
            if trial == 0 and bool(ok.all()):  # the usual case: every member takes its first step
                x_new, f_new, g_new, r_new = xp, fp, gp, rp
                ok_all[:] = True
                break
            if x_new is None:
                x_new, f_new, g_new, r_new = b.x.clone(), b.f.clone(), b.g.clone(), b.res.clone()
            acc = pending[ok]
            x_new[acc], f_new[acc], g_new[acc], r_new[acc] = xp[ok], fp[ok], gp[ok], rp[ok]
            ok_all[acc] = True
            # safeguarded quadratic interpolation: minimiser of the parabola through f(0), f'(0), f(t)
            curv = fp - fo - gdo * tp
            t_q = torch.where(torch.isfinite(fp) & (curv > 0), -gdo * tp * tp / (2 * curv.clamp(min=1e-300)), 0.1 * tp)
            t[pending] = torch.minimum(torch.maximum(t_q, 0.1 * tp), 0.5 * tp)
            pending = pending[~ok]
            if len(pending) == 0:
                break
        # ---- curvature pairs: every member writes slot ``tick % h``, an empty one (zeros) when it did not move
        # or its pair fails the curvature test (that member then loses its oldest pair)
        sy = torch.stack([x_new - b.x, g_new - b.g], 1)  # (n, 2, P): s, y
        G = torch.bmm(sy, sy.transpose(1, 2))  # (n, 2, 2): s^T s, s^T y; y^T y
        ys, yy = G[:, 0, 1], G[:, 1, 1]
        good = ok_all & (ys > curvature_eps * (G[:, 0, 0] * yy).sqrt())
        if not bool(good.all()):
            sy = sy * good[:, None, None].to(sy.dtype)
        b.Zt[:, :, slot], b.Zt[:, :, h + slot] = sy[:, 0], sy[:, 1]
        b.filled[:, slot] = good
        prods = torch.bmm(sy, b.Zt)  # (n, 2, 2h): s_new^T [S, Y], y_new^T [S, Y]
        b.SY[:, slot, :] = prods[:, 0, h:]  # s_new^T y_j
        b.SY[:, :, slot] = prods[:, 1, :h]  # s_i^T y_new
        b.YY[:, slot, :] = prods[:, 1, h:]
        b.YY[:, :, slot] = prods[:, 1, h:]
        b.gamma = torch.where(good, ys / yy, b.gamma)
        tick += 1
        b.x, b.f, b.g, b.res = x_new, f_new, g_new, r_new
        b.iters += 1
        if trace_every:
            due = (b.iters % int(trace_every) == 0).nonzero().flatten()
            if len(due):
                now = time.perf_counter() - clock0
                L = b.f[due] * b.lam[due] ** 2
                L0 = L - 0.5 * b.lam[due] * (b.x[due] * b.x[due] * problem.decay).sum(1)
                rows = zip(b.ids[due].tolist(), b.iters[due].tolist(), L.tolist(), L0.tolist(),
                           b.res[due].max(1).values.tolist(), b.entered[due].tolist())
                for m, it, loss, loss0, res, entered in rows:
                    trace[m].append((int(it), float(loss), float(loss0), float(res), now - float(entered)))
        # ---- failures: drop the history and retry along -g once; a second failure is "no progress"
        failed = ~ok_all
        stalled = failed & (use_steep | bad)
        retry = failed & ~(use_steep | bad)
        drop = retry | bad
        if drop.any():
            b.Zt[drop] = 0.0
            b.SY[drop] = 0.0
            b.YY[drop] = 0.0
            b.filled[drop] = False
            b.gamma[drop] = 1.0
        b.steep = retry
        # ---- stops
        reached = b.res.max(1).values <= b.tol
        timed = (time.perf_counter() - clock0) - b.entered > max_seconds
        capped = b.iters >= b.cap
        if bool((reached | stalled | timed | capped).any()):
            stop = torch.zeros(n, dtype=torch.bool, device=dev)
            for mask, reason in ((reached, "target"), (stalled, "no progress"), (timed, "time cap"),
                                 (capped, "iteration cap")):
                this = mask & ~stop
                if this.any():
                    finish(this.nonzero().flatten(), reason)
                    stop |= this
            b.keep(~stop)
            admit()
    return LBFGSResult(out_theta, [str(s) for s in stops], iterations, evaluations, out_res, out_loss, seconds,
                       batch_sizes, trace)


# ====================================================================== Newton
def _cg(hvp, g: torch.Tensor, eta: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conjugate gradients for ``H p = -g`` per member (``g`` ``(m, P)``; ``hvp(sel, V)`` gives ``H v`` of the
    members ``sel``) until ``||H p + g|| <= eta ||g||``; ``(p, negative curvature met, iterations)``.

    A member meeting ``d^T H d <= 0`` stops there with the iterate so far (``-g`` at the first
    iteration: the gradient direction)."""
    m = g.shape[0]
    p = torch.zeros_like(g)
    r = -g.clone()
    dv = r.clone()
    rr = (r * r).sum(1)
    goal = eta * rr.sqrt()
    negative = torch.zeros(m, dtype=torch.bool, device=g.device)
    iters = torch.zeros(m, dtype=torch.long, device=g.device)
    run = torch.arange(m, device=g.device)[rr.sqrt() > goal]
    for k in range(max_iter):
        if len(run) == 0:
            break
        Hd = hvp(run, dv[run])
        dHd = (dv[run] * Hd).sum(1)
        neg = ~(dHd > 0)
        if neg.any():
            nr = run[neg]
            negative[nr] = True
            if k == 0:
                p[nr] = -g[nr]
        ok = ~neg
        run, Hd, dHd = run[ok], Hd[ok], dHd[ok]
        alpha = rr[run] / dHd
        p[run] += alpha[:, None] * dv[run]
        r[run] -= alpha[:, None] * Hd
        rr_new = (r[run] * r[run]).sum(1)
        iters[run] += 1
        beta = rr_new / rr[run]
        dv[run] = r[run] + beta[:, None] * dv[run]
        rr[run] = rr_new
        run = run[rr_new.sqrt() > goal[run]]
    return p, negative, iters


@dataclass
class LanczosResult:
    """What :func:`lanczos` returns, member ``m`` of the members asked for in row ``m``: the smallest and
    largest Ritz values ``(m,)`` (eigenvalue estimates of the Hessian of ``L_lambda / lambda^2``), the
    residual norms ``||H y - theta y||`` of their Ritz vectors ``(m, 2)``, the Lanczos steps (Hessian-vector
    products) and the stop: ``"converged"``, ``"step cap"`` or ``"time cap"``."""

    smallest: torch.Tensor
    largest: torch.Tensor
    residuals: torch.Tensor
    steps: list[int]
    stops: list[str]


def _tridiagonal_extremes(alpha: np.ndarray, beta: np.ndarray) -> tuple[float, float, float, float]:
    """``(smallest, largest, residual of smallest, residual of largest)`` of the Lanczos tridiagonal
    ``T_k`` (diagonal ``alpha`` ``(k,)``, off-diagonal and next coefficient ``beta`` ``(k,)``): the Ritz
    pair ``(theta, s)`` of ``T_k`` has residual ``|beta_k s_k|`` (Golub & Van Loan, *Matrix
    Computations*, 4th ed., eq. 10.1.12)."""
    from scipy.linalg import eigh_tridiagonal

    k = len(alpha)
    if k == 1:
        return float(alpha[0]), float(alpha[0]), float(abs(beta[0])), float(abs(beta[0]))
    ends = []
    for i in (0, k - 1):
        w, s = eigh_tridiagonal(alpha, beta[:-1], select="i", select_range=(i, i))
        ends.append((float(w[0]), float(abs(beta[-1] * s[-1, 0]))))
    return ends[0][0], ends[1][0], ends[0][1], ends[1][1]


def lanczos(problem: Problem, theta: torch.Tensor, members: Sequence[int] | None = None, tol: float = 1e-10,
            max_steps: int = 2000, max_seconds: float = 600.0, memory_bytes: int = 2**30, check_every: int = 10,
            seed: int = 0) -> LanczosResult:
    """The smallest and largest eigenvalues of the Hessian of ``L_lambda / lambda^2`` of ``members``
    (default: all) at ``theta`` ``(M, P)``, by the Lanczos iteration with full reorthogonalisation,
    batched over members.

    From a random unit vector ``q_1`` (``seed``): ``w = H q_k``, ``alpha_k = q_k^T w``, ``w`` made
    orthogonal to ``q_1 .. q_k`` (twice: classical Gram-Schmidt, "twice is enough"),
    ``beta_k = ||w||``, ``q_{k+1} = w / beta_k``; the extreme eigenvalues of the tridiagonal ``T_k``
    (``alpha`` on the diagonal, ``beta`` beside it) are the Ritz values, the smallest never below the
    smallest eigenvalue of ``H`` (Cauchy interlacing) and converging to it from above. A member stops
    "converged" once both extreme Ritz pairs have residuals at most ``tol`` times the largest Ritz value
    in absolute value (checked every ``check_every`` steps), or when ``beta_k`` vanishes (the Krylov
    space is invariant: its Ritz values are eigenvalues); else at ``max_steps`` ("step cap") or after
    ``max_seconds`` ("time cap"), with the Ritz values reached. Keeping every ``q_k`` (restarted
    Lanczos, ARPACK's ``eigsh``, forgets them) matters here: for the digits network of
    ``benchmarks/polish.py`` (8,832 parameters, eigenvalues 0.3 to 3e4 on this scale) both ends
    converge in 380 products, where ``eigsh(which="SA", ncv=40)`` took 1,701 for the smallest
    eigenvalue of chapter 1's network (12,928 parameters). Members run in chunks whose vectors
    ``q_k`` take at most ``memory_bytes``.
    """
    M, P = theta.shape
    dev = problem.device
    rows = list(range(M)) if members is None else [int(m) for m in members]
    n = len(rows)
    max_steps = max(1, min(int(max_steps), P))
    smallest = torch.full((n,), math.nan, dtype=torch.float64)
    largest = torch.full_like(smallest, math.nan)
    residuals = torch.full((n, 2), math.nan, dtype=torch.float64)
    steps, stops = [0] * n, ["step cap"] * n
    chunk = max(1, int(memory_bytes // (8 * P * (max_steps + 1))))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    for c0 in range(0, n, chunk):
        local = list(range(c0, min(n, c0 + chunk)))
        ids = torch.tensor([rows[j] for j in local], device=dev)
        m = len(local)
        t_start = time.perf_counter()
        q = torch.randn(m, P, dtype=torch.float64, generator=gen).to(dev)
        Q = torch.zeros(m, min(max_steps + 1, 64), P, dtype=torch.float64, device=dev)
        Q[:, 0] = q / q.norm(dim=1, keepdim=True)
        alpha = np.zeros((m, max_steps))
        beta = np.zeros((m, max_steps))
        active = list(range(m))
        for k in range(max_steps):
            a = torch.tensor(active, device=dev)
            w = problem.hvp(theta[ids[a]], Q[a, k], *problem.data(ids[a]))
            alpha[active, k] = (w * Q[a, k]).sum(1).cpu().numpy()
            basis = Q[a, :k + 1]
            for _ in range(2):
                w = w - torch.einsum("mkp,mk->mp", basis, torch.einsum("mkp,mp->mk", basis, w))
            b = w.norm(dim=1)
            beta[active, k] = b.cpu().numpy()
            if k + 1 == Q.shape[1] and k + 1 < max_steps + 1:
                grown = torch.zeros(m, min(max_steps + 1, 2 * Q.shape[1]), P, dtype=torch.float64, device=dev)
                grown[:, :Q.shape[1]] = Q
                Q = grown
            Q[a, k + 1] = w / b.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
            done = []
            last = k + 1 == max_steps
            late = time.perf_counter() - t_start > max_seconds
            for j in active:
                scale = max(abs(alpha[j, :k + 1]).max(), beta[j, :k + 1].max())
                exhausted = beta[j, k] <= 1e-14 * scale
                if not (exhausted or last or late or (k + 1) % check_every == 0):
                    continue
                lo, hi, r_lo, r_hi = _tridiagonal_extremes(alpha[j, :k + 1], beta[j, :k + 1])
                converged = exhausted or max(r_lo, r_hi) <= tol * max(abs(lo), abs(hi))
                if converged or last or late:
                    g = local[j]
                    smallest[g], largest[g] = lo, hi
                    residuals[g] = torch.tensor([0.0, 0.0] if exhausted else [r_lo, r_hi])
                    steps[g] = k + 1
                    stops[g] = "converged" if converged else ("step cap" if last else "time cap")
                    done.append(j)
            active = [j for j in active if j not in done]
            if not active:
                break
    return LanczosResult(smallest, largest, residuals, steps, stops)


def extreme_eigenvalues(problem: Problem, theta: torch.Tensor, dense_max_params: int = 3000,
                        memory_bytes: int = 2**29, lanczos_tol: float = 1e-10, lanczos_max_steps: int = 2000,
                        lanczos_max_seconds: float = 600.0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(smallest, largest, how)``: the extreme eigenvalues ``(M,)`` of the Hessian of ``L_lambda`` of every
    member at ``theta`` ``(M, P)``, and per member how they were found.

    ``lambda_m^2`` times those of ``L_lambda / lambda^2``: ``torch.linalg.eigvalsh`` of the dense
    Hessians (:meth:`Problem.hessians`, members in chunks of about ``memory_bytes``; ``how``
    ``"eigvalsh"``) when ``P <= dense_max_params``, else :func:`lanczos` (``"lanczos"``; a member whose
    Ritz values did not converge within ``lanczos_max_steps`` or ``lanczos_max_seconds`` gets NaN and
    ``"lanczos: step cap"`` or ``"lanczos: time cap"``). A smallest eigenvalue above ``ZERO_RTOL`` times
    the largest: a strict local minimum; below minus that: a saddle; in between: zero up to rounding, a
    flat direction (a continuous symmetry of the network, for one)."""
    M, P = theta.shape
    low = torch.empty(M, dtype=torch.float64, device=problem.device)
    high = torch.empty_like(low)
    if P <= dense_max_params:
        chunk = max(1, memory_bytes // (3 * 8 * P * P))
        for c0 in range(0, M, chunk):
            ids = torch.arange(c0, min(M, c0 + chunk), device=problem.device)
            H = problem.hessians(theta[ids], *problem.data(ids), max_elements=memory_bytes // 16)
            ev = torch.linalg.eigvalsh(H)
            low[ids], high[ids] = ev[:, 0], ev[:, -1]
        how = ["eigvalsh"] * M
    else:
        lz = lanczos(problem, theta, tol=lanczos_tol, max_steps=lanczos_max_steps, max_seconds=lanczos_max_seconds,
                     memory_bytes=4 * memory_bytes)
        ok = torch.tensor([stop == "converged" for stop in lz.stops])
        low[:] = torch.where(ok, lz.smallest, math.nan).to(low.device)
        high[:] = torch.where(ok, lz.largest, math.nan).to(high.device)
        how = ["lanczos" if stop == "converged" else f"lanczos: {stop}" for stop in lz.stops]
    return low * problem.lams**2, high * problem.lams**2, how


def min_eigenvalues(problem: Problem, theta: torch.Tensor, dense_max_params: int = 3000,
                    memory_bytes: int = 2**29, lanczos_tol: float = 1e-10) -> torch.Tensor:
    """The smallest eigenvalue of the Hessian of ``L_lambda`` of every member at ``theta`` ``(M, P)``, ``(M,)``
    (:func:`extreme_eigenvalues`'s first half)."""
    return extreme_eigenvalues(problem, theta, dense_max_params, memory_bytes, lanczos_tol)[0]


def pseudo_inverse_step(H: torch.Tensor, g: torch.Tensor, rtol: float = ZERO_RTOL) -> torch.Tensor:
    """``-H^+ g`` per member (``H`` ``(m, P, P)`` symmetric, ``g`` ``(m, P)``) from ``eigh``, eigenvalues below
    ``rtol`` times the largest (in absolute value) left out: the Newton step restricted to the directions
    where ``H`` is not flat (a continuous symmetry makes ``H`` singular, and an LU solve then steps far along it)."""
    ev, V = torch.linalg.eigh(H)
    cut = ev.abs().max(1, keepdim=True).values * rtol
    inv = torch.where(ev.abs() > cut, 1.0 / ev, torch.zeros_like(ev))
    coeff = torch.bmm(V.transpose(1, 2), -g[:, :, None]).squeeze(2) * inv
    return torch.bmm(V, coeff[:, :, None]).squeeze(2)


def newton(problem: Problem, theta0: torch.Tensor, tol: float | Sequence[float] = 1e-12, max_iter: int = 20,
           max_seconds: float = 600.0, dense_max_params: int = 3000, memory_bytes: int = 2**29,
           cg_max_iter: int = 2000, max_backtracks: int = 12, raise_factor: float = 1e4, max_raises: int = 2,
           patience: int = 4, eigenvalues: bool = True, eig_dense_max_params: int = 3000,
           lanczos_tol: float = 1e-10) -> NewtonResult:
    """Newton's method for ``grad L_lambda = 0``, batched over members, from ``theta0`` ``(M, P)``.

    At every iterate: the residual ``max_l rho_l`` from :meth:`Problem.evaluate`; stop at
    ``<= tol[m]`` ("target"), after ``max_iter`` steps ("iteration cap") or ``max_seconds`` since the
    member's chunk started ("time cap"); else the step ``p = -H^{-1} g`` of ``phi = L_lambda /
    lambda^2`` (dense: ``torch.linalg.solve``, the pseudo-inverse from ``eigh`` where that fails;
    Newton-CG beyond ``dense_max_params`` parameters).

    The guard. The full step is taken when it lowers the residual. With a Hessian whose
    eigenvalues span many decades (1e-1 to 1e6 on the scale of ``phi`` for chapter 3's networks),
    the first full step from about 1e-5 can raise the residual (to about 1e-3) and the next ones
    still converge quadratically; so a full step that raises the residual to less than
    ``raise_factor`` times the best residual seen is taken too, at most ``max_raises`` times in a
    row, and counted in ``NewtonResult.raised``. Otherwise ``t = 1/2, 1/4, ...`` (``max_backtracks``
    halvings) until the residual is lower. A member that no step helps, or whose best residual has
    not improved for ``patience`` steps, stops with "no progress". Every member not stopped by its
    target returns its best point (lowest residual), never a raised one.

    The dense path runs members in chunks whose Hessians take about ``memory_bytes``. With
    ``eigenvalues``, the smallest eigenvalue of the Hessian of ``L_lambda`` at the returned point is
    computed for every member by :func:`min_eigenvalues` (``eigvalsh`` up to
    ``eig_dense_max_params`` parameters, Lanczos beyond: a few hundred Hessian-vector products cost
    less than the ``P`` columns of a dense Hessian).
    """
    M, P = theta0.shape
    if M != problem.M or P != problem.P:
        raise ValueError(f"theta0 must be ({problem.M}, {problem.P}), got {tuple(theta0.shape)}")
    tols = _per_member(tol, M, "tol")
    dev = problem.device
    dense = P <= dense_max_params
    theta = theta0.detach().to(dev, torch.float64).clone()
    res_out = torch.full((M, problem.depth), math.nan, dtype=torch.float64, device=dev)
    loss_out = torch.full((M,), math.nan, dtype=torch.float64, device=dev)
    start_res = torch.full((M,), math.nan, dtype=torch.float64, device=dev)
    eig = torch.full((M,), math.nan, dtype=torch.float64, device=dev)
    stops: list[str | None] = [None] * M
    iterations, backtracked, negative, seconds = [0] * M, [0] * M, [0] * M, [0.0] * M
    raised = [0] * M
    chunk = max(1, memory_bytes // (3 * 8 * P * P)) if dense else M
    for c0 in range(0, M, chunk):
        ids = torch.arange(c0, min(M, c0 + chunk), device=dev)
        t_start = time.perf_counter()
        x = theta[ids]
        X, y, lam = problem.data(ids)
        _f, g, L, rho = problem.evaluate(x, X, y, lam)
        res = rho.max(1).values
        start_res[ids] = res
        best = {"x": x.clone(), "g": g.clone(), "rho": rho.clone(), "L": L.clone(), "res": res.clone()}
        stale = torch.zeros(len(ids), dtype=torch.long, device=dev)  # steps since the best point improved
        in_row = torch.zeros(len(ids), dtype=torch.long, device=dev)  # accepted raises in a row
        active = torch.arange(len(ids), device=dev)

        def rows_data(rows: torch.Tensor):
            return (X, y, lam[rows]) if problem.shared else (X[rows], y[rows], lam[rows])

        def stop_at_best(local: torch.Tensor, reason: str) -> None:
            """Members ``local`` (chunk rows) stop at their best point."""
            if len(local) == 0:
                return
            for key, arr in (("x", x), ("g", g), ("rho", rho), ("L", L), ("res", res)):
                arr[local] = best[key][local]
            for j in local.tolist():
                stops[int(ids[j])] = reason

        for it in range(max_iter + 1):
            xa, ga, ra, la = x[active], g[active], res[active], lam[active]
            reached = ra <= tols[ids[active]]
            elapsed = time.perf_counter() - t_start
            capped = torch.full_like(reached, it == max_iter or elapsed > max_seconds)
            for j in reached.nonzero().flatten().tolist():
                stops[int(ids[active[j]])] = "target"
            stop_at_best(active[capped & ~reached], "time cap" if elapsed > max_seconds else "iteration cap")
            keep = ~(reached | capped)
            if not keep.any():
                break
            active, xa, ga, ra, la = active[keep], xa[keep], ga[keep], ra[keep], la[keep]
            # ---- Newton step p = -H^{-1} g
            if dense:
                Hk = problem.hessians(xa, *rows_data(active), max_elements=memory_bytes // 16)
                # one LU per member: the batched CPU solve of this torch/oneMKL build fails for P ~ 2000 on
                # two threads ("Parameter 6 was incorrect on entry to DLASWP") and does not return
                solved = [torch.linalg.solve_ex(Hk[j], -ga[j]) for j in range(len(ga))]
                p = torch.stack([sol for sol, _info in solved])
                info = torch.stack([inf for _sol, inf in solved])
                broken = (info != 0) | ~torch.isfinite(p).all(1)
                if broken.any():  # singular: pseudo-inverse from the eigendecomposition
                    p[broken] = pseudo_inverse_step(Hk[broken], ga[broken])
            else:
                def hvp(sel: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
                    rows = active[sel]
                    return problem.hvp(x[rows], V, *rows_data(rows))
                eta = torch.clamp(ra.sqrt(), max=0.1)
                p, neg, _k = _cg(hvp, ga, eta, cg_max_iter)
                for j in neg.nonzero().flatten().tolist():
                    negative[int(ids[active[j]])] += 1
            # ---- the full step: accepted when it lowers the residual, or (counted in ``raised``) when it
            # raises it less than raise_factor times the best so far, at most max_raises times in a row
            _ft, gt, Lt, rt = problem.evaluate(xa + p, *rows_data(active))
            rmax = rt.max(1).values
            lower = rmax < ra
            allowed = torch.isfinite(rmax) & (rmax < raise_factor * best["res"][active]) & (in_row[active] < max_raises)
            take = lower | allowed
            if dense and not lower.all():  # a singular Hessian: try the step restricted to its non-flat directions
                sel = (~lower).nonzero().flatten()
                p_pinv = pseudo_inverse_step(Hk[sel], ga[sel])
                _ft2, gt2, Lt2, rt2 = problem.evaluate(xa[sel] + p_pinv, *rows_data(active[sel]))
                better = rt2.max(1).values < ra[sel]
                if better.any():
                    rows = sel[better]
                    p[rows] = p_pinv[better]
                    gt[rows], Lt[rows], rt[rows] = gt2[better], Lt2[better], rt2[better]
                    rmax[rows] = rt2.max(1).values[better]
                    lower[rows] = True
                    take[rows] = True
            acc_rows = active[take]
            x[acc_rows], g[acc_rows], rho[acc_rows], L[acc_rows], res[acc_rows] = \
                (xa + p)[take], gt[take], rt[take], Lt[take], rmax[take]
            for j in active[take & ~lower].tolist():
                raised[int(ids[j])] += 1
            in_row[active[take & ~lower]] += 1
            in_row[active[lower]] = 0
            # ---- else: backtrack from the current point, t = 1/2, 1/4, ..., until the residual is lower
            step = torch.full((len(active),), 0.5, dtype=torch.float64, device=dev)
            pending = (~take).nonzero().flatten()
            for _k in range(max_backtracks):
                if len(pending) == 0:
                    break
                rows = active[pending]
                xt = xa[pending] + step[pending, None] * p[pending]
                _ft, gt, Lt, rt = problem.evaluate(xt, *rows_data(rows))
                rmax = rt.max(1).values
                better = rmax < ra[pending]
                br = rows[better]
                x[br], g[br], rho[br], L[br], res[br] = xt[better], gt[better], rt[better], Lt[better], rmax[better]
                take[pending[better]] = True
                for j in br.tolist():
                    backtracked[int(ids[j])] += 1
                pending = pending[~better]
                step[pending] *= 0.5
            for j in active.tolist():
                iterations[int(ids[j])] += 1
            # ---- the best point so far; a member no step helps, or whose best is stale, stops there
            improved = take & (res[active] < best["res"][active])
            imp = active[improved]
            for key, arr in (("x", x), ("g", g), ("rho", rho), ("L", L), ("res", res)):
                best[key][imp] = arr[imp]
            stale[imp] = 0
            stale[active[~improved]] += 1
            failed = ~take | (stale[active] >= patience)
            if failed.any():
                stop_at_best(active[failed], "no progress")
            active = active[~failed]
            if len(active) == 0:
                break
        theta[ids], res_out[ids], loss_out[ids] = x, rho, L
        for m in ids.tolist():
            seconds[m] = time.perf_counter() - t_start
    method = ["dense" if dense else "cg"] * M
    if eigenvalues:
        eig, eig_max, eig_method = extreme_eigenvalues(problem, theta, eig_dense_max_params, memory_bytes, lanczos_tol)
    else:
        eig = eig_max = torch.full((M,), math.nan, dtype=torch.float64, device=dev)
        eig_method = ["none"] * M
    return NewtonResult(theta, [str(s) for s in stops], iterations, res_out, loss_out, start_res, eig, method,
                        eig_method, backtracked, raised, negative, seconds, problem.lams, eig_max)


@dataclass
class StationaryResult:
    """:func:`polish`'s answer: the two stages' results and the final point, per member."""

    lbfgs: LBFGSResult
    newton: NewtonResult | None

    @property
    def theta(self) -> torch.Tensor:
        return self.newton.theta if self.newton is not None else self.lbfgs.theta

    @property
    def stops(self) -> list[str]:
        return self.newton.stops if self.newton is not None else self.lbfgs.stops

    @property
    def max_residuals(self) -> torch.Tensor:
        return (self.newton or self.lbfgs).max_residuals


def polish(problem: Problem, theta0: torch.Tensor, lbfgs_tol: float | Sequence[float] = 1e-6,
           tol: float | Sequence[float] = 1e-12, newton_stage: bool = True, lbfgs_kwargs: dict | None = None,
           newton_kwargs: dict | None = None) -> StationaryResult:
    """:func:`lbfgs` to ``lbfgs_tol``, then (``newton_stage``) :func:`newton` to ``tol`` with the smallest
    Hessian eigenvalue. Members whose L-BFGS stage did not stop at its target go to Newton too:
    Newton's own stop reason then says where each ended."""
    first = lbfgs(problem, theta0, tol=lbfgs_tol, **(lbfgs_kwargs or {}))
    second = newton(problem, first.theta, tol=tol, **(newton_kwargs or {})) if newton_stage else None
    return StationaryResult(first, second)


__all__ = ["EVAL_ELEMENTS", "LBFGSResult", "NewtonResult", "POLISH_STOPS", "Problem", "StationaryResult", "ZERO_RTOL",
           "LanczosResult", "extreme_eigenvalues", "lanczos", "lbfgs", "min_eigenvalues", "newton",
           "polish", "pseudo_inverse_step"]
