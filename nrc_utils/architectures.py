"""Beyond the MLP (chapter 7, ``07_beyond_the_mlp``): a small CNN, a residual MLP and a one-layer
attention classifier, and the measurements that carry the eigenvalue equation over to them.

Notation as in the rest of the book (``SPEC``): ``L_0 = (1/N) sum_i loss_i``,
``L_lambda = L_0 + (lambda/2) sum_p ||p||_F^2`` over the weight-decayed parameters ``p``. What every
architecture here shares is that each weight matrix ``W`` (``out x in``) acts *linearly on rows*:
on the input patches of a convolution, on the tokens of a sequence, on the samples of a dense layer.
With the rows ``u_r`` (one per sample and position) that ``W`` reads, ``z_r = W u_r``, and the
signals ``delta_r = d loss_{i(r)} / d z_r`` (``i(r)`` the sample row ``r`` belongs to), the chain
rule gives, as in the book's ``thm-eigenvalue-equation`` (chapter 2),

    grad_W L_0 = (1/N) sum_r delta_r u_r^T = (1/N) D^T U,                                (G)

``D`` (``M x out``) and ``U`` (``M x in``) the stacked rows, ``M = N * positions``. Hence:

- ``rank grad_W L_0 <= min(rank U, rank D)``: for a convolution the bound is the rank of the
  *patch matrix*, not the number of samples (a conv kernel sees ``N * positions`` rows);
- at a stationary point ``lambda W = -(1/N) D^T U`` (the eigenvalue equation holds for every
  weight-decayed matrix, whatever the architecture);
- for any partition of the rows into ``K`` clusters with means ``m_k`` and residuals
  ``e_r = u_r - m_{k(r)}`` (chapter 2's ``prop-cluster-split`` on rows),
  ``lambda W = -(1/N) sum_k (sum_{r in k} delta_r) m_k^T - (1/N) sum_r delta_r e_r^T + R`` and
  chapter 3's ``thm-neural-rank-collapse`` goes through on rows:
  ``dist_F(W, M_K) <= (1/(lambda N)) ||sum_r delta_r e_r^T||_F + ||R||_F / lambda``      (a)
  ``               <= (||D||_F / (lambda N)) sqrt(TCV_2(U)) + ||R||_F / lambda``          (c)
  with ``TCV_2(U) = sum_r ||e_r||^2`` the total cluster variation of the *rows* (patches, tokens).

The clusters may be the classes of the samples the rows come from, or a k-means partition of the
rows themselves (:func:`row_partitions`). These forms are the book's own extension of the paper's
Theorem 3.1 (Zangrando et al., arXiv:2402.03991) to weight sharing.

Shapes in comments: ``N`` samples, ``C`` channels, ``S`` image side, ``T`` tokens, ``d`` token
dimension. Every model keeps its constructor arguments in ``model.config`` (for the cache) and
names its weight-decayed parameters in ``model.decayed`` (all of its parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import collapse, spectral
from .losses import sample_losses
from .models import make_activation

__all__ = ["AttentionClassifier", "ConvNet", "LayerRows", "ResidualMLP", "attention_balance", "attention_factors",
           "conv_patches", "cluster_bound", "kernel_matrix", "layer_rows", "patch_gradient", "row_partitions",
           "sequence_task"]


# ============================================================================ convolutions
def kernel_matrix(weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A conv kernel ``(out, in, k, k)`` reshaped to the matrix ``out x (in*k*k)`` that acts on
    flattened patches (the order of :func:`torch.nn.functional.unfold`: channel, then row, then
    column); with a bias, ``[W, b]`` (``out x (in*k*k + 1)``) acting on ``[patch; 1]``."""
    W = weight.reshape(weight.shape[0], -1)
    return W if bias is None else torch.cat([W, bias[:, None]], 1)


