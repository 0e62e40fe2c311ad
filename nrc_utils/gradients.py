"""Back-propagated signals, gradient ranks, the cluster split and the certificate.

Notation (the book's, chapter 2 ``02_eigenvalue_equation``): ``z_l = W_l h_{l-1}`` (+ ``b_l``),
``delta_{l,i} = d loss_i / d z_l``.
The gradient of ``L_0 = (1/N) sum_i loss_i`` with respect to ``W_l`` is

    grad_{W_l} L_0 = (1/N) sum_i delta_{l,i} h_{l-1,i}^T = (1/N) D_l^T H_{l-1},

with ``D_l`` the ``N x d_l`` matrix of signals and ``H_{l-1}`` the ``N x d_{l-1}``
matrix of layer inputs. At a stationary point of ``L_lambda`` this is the
eigenvalue equation ``lambda W_l = -grad_{W_l} L_0`` (Zangrando et al. 2024,
arXiv:2402.03991, Sec. 3; the book's ``thm-eigenvalue-equation``). For any weights,
``R_l = grad_{W_l} L_0 + lambda W_l`` is the stationarity residual, and every identity below
holds with ``R_l`` added.

Chapter 2 labels used below: ``thm-eigenvalue-equation`` (the gradient formula),
``prop-gradient-rank`` (rank of a mini-batch gradient, the paper's Proposition 3.1),
``prop-sgd-unrolled`` (SGD with weight decay unrolled), ``prop-cluster-split`` (the split
``lambda W_l = A_l + B_l + R_l``); chapter 3: ``thm-neural-rank-collapse``, ``cor-numerical-rank``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .losses import sample_losses
from .models import weight_layers
from .spectral import numerical_rank, ratio, tail_distance


@dataclass
class LayerSignals:
    """Layer ``l`` (1-based): inputs ``H`` (``N x d_{l-1}``) and signals ``D`` (``N x d_l``), float64."""

    layer: int
    H: torch.Tensor
    D: torch.Tensor

    def gradient(self) -> torch.Tensor:
        """``grad_{W_l} L_0 = (1/N) D^T H``."""
        return self.D.T @ self.H / self.H.shape[0]


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The ``nn.Linear`` modules of ``model`` in forward order (signals are defined for these)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ValueError("per-sample signals and the certificate are implemented for fully connected networks "
                         "only; use an MLP (stationarity residuals and training work for CNNs too)")
    return layers


def layer_signals(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str) -> list[LayerSignals]:
    """``h_{l-1,i}`` and ``delta_{l,i} = d loss_i / d z_l`` for every layer and sample.

    Forward hooks on each ``nn.Linear`` record its input ``h_{l-1}`` and output
    ``z_l``; one backward pass of ``sum_i loss_i`` gives ``d loss_i / d z_{l,i}``
    because ``loss_i`` depends on sample ``i`` only.
    """
    layers = linear_layers(model)
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        inputs.append(args[0].detach())
        outputs.append(out)

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        with torch.enable_grad():
            out = model(X)
            deltas = torch.autograd.grad(sample_losses(out, y, loss).sum(), outputs)
    finally:
        for h in handles:
            h.remove()
    return [LayerSignals(l + 1, h.double(), d.detach().double()) for l, (h, d) in enumerate(zip(inputs, deltas))]


def weight_gradients(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str) -> list[torch.Tensor]:
    """``grad_{W_l} L_0`` (float64) by autograd, for every linear layer, biases left out."""
    layers = linear_layers(model)
    with torch.enable_grad():
        L0 = sample_losses(model(X), y, loss).mean()
        grads = torch.autograd.grad(L0, [m.weight for m in layers])
    return [g.double() for g in grads]


def stationarity_residuals(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
                           decay_bias: bool = True) -> list[float]:
    """Relative residual of the eigenvalue equation per layer.

    ``r_l = ||grad L_0 + lambda Theta_l||_F / ||lambda Theta_l||_F`` with
    ``Theta_l = [W_l, b_l]`` when the layer has a bias. An undecayed bias
    contributes ``grad_{b_l} L_0`` (which must vanish at a stationary point) to
    the numerator and nothing to the denominator. ``r_l = 0`` exactly at a
    stationary point of ``L_lambda``.
    """
    if lam <= 0:
        raise ValueError(f"the relative stationarity residual needs lambda > 0, got {lam}")
    layers = weight_layers(model)
    params: list[torch.Tensor] = []
    for m in layers:
        params.append(m.weight)
        if m.bias is not None:
            params.append(m.bias)
    with torch.enable_grad():
        L0 = sample_losses(model(X), y, loss).mean()
        grads = dict(zip(map(id, params), torch.autograd.grad(L0, params)))
    out = []
    for m in layers:
        num = (grads[id(m.weight)].double() + lam * m.weight.double()).pow(2).sum()
        den = (lam * m.weight.double()).pow(2).sum()
        if m.bias is not None:
            b_decay = lam if decay_bias else 0.0
            num = num + (grads[id(m.bias)].double() + b_decay * m.bias.double()).pow(2).sum()
            den = den + (b_decay * m.bias.double()).pow(2).sum()
        out.append(math.sqrt(_relative_residual(num.item(), den.item())))
    return out


def minibatch_gradient(sig: LayerSignals, batch: torch.Tensor) -> torch.Tensor:
    """``G_B = sum_{i in B} delta_{l,i} h_{l-1,i}^T = D_{l,B}^T H_{l-1,B}``, shape ``d_l x d_{l-1}``
    (``prop-gradient-rank``, the paper's Proposition 3.1: rank at most
    ``min(|B|, rank H_{l-1,B}, rank D_{l,B})``)."""
    return sig.D[batch].T @ sig.H[batch]


def class_means(H: torch.Tensor, labels: torch.Tensor, K: int) -> torch.Tensor:
    """``mu_c = mean of h_i over cluster c``, shape ``K x d`` (float64); empty clusters give zero rows."""
    labels = labels.to(H.device)
    sums = torch.zeros(K, H.shape[1], dtype=torch.float64, device=H.device).index_add_(0, labels, H.double())
    counts = torch.bincount(labels, minlength=K).clamp(min=1).to(sums)
    return sums / counts[:, None]


@dataclass
class ClusterSplit:
    """``lambda W_l = A_l + B_l + R_l`` (chapter 2, ``prop-cluster-split``).

    ``A = -(1/N) sum_c (sum_{i in c} delta_i) mu_c^T`` has rank at most ``K``
    (at most ``K-1`` when ``sum_i delta_i = 0``, e.g. at a stationary point with
    undecayed biases); ``B = -(1/N) sum_i delta_i e_i^T`` with residuals
    ``e_i = h_i - mu_{y_i}`` vanishes with the within-cluster variability;
    ``R = grad L_0 + lambda W`` is zero at a stationary point.
    """

    class_part: torch.Tensor
    variability_part: torch.Tensor
    delta_sums: torch.Tensor  # K x d_l: sum_{i in c} delta_i


def cluster_split(sig: LayerSignals, labels: torch.Tensor, K: int) -> ClusterSplit:
    """Split ``-grad_{W_l} L_0 = -(1/N) D^T H`` into its cluster part and its variability part."""
    N = sig.H.shape[0]
    labels = labels.to(sig.H.device)
    mu = class_means(sig.H, labels, K)
    E = sig.H - mu[labels]
    S = torch.zeros(K, sig.D.shape[1], dtype=torch.float64, device=sig.D.device).index_add_(0, labels, sig.D)
    return ClusterSplit(class_part=-(S.T @ mu) / N, variability_part=-(sig.D.T @ E) / N, delta_sums=S)


def _relative_residual(num: float, den: float) -> float:
    """``num / den`` for a residual ``||grad L_0 + lambda W|| / ||lambda W||`` (or its square): 0 when
    the gradient of ``L_lambda`` is exactly 0, a stationary point even where ``lambda W = 0`` (every
    ``W_l = 0`` with ``L >= 3``), else :func:`nrc_utils.spectral.ratio`."""
    return 0.0 if num == 0 else ratio(num, den)


def rank_bound(rhs: float, eps: float, K: int) -> int:
    """Numerical-rank corollary (chapter 3, ``cor-numerical-rank``):
    ``#{j : sigma_j > eps} <= K + floor(rhs^2 / eps^2)``."""
    return K + math.floor(rhs**2 / eps**2) if math.isfinite(rhs) else 10**18


