"""Per-sample losses ``loss(f(x_i), y_i)`` and accuracy.

- ``"mse"``: the square loss ``loss(f, y) = (1/2) ||f - y||^2`` with ``y`` one-hot (the book's notation).
- ``"ce"``: the usual cross-entropy on logits.

``L_0 = (1/N) sum_i loss_i`` is :func:`mean_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("mse", "ce")


def check_loss(kind: str) -> str:
    """Return ``kind`` if it names a loss, else a one-line ``ValueError``."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose 'mse' (square loss) or 'ce' (cross-entropy)")
    return kind


def sample_losses(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """``loss(f(x_i), y_i)`` for every sample, shape ``(N,)``; ``y`` holds integer labels."""
    if check_loss(kind) == "ce":
        return F.cross_entropy(out, y, reduction="none")
    target = F.one_hot(y, out.shape[-1]).to(out.dtype)
    return 0.5 * (out - target).pow(2).sum(-1)


def mean_loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """``L_0 = (1/N) sum_i loss_i``."""
    return sample_losses(out, y, kind).mean()


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of samples whose largest output is the label."""
    return (out.argmax(-1) == y).double().mean().item()