def conv_patches(h: torch.Tensor, k: int, stride: int = 1, padding: int = 0, bias: bool = False) -> torch.Tensor:
    """The input patches of a ``k x k`` convolution of ``h`` ``(N, C, S, S)``: ``(N, P, C*k*k)``,
    one row per sample and output position (``P = S_out^2``), in the order of :func:`kernel_matrix`;
    with ``bias`` a constant ``1`` appended to every patch (``(N, P, C*k*k + 1)``).

    ``conv2d(h, W)[i, :, p] = kernel_matrix(W) @ conv_patches(h)[i, p]``."""
    cols = F.unfold(h, k, padding=padding, stride=stride)  # (N, C*k*k, P)
    rows = cols.transpose(1, 2)  # (N, P, C*k*k)
    if bias:
        rows = torch.cat([rows, torch.ones_like(rows[..., :1])], -1)
    return rows


def patch_gradient(delta: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """``grad L_0`` of the reshaped kernel from the signals ``delta`` ``(N, out, S_out, S_out)``
    (``d loss_i / d z_i`` at the conv output) and the patches ``(N, P, q)`` of :func:`conv_patches`:

        grad_W L_0 = (1/N) sum_i sum_p delta_{i,p} patch_{i,p}^T        (out x q)

    so its rank is at most the rank of the ``(N P) x q`` patch matrix and of the ``(N P) x out``
    signal matrix."""
    N = delta.shape[0]
    d = delta.flatten(2)  # (N, out, P)
    return torch.einsum("iop,ipq->oq", d, patches) / N


class ConvNet(nn.Module):
    """``x (N, C, S, S) -> conv k x k (c_1) -> s -> avgpool(pool) -> conv k x k (c_2) -> s ->
    adaptive avgpool (side x side) -> flatten -> dense (hidden) -> s -> dense (K)``.

    Convolutions without padding ("valid"), stride 1, with or without biases (``bias``; a bias is
    weight-decayed with its kernel, ``[W, b]`` acting on ``[patch; 1]``); the dense layers have no
    biases. ``pool`` is the first pooling window (``1``: none); the average poolings are linear, so
    the loss stays smooth for a smooth activation ``s``. Weights: PyTorch's default initialisation
    drawn from a generator seeded with ``seed``."""

    def __init__(self, in_channels: int, image_size: int, n_classes: int, channels: Sequence[int] = (6, 12),
                 kernel: int = 3, pool: int = 1, side: int = 2, hidden: int = 16, activation: str = "tanh",
                 bias: bool = False, seed: int = 0) -> None:
        super().__init__()
        c1, c2 = (int(c) for c in channels)
        self.config = {"kind": "convnet", "in_channels": int(in_channels), "image_size": int(image_size),
                       "n_classes": int(n_classes), "channels": [c1, c2], "kernel": int(kernel), "pool": int(pool),
                       "side": int(side), "hidden": int(hidden), "activation": activation, "bias": bool(bias),
                       "seed": int(seed)}
        s1 = (image_size - kernel + 1) // pool
        if s1 - kernel + 1 < side:
            raise ValueError(f"image side {image_size} too small for two {kernel}x{kernel} convolutions, pooling "
                             f"{pool} and a {side}x{side} output")
        self.act = make_activation(activation)
        self.kernel, self.pool, self.side = int(kernel), int(pool), int(side)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.conv1 = nn.Conv2d(in_channels, c1, kernel, bias=bias)
            self.conv2 = nn.Conv2d(c1, c2, kernel, bias=bias)
            self.fc1 = nn.Linear(c2 * side * side, hidden, bias=False)
            self.fc2 = nn.Linear(hidden, n_classes, bias=False)
        self.decayed = [n for n, _ in self.named_parameters()]

    def forward_record(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple]]:
        """``(logits (N, K), records)``; a record per weight matrix: ``(name, kind, input, z, module)``,
        ``kind`` ``"conv"`` (input ``(N, C, S, S)``, z ``(N, out, S', S')``) or ``"dense"``
        (input ``(N, in)``, z ``(N, out)``)."""
        rec = []
        z1 = self.conv1(x)                                   # (N, c1, S-k+1, S-k+1)
        rec.append(("conv1", "conv", x, z1, self.conv1))
        h1 = F.avg_pool2d(self.act(z1), self.pool) if self.pool > 1 else self.act(z1)
        z2 = self.conv2(h1)                                  # (N, c2, S1-k+1, S1-k+1)
        rec.append(("conv2", "conv", h1, z2, self.conv2))
        h2 = F.adaptive_avg_pool2d(self.act(z2), self.side).flatten(1)  # (N, c2*side*side)
        z3 = self.fc1(h2)                                    # (N, hidden)
        rec.append(("fc1", "dense", h2, z3, self.fc1))
        h3 = self.act(z3)
        z4 = self.fc2(h3)                                    # (N, K)
        rec.append(("fc2", "dense", h3, z4, self.fc2))
        return z4, rec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_record(x)[0]