def certificate(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lam: float, loss: str,
                labels: "torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray] | None" = None,
                K: int | None = None) -> list[dict[str, float]]:
    """The neural-rank-collapse certificate (our form of the paper's Theorem 3.1; chapter 3,
    ``thm-neural-rank-collapse``), for any weights.

    For every layer, with ``e_i = h_{l-1,i} - mu_{c(i)}`` for a partition into ``K``
    clusters (the class labels ``y`` by default), ``R_l = grad_{W_l} L_0 + lambda W_l``
    and Eckart-Young:

        dist_F(W_l, M_K) = (sum_{j>K} sigma_j(W_l)^2)^(1/2)
          <= ||sum_i delta_i e_i^T||_F / (lambda N) + ||R_l||_F / lambda        (bound_exact)
          <= max_i ||delta_i|| TCV_1 / (lambda N)   + ||R_l||_F / lambda        (bound_tcv1)
          and ||D_l||_F sqrt(TCV_2) / (lambda N)    + ||R_l||_F / lambda        (bound_tcv2)

    with ``TCV_1 = sum_i ||e_i||`` and ``TCV_2 = sum_i ||e_i||^2``. Proof: ``lambda W_l =
    A_l + B_l + R_l`` (:func:`cluster_split`) with ``rank A_l <= K``, so
    ``dist_F(W_l, M_K) <= ||W_l - A_l/lambda||_F = ||B_l + R_l||_F / lambda``; then the
    triangle and Cauchy-Schwarz inequalities. At a stationary point ``R_l = 0``.

    ``labels`` is one partition for every layer (a tensor or array of ``N``
    integers in ``0..K-1``) or a list with one partition per layer, the one of layer
    ``l`` partitioning its inputs ``h_{l-1}`` (e.g. k-means of each layer's
    features). ``K`` defaults to the largest label plus one.
    """
    if lam <= 0:
        raise ValueError(f"the certificate divides by lambda; it needs lambda > 0, got {lam}")
    sigs = layer_signals(model, X, y, loss)
    grads = weight_gradients(model, X, y, loss)
    if labels is None:
        partitions = [y] * len(sigs)
    elif isinstance(labels, (list, tuple)):
        if len(labels) != len(sigs):
            raise ValueError(f"labels has {len(labels)} partitions but the model has {len(sigs)} layers; "
                             "give one partition per layer, or a single one for all")
        partitions = [torch.as_tensor(p) for p in labels]
    else:
        partitions = [torch.as_tensor(labels)] * len(sigs)
    rows = []
    for sig, g, W, part in zip(sigs, grads, [m.weight.detach().double() for m in linear_layers(model)], partitions):
        lab = part.long()
        K_l = int(lab.max().item()) + 1 if K is None else int(K)
        N = sig.H.shape[0]
        split = cluster_split(sig, lab, K_l)
        e_norms = (sig.H - class_means(sig.H, lab, K_l)[lab.to(sig.H.device)]).norm(dim=1)
        d_norms = sig.D.norm(dim=1)
        res = (g + lam * W).norm().item() / lam
        tcv1, tcv2 = e_norms.sum().item(), e_norms.pow(2).sum().item()
        rows.append({
            "layer": sig.layer,
            "tail": tail_distance(W, K_l),
            "bound_exact": split.variability_part.norm().item() / lam + res,
            "bound_tcv1": d_norms.max().item() * tcv1 / (lam * N) + res,
            "bound_tcv2": d_norms.norm().item() * math.sqrt(tcv2) / (lam * N) + res,
            "residual_term": res,
            "relative_residual": _relative_residual((g + lam * W).norm().item(), lam * W.norm().item()),
            "tcv1": tcv1,
            "tcv2": tcv2,
            "K": K_l,
            "lambda": lam,
            "N": N,
        })
    return rows


