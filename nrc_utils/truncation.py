"""Removing the small singular values of every layer, and the inputs this is measured on
(chapter 6 of the book, "Experiments on real data").

The paper (Zangrando et al., arXiv:2402.03991) opens from the observation that the small
singular values of trained weight matrices can be removed with little loss of accuracy.
Here every weight matrix ``W_l`` (the book's notation, ``f(x) = W_L s(... s(W_1 x))``) of a
copy of the network is replaced by its truncated SVD

    W_l^{(r)} = sum_{j <= r} sigma_j u_j v_j^T,

the best approximation of rank at most ``r`` in Frobenius norm (Eckart-Young), at distance
``||W_l - W_l^{(r)}||_F = (sum_{j > r} sigma_j^2)^{1/2}`` (``spectral.tail_distance``).
A layer of rank at most ``r`` is left unchanged; biases are never touched. With a relative
threshold ``tau`` instead, layer ``l`` keeps the ``sigma_j > tau * sigma_1(W_l)``, i.e.
``spectral.numerical_rank(W_l, tau)`` singular values.

The rank a network needs (:func:`smallest_sufficient_rank`): over an increasing grid
``r_1 < r_2 < ...`` with accuracies ``a(r_i)`` of the truncated networks and ``a_full`` of the
network itself, the smallest ``r_i`` from which on every ``a(r_j) >= a_full - tolerance``
(``j >= i``), so that no larger rank of the grid falls out of the tolerance again.

The inputs are prepared by :func:`nrc_utils.data.standardize` (training statistics only).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from . import losses
from .models import weight_layers

__all__ = ["accuracy", "smallest_sufficient_rank", "truncate", "truncate_relative", "truncation_curve"]


def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``X`` whose largest output is the label, ``(1/N) #{i : argmax f(x_i) = y_i}``,
    computed in the model's dtype and on its device."""
    p = next(model.parameters())
    with torch.no_grad():
        out = model(X.to(device=p.device, dtype=p.dtype))
    return losses.accuracy(out.cpu(), y.cpu())


def _check_rank(r: int) -> int:
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
        raise ValueError(f"the rank r must be a non-negative integer, got {r!r}")
    return int(r)


def truncate(model: nn.Module, r: int | Sequence[int]) -> nn.Module:
    """A copy of ``model`` whose weight matrix ``W_l`` is replaced by its truncated SVD of rank
    ``r`` (or ``r[l-1]`` when a sequence, one rank per layer). The original is unchanged."""
    layers = weight_layers(model)
    ranks = [r] * len(layers) if isinstance(r, (int, np.integer)) and not isinstance(r, bool) else list(r)
    if len(ranks) != len(layers):
        raise ValueError(f"got {len(ranks)} ranks for {len(layers)} layers; pass one rank, or one per layer")
    ranks = [_check_rank(k) for k in ranks]
    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer, k in zip(weight_layers(out), ranks):
            W = layer.weight.reshape(layer.weight.shape[0], -1)
            if k >= min(W.shape):
                continue
            U, S, Vh = torch.linalg.svd(W.double(), full_matrices=False)
            layer.weight.copy_(((U[:, :k] * S[:k]) @ Vh[:k]).reshape(layer.weight.shape).to(layer.weight.dtype))
    return out


def truncate_relative(model: nn.Module, rtol: float) -> nn.Module:
    """A copy of ``model`` in which layer ``l`` keeps only its singular values
    ``sigma_j > rtol * sigma_1(W_l)`` (its numerical rank at ``rtol``)."""
    if not rtol >= 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    ranks = []
    for layer in weight_layers(model):
        s = torch.linalg.svdvals(layer.weight.detach().reshape(layer.weight.shape[0], -1).double())
        ranks.append(int((s > rtol * s[0]).sum()) if s.numel() and s[0] > 0 else 0)
    return truncate(model, ranks)


def truncation_curve(model: nn.Module, X: torch.Tensor, y: torch.Tensor, ranks: Sequence[int]) -> np.ndarray:
    """Accuracy on ``(X, y)`` of ``truncate(model, r)`` for every ``r`` in ``ranks`` (one SVD per layer,
    reused for every ``r``)."""
    ranks = [_check_rank(k) for k in ranks]
    net = copy.deepcopy(model)
    layers = weight_layers(net)
    originals = [layer.weight.detach().clone() for layer in layers]
    svds = [torch.linalg.svd(W.reshape(W.shape[0], -1).double(), full_matrices=False) for W in originals]
    out = np.empty(len(ranks))
    with torch.no_grad():
        for i, k in enumerate(ranks):
            for layer, W, (U, S, Vh) in zip(layers, originals, svds):
                if k >= S.numel():
                    layer.weight.copy_(W)
                else:
                    layer.weight.copy_(((U[:, :k] * S[:k]) @ Vh[:k]).reshape(W.shape).to(W.dtype))
            out[i] = accuracy(net, X, y)
    return out


def smallest_sufficient_rank(ranks: Sequence[int], curve: Sequence[float], full: float, tolerance: float) -> int:
    """``min{r_i : curve_j >= full - tolerance for every j >= i}`` over the increasing grid ``ranks``
    (``curve[i]`` the accuracy of ``truncate(model, ranks[i])``, e.g. from :func:`truncation_curve`,
    ``full`` the network's own accuracy; module docstring). When even the last rank of the grid
    misses the tolerance, that last rank is returned."""
    ranks = [_check_rank(k) for k in ranks]
    curve = np.asarray(curve, dtype=float)
    if not ranks or curve.shape != (len(ranks),):
        raise ValueError(f"need one accuracy per rank and at least one rank, got {len(ranks)} ranks "
                         f"and curve of shape {curve.shape}")
    if any(b <= a for a, b in zip(ranks, ranks[1:])):
        raise ValueError(f"ranks must be strictly increasing, got {ranks}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    within = curve >= full - tolerance
    for i, k in enumerate(ranks):
        if within[i:].all():
            return k
    return ranks[-1]