# ============================================================================ residual MLP
class ResidualMLP(nn.Module):
    """``h_0 = W_in x``; ``h_l = h_{l-1} + W_{l,2} s(W_{l,1} h_{l-1})`` for ``l = 1..B``;
    ``f(x) = W_out h_B``. No biases; ``W_in`` ``(m x d)``, ``W_{l,1}`` ``(m_b x m)``, ``W_{l,2}``
    ``(m x m_b)``, ``W_out`` ``(K x m)``; weights ``N(0, init_scale^2 / fan_in)`` from ``seed``
    (``W_{l,2}`` scaled by ``branch_scale`` more, so that the blocks start near the identity)."""

    def __init__(self, d_in: int, width: int, branch_width: int, blocks: int, n_classes: int,
                 activation: str = "tanh", seed: int = 0, init_scale: float = 1.0, branch_scale: float = 0.5) -> None:
        super().__init__()
        self.config = {"kind": "resmlp", "d_in": int(d_in), "width": int(width), "branch_width": int(branch_width),
                       "blocks": int(blocks), "n_classes": int(n_classes), "activation": activation,
                       "seed": int(seed), "init_scale": float(init_scale), "branch_scale": float(branch_scale)}
        self.act = make_activation(activation)
        g = torch.Generator().manual_seed(int(seed))

        def lin(i, o, scale=1.0):
            m = nn.Linear(i, o, bias=False)
            with torch.no_grad():
                m.weight.copy_(torch.randn(o, i, generator=g) * (init_scale * scale / math.sqrt(i)))
            return m

        with torch.random.fork_rng(devices=[]):
            self.w_in = lin(d_in, width)
            self.w1 = nn.ModuleList(lin(width, branch_width) for _ in range(blocks))
            self.w2 = nn.ModuleList(lin(branch_width, width, branch_scale) for _ in range(blocks))
            self.w_out = lin(width, n_classes)
        self.decayed = [n for n, _ in self.named_parameters()]

    def forward_record(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple]]:
        """``(logits, records)`` as :meth:`ConvNet.forward_record`, all ``"dense"``; the record of
        ``W_{l,2}`` has ``z`` = the branch output, whose signal is ``d loss / d h_l``."""
        x = x.flatten(1)
        rec = []
        h = self.w_in(x)                                     # (N, m)
        rec.append(("W_in", "dense", x, h, self.w_in))
        for l, (a, b) in enumerate(zip(self.w1, self.w2), start=1):
            z = a(h)                                         # (N, m_b)
            rec.append((f"W_{l},1", "dense", h, z, a))
            u = self.act(z)
            v = b(u)                                         # (N, m)
            rec.append((f"W_{l},2", "dense", u, v, b))
            h = h + v
        out = self.w_out(h)                                  # (N, K)
        rec.append(("W_out", "dense", h, out, self.w_out))
        return out, rec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_record(x)[0]

    def stream(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream ``[h_0, ..., h_B]`` and nothing else (each ``(N, m)``)."""
        x = x.flatten(1)
        h = self.w_in(x)
        hs = [h]
        for a, b in zip(self.w1, self.w2):
            h = h + b(self.act(a(h)))
            hs.append(h)
        return hs


# ============================================================================ attention
class AttentionClassifier(nn.Module):
    """One attention layer and a linear readout on sequences ``x`` ``(N, T, d)``:

        q_t = W_Q x_t,  k_t = W_K x_t,  v_t = W_V x_t,   a_{ts} = q_t^T k_s = x_t^T (W_Q^T W_K) x_s,
        o_t = sum_s softmax_s(a_{ts}) v_s,   f(x) = W_O (1/T) sum_t o_t.

    ``W_Q, W_K`` ``(d_k x d)``, ``W_V`` ``(d_v x d)``, ``W_O`` ``(K x d_v)``, no biases, no
    ``1/sqrt(d_k)`` (it would only rescale ``W_Q^T W_K``). ``L_0`` depends on ``W_Q, W_K`` through
    the ``d x d`` product ``M = W_Q^T W_K`` only. Weights ``N(0, init_scale^2 / d)`` from ``seed``."""

    def __init__(self, d: int, d_k: int, d_v: int, n_classes: int, seed: int = 0, init_scale: float = 1.0) -> None:
        super().__init__()
        self.config = {"kind": "attention", "d": int(d), "d_k": int(d_k), "d_v": int(d_v),
                       "n_classes": int(n_classes), "seed": int(seed), "init_scale": float(init_scale)}
        g = torch.Generator().manual_seed(int(seed))

        def lin(i, o):
            m = nn.Linear(i, o, bias=False)
            with torch.no_grad():
                m.weight.copy_(torch.randn(o, i, generator=g) * (init_scale / math.sqrt(i)))
            return m

        with torch.random.fork_rng(devices=[]):
            self.w_q, self.w_k, self.w_v = lin(d, d_k), lin(d, d_k), lin(d, d_v)
            self.w_o = lin(d_v, n_classes)
        self.decayed = [n for n, _ in self.named_parameters()]

    def forward_record(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple]]:
        """``(logits, records)``; the records of ``W_Q, W_K, W_V`` are ``"token"`` (input
        ``(N, T, d)``, z ``(N, T, d_k)``), that of ``W_O`` ``"dense"``."""
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)      # (N, T, d_k), (N, T, d_k), (N, T, d_v)
        att = torch.softmax(q @ k.transpose(1, 2), -1)       # (N, T, T)
        pooled = (att @ v).mean(1)                           # (N, d_v)
        out = self.w_o(pooled)                               # (N, K)
        rec = [("W_Q", "token", x, q, self.w_q), ("W_K", "token", x, k, self.w_k),
               ("W_V", "token", x, v, self.w_v), ("W_O", "dense", pooled, out, self.w_o)]
        return out, rec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_record(x)[0]


def attention_factors(model: AttentionClassifier) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W_Q, W_K, M = W_Q^T W_K)`` in float64 (``M`` is ``d x d``, the bilinear form of the scores)."""
    Wq, Wk = model.w_q.weight.detach().double(), model.w_k.weight.detach().double()
    return Wq, Wk, Wq.T @ Wk


def attention_balance(model: AttentionClassifier, X: torch.Tensor, y: torch.Tensor, lam: float,
                      loss: str = "ce") -> dict[str, float | np.ndarray]:
    """The balancedness identity of the two-factor product ``M = W_Q^T W_K`` and what it implies.

    With ``G = grad_M L_0`` (``d x d``), ``grad_{W_Q} L_0 = W_K G^T`` and ``grad_{W_K} L_0 = W_Q G``
    (``L_0`` sees ``W_Q, W_K`` only through ``M``), so with the residuals
    ``R_Q = grad_{W_Q} L_0 + lambda W_Q``, ``R_K = grad_{W_K} L_0 + lambda W_K``:

        lambda (W_Q W_Q^T - W_K W_K^T) = R_Q W_Q^T - W_K R_K^T          (d_k x d_k)

    (the book's ``thm-ch7-attention``; chapter 5's ``prop-ch5-balanced`` with ``W_1 = W_K``,
    ``W_2 = W_Q^T``). Returned (float64): ``imbalance`` ``||W_Q W_Q^T - W_K W_K^T||_F`` relative to
    ``max(||W_Q W_Q^T||_F, ||W_K W_K^T||_F)``, ``identity_error`` (the two sides of the identity
    differ by this, relative to the left side's scale ``lambda max(...)``: round-off), ``certificate``
    (``(||R_Q||_F ||W_Q||_2 + ||W_K||_2 ||R_K||_F) / lambda`` on the same relative scale),
    ``grad_check`` (``||grad_{W_Q} L_0 - W_K G^T||_F / ||grad_{W_Q} L_0||_F``), ``sv_M`` and
    ``sv_G_over_lam`` (singular values of ``M`` and of ``G / lambda``), ``nuclear_gap``
    (``(1/2)(||W_Q||_F^2 + ||W_K||_F^2) - ||M||_*``, zero exactly for a balanced factorisation)."""
    model = model.double()
    Wq, Wk, M = attention_factors(model)
    Mv = M.clone().requires_grad_(True)
    Xd = X.double()
    q_w, k_w = model.w_q.weight, model.w_k.weight
    # L_0 as a function of M (scores x_t^T M x_s), every other weight held fixed
    v = model.w_v(Xd)
    att = torch.softmax(Xd @ Mv @ Xd.transpose(1, 2), -1)
    G = torch.autograd.grad(sample_losses(model.w_o((att @ v).mean(1)), y, loss).mean(), Mv)[0].detach()
    out, _ = model.forward_record(Xd)
    gq, gk = torch.autograd.grad(sample_losses(out, y, loss).mean(), [q_w, k_w])
    gq, gk = gq.detach().double(), gk.detach().double()
    Rq, Rk = gq + lam * Wq, gk + lam * Wk
    lhs = lam * (Wq @ Wq.T - Wk @ Wk.T)
    rhs = Rq @ Wq.T - Wk @ Rk.T
    scale = max(torch.linalg.norm(Wq @ Wq.T).item(), torch.linalg.norm(Wk @ Wk.T).item(), 1e-300)
    cert = (torch.linalg.norm(Rq) * torch.linalg.matrix_norm(Wq, 2)
            + torch.linalg.matrix_norm(Wk, 2) * torch.linalg.norm(Rk)).item() / lam
    sv_M = torch.linalg.svdvals(M).numpy()
    return {"imbalance": torch.linalg.norm(Wq @ Wq.T - Wk @ Wk.T).item() / scale,
            "identity_error": torch.linalg.norm(lhs - rhs).item() / (lam * scale),
            "certificate": cert / scale,
            "grad_check": (torch.linalg.norm(gq - Wk @ G.T) / torch.linalg.norm(gq).clamp_min(1e-300)).item(),
            "sv_M": sv_M, "sv_G_over_lam": torch.linalg.svdvals(G).numpy() / lam,
            "nuclear_gap": 0.5 * (Wq.pow(2).sum() + Wk.pow(2).sum()).item() - float(sv_M.sum())}


def sequence_task(n_per_class: int, K: int, T: int, d: int, signal: float = 2.0, noise: float = 0.5,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The synthetic sequence task of chapter 7 (the book's own): ``(X (N, T, d), y (N,), P (K, d))``.

    Every token has a constant last coordinate ``1``; its other ``d - 1`` coordinates are standard
    Gaussian ("distractors"), except one token per sequence, at a random position: the *signal* token
    ``signal * (m + p_c) + noise * xi`` of the sequence's class ``c``, with ``m`` and ``p_1..p_K``
    orthonormal directions of ``R^{d-1}`` (``P`` holds ``m + p_c`` padded with the constant 0).
    Classifying needs attention to the signal token: a score ``x_t^T M x_s`` that is large when
    ``x_s`` points along ``m``, e.g. the rank-one ``M = beta e_d m^T`` (the constant coordinate of
    the query against the marker direction of the key). Float64, ``N = K n_per_class``."""
    if d - 1 < K + 1:
        raise ValueError(f"the sequence task needs d - 1 >= K + 1 orthonormal directions, got d={d}, K={K}")
    if T < 2:
        raise ValueError(f"the sequence task needs at least two tokens, got T={T}")
    g = torch.Generator().manual_seed(int(seed))
    Q, _ = torch.linalg.qr(torch.randn(d - 1, K + 1, generator=g, dtype=torch.float64))
    m, p = Q[:, 0], Q[:, 1:].T                               # (d-1,), (K, d-1)
    N = K * n_per_class
    y = torch.arange(K).repeat_interleave(n_per_class)
    X = torch.randn(N, T, d - 1, generator=g, dtype=torch.float64)
    pos = torch.randint(0, T, (N,), generator=g)
    sig = signal * (m[None] + p[y]) + noise * torch.randn(N, d - 1, generator=g, dtype=torch.float64)
    X[torch.arange(N), pos] = sig
    X = torch.cat([X, torch.ones(N, T, 1, dtype=torch.float64)], -1)
    P = torch.cat([m[None] + p, torch.zeros(K, 1, dtype=torch.float64)], 1).numpy()
    return X, y, P


# ============================================================================ rows, signals, bounds
@dataclass
class LayerRows:
    """One weight matrix and the rows it reads: ``name``, ``kind`` (``"conv"``, ``"dense"``,
    ``"token"``), ``W`` (``out x q``, float64; a conv kernel by :func:`kernel_matrix`, with its bias
    column when it has one), ``U`` (``M x q`` input rows: patches, tokens or samples), ``D``
    (``M x out`` signals ``d loss_i / d z``), ``sample`` (``(M,)`` the sample each row belongs to),
    ``grad`` (``grad_W L_0`` from autograd, ``out x q``) and ``N`` (samples)."""

    name: str
    kind: str
    W: torch.Tensor
    U: torch.Tensor
    D: torch.Tensor
    sample: torch.Tensor
    grad: torch.Tensor
    N: int

    def gradient(self) -> torch.Tensor:
        """``(1/N) D^T U`` (formula (G) of the module docstring)."""
        return self.D.T @ self.U / self.N

    @property
    def positions(self) -> int:
        return self.U.shape[0] // self.N


def layer_rows(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str) -> list[LayerRows]:
    """:class:`LayerRows` of every weight matrix of a model with ``forward_record`` (float64).

    The signals come from autograd on ``sum_i loss_i`` (so the signal of row ``r`` is
    ``d loss_{i(r)} / d z_r``), the gradient ``grad`` from autograd on ``L_0 = mean_i loss_i``
    with respect to the module's own weight (and bias): two independent computations of (G)."""
    model = model.double()
    X = X.double()
    N = X.shape[0]
    # the gradient of L_0 = mean_i loss_i by autograd, from a forward pass of its own
    out, rec = model.forward_record(X)
    params = []
    for r in rec:
        params.append(r[4].weight)
        if getattr(r[4], "bias", None) is not None:
            params.append(r[4].bias)
    grads = torch.autograd.grad(sample_losses(out, y, loss).mean(), params)
    gmap = dict(zip(map(id, params), grads))
    # the signals d loss_i / d z from sum_i loss_i, on a second pass (retain_grad keeps them)
    out, rec = model.forward_record(X)
    for r in rec:
        r[3].retain_grad()
    sample_losses(out, y, loss).sum().backward()
    rows = []
    for name, kind, h, z, mod in rec:
        bias = getattr(mod, "bias", None)
        if kind == "conv":
            U = conv_patches(h.detach(), mod.kernel_size[0], mod.stride[0], mod.padding[0], bias is not None)
            P = U.shape[1]
            U = U.reshape(N * P, -1)
            D = z.grad.flatten(2).transpose(1, 2).reshape(N * P, -1)
            W = kernel_matrix(mod.weight.detach(), None if bias is None else bias.detach())
            g = kernel_matrix(gmap[id(mod.weight)], None if bias is None else gmap[id(bias)])
        else:
            P = h.shape[1] if kind == "token" else 1
            U = h.detach().reshape(N * P, -1)
            D = z.grad.reshape(N * P, -1)
            W, g = mod.weight.detach(), gmap[id(mod.weight)]
        sample = torch.arange(N).repeat_interleave(P)
        rows.append(LayerRows(name, kind, W.double(), U.double(), D.double(), sample, g.detach().double(), N))
    model.zero_grad(set_to_none=True)
    return rows


def row_partitions(rows: LayerRows, y: torch.Tensor, K: int, kmeans_sizes: Sequence[int] = (),
                   max_rows: int = 20000, seed: int = 0) -> dict[str, np.ndarray]:
    """Partitions of the rows of ``rows.U``: ``"class"`` (the class of the sample a row comes
    from, ``K`` groups) and ``"kmeans r"`` for each ``r`` of ``kmeans_sizes``
    (:func:`nrc_utils.collapse.kmeans_partition` of the rows; fitted on at most ``max_rows`` rows
    drawn at random, every row then given its nearest centre)."""
    out = {"class": y[rows.sample].numpy().astype(np.int64)}
    U = rows.U.numpy()
    rng = np.random.default_rng(seed)
    fit = U if len(U) <= max_rows else U[rng.choice(len(U), max_rows, replace=False)]
    for r in kmeans_sizes:
        if r >= len(fit):
            continue
        lab = collapse.kmeans_partition(fit, int(r), seed=seed)
        centres = np.stack([fit[lab == c].mean(0) for c in range(int(r))])
        d2 = (U**2).sum(1)[:, None] - 2 * U @ centres.T + (centres**2).sum(1)[None]
        out[f"kmeans {int(r)}"] = d2.argmin(1).astype(np.int64)
    return out


def cluster_bound(rows: LayerRows, labels: np.ndarray, lam: float) -> dict[str, float]:
    """The rank-``K`` bounds of the module docstring for one partition ``labels`` (``(M,)``,
    ``K = `` number of non-empty groups) of the rows: ``K``, ``tail`` (``dist_F(W, M_K)``,
    Eckart-Young), ``bound_a`` and ``bound_c`` (forms (a) and (c), residual term included),
    ``residual_term`` (``||R||_F / lambda``), ``tcv2`` (raw ``TCV_2`` of the rows), ``tcv2n``
    (normalised by the total variation), ``norm_W``, ``tcv2_needed`` (the raw ``TCV_2`` at which
    form (c) without its residual term would equal ``tail``: what the bound needs to certify the
    measured distance) and ``grad_error`` (``||(1/N) D^T U - grad||_F / ||grad||_F``)."""
    U, D, N = rows.U, rows.D, rows.N
    lab = torch.as_tensor(labels)
    groups = torch.unique(lab)
    E = U.clone()
    for c in groups:
        mask = lab == c
        E[mask] = U[mask] - U[mask].mean(0)
    B = D.T @ E / N
    R = rows.grad + lam * rows.W
    sv = spectral.singular_values(rows.W)
    K = int(len(groups))
    tcv2 = float(E.pow(2).sum())
    total = float((U - U.mean(0)).pow(2).sum())
    tail = spectral.tail_distance(sv, K)
    Dn = float(torch.linalg.norm(D))
    res = float(torch.linalg.norm(R)) / lam
    g = rows.gradient()
    return {"K": K, "tail": tail, "bound_a": float(torch.linalg.norm(B)) / lam + res,
            "bound_c": Dn * math.sqrt(tcv2) / (lam * N) + res, "residual_term": res, "tcv2": tcv2,
            "tcv2n": tcv2 / total if total > 0 else math.nan, "norm_W": float(np.sqrt(np.sum(sv**2))),
            "tcv2_needed": (lam * N * tail / Dn) ** 2 if Dn > 0 else math.inf,
            "grad_error": float(torch.linalg.norm(g - rows.grad) / torch.linalg.norm(rows.grad).clamp_min(1e-300))}