def gradient_alignment(grads: list[torch.Tensor]) -> dict[str, np.ndarray | float]:
    """Alignment of a sequence of gradient matrices ``G_1 .. G_T`` (chapter 2, "Gradient alignment
    during SGD"; the paper observes that mini-batch gradients align).

    Returns the cosine similarity of successive gradients
    ``<G_t, G_{t+1}>_F / (||G_t|| ||G_{t+1}||)`` and the effective rank
    (Roy-Vetterli) of the stacked gradients ``[vec G_1, ..., vec G_T]`` and of
    their running sum; low values mean the gradients share a few directions.
    """
    from .spectral import effective_rank

    flat = torch.stack([g.double().reshape(-1) for g in grads])
    unit = flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-300)
    cos = (unit[:-1] * unit[1:]).sum(1).cpu().numpy()
    shape = grads[0].shape
    return {
        "cosine_successive": cos,
        "effective_rank_stacked": effective_rank(flat),
        "effective_rank_sum": effective_rank(flat.sum(0).reshape(shape)),
    }


def sgd_unrolled(W0: torch.Tensor, grads: Sequence[torch.Tensor], lr: float, lam: float) -> torch.Tensor:
    """``W_T`` of SGD with weight decay from its gradients, by the closed form of ``prop-sgd-unrolled``
    (chapter 2):

        W_T = (1 - lr lam)^T W_0 - lr sum_{t=0}^{T-1} (1 - lr lam)^{T-1-t} G_t,

    the unrolled recursion ``W_{t+1} = W_t - lr (G_t + lam W_t)`` (``torch.optim.SGD(lr, weight_decay=lam)``
    without momentum), where ``G_t`` is the mean mini-batch gradient of ``L_0`` at step ``t``.
    ``W0`` and every ``G_t``: ``d_l x d_{l-1}``; float64 result.
    """
    q = 1.0 - lr * lam
    T = len(grads)
    W = q**T * W0.double()
    for t, G in enumerate(grads):
        W = W - lr * q ** (T - 1 - t) * G.double()
    return W


def sum_rank_bound(grads: Sequence[torch.Tensor], rtol: float = 1e-10) -> dict[str, int]:
    """Bounds on the rank of any linear combination ``sum_t c_t G_t`` of gradient matrices
    (chapter 2, ``prop-sgd-unrolled``; ``G_t``: ``d_l x d_{l-1}``, at least one):

    - ``columns``: ``dim(col G_0 + ... + col G_{T-1}) = rank [G_0, ..., G_{T-1}]`` (side by side,
      ``d_l x T d_{l-1}``): every column of the sum lies in the sum of the column spaces;
    - ``rows``: ``dim(row G_0 + ... + row G_{T-1}) = rank [G_0; ...; G_{T-1}]`` (stacked,
      ``T d_l x d_{l-1}``), by the same argument for rows;
    - ``bound = min(columns, rows)``, the bound of the proposition (at most ``sum_t rank G_t``);
    - ``span``: ``dim span{G_0, ..., G_{T-1}}``, the dimension of their span as vectors
      (``rank`` of the ``T x d_l d_{l-1}`` matrix of ``vec G_t``). It is *not* a bound on the rank of
      the sum: ``G, G/2, 2G`` span a line, and their sum has the rank of ``G``.

    Ranks are numerical ranks (:func:`nrc_utils.spectral.numerical_rank`, relative tolerance ``rtol``).
    """
    if len(grads) == 0:
        raise ValueError("sum_rank_bound needs at least one gradient matrix")
    mats = [g.double() for g in grads]
    columns = numerical_rank(torch.cat(mats, dim=1), rtol)
    rows = numerical_rank(torch.cat(mats, dim=0), rtol)
    span = numerical_rank(torch.stack([m.reshape(-1) for m in mats]), rtol)
    return {"columns": columns, "rows": rows, "bound": min(columns, rows), "span": span}


def cluster_split_norms(sig: LayerSignals, weight: torch.Tensor, lam: float, labels: torch.Tensor, K: int,
                        rtol: float = 1e-10) -> dict[str, float]:
    """Frobenius norms of the four terms of ``lambda W_l = A_l + B_l + R_l`` (chapter 2,
    ``prop-cluster-split``) for layer ``sig.layer`` with weight ``W_l`` (``d_l x d_{l-1}``), any weights:

    ``lamW = ||lambda W_l||``, ``A = ||A_l||`` (class part, rank at most ``K``), ``B = ||B_l||``
    (variability part), ``R = ||R_l||`` with ``R_l = grad_{W_l} L_0 + lambda W_l``, ``identity``
    ``= ||lambda W_l - A_l - B_l - R_l||`` (zero up to round-off) and ``rank_A``, the numerical rank
    of ``A_l`` (relative tolerance ``rtol``).
    """
    lamW = lam * weight.detach().double().to(sig.H.device)
    parts = cluster_split(sig, labels, K)
    R = sig.gradient() + lamW
    return {"lamW": lamW.norm().item(), "A": parts.class_part.norm().item(),
            "B": parts.variability_part.norm().item(), "R": R.norm().item(),
            "identity": (lamW - parts.class_part - parts.variability_part - R).norm().item(),
            "rank_A": numerical_rank(parts.class_part, rtol)}


def bias_class_part_bound(sig: LayerSignals, labels: torch.Tensor, K: int) -> float:
    """``||grad_{b_l} L_0|| ||(1/K) sum_c mu_c||`` with ``grad_{b_l} L_0 = (1/N) sum_i delta_{l,i}``: the
    bound on ``sigma_K(A_l)`` of item 3 of ``prop-cluster-split`` (chapter 2) for a layer with a bias
    (which needs no bias to compute; it is zero at a stationary point with an undecayed bias)."""
    g = sig.D.sum(0) / sig.H.shape[0]
    mu_bar = class_means(sig.H, labels, K).mean(0)
    return (g.norm() * mu_bar.norm()).item()
