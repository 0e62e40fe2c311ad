"""Networks of the book: MLPs, deep linear networks and a small CNN.

Notation (the book's): ``f(x) = W_L s(W_{L-1} ... s(W_1 x))`` with ``h_0 = x``,
``z_l = W_l h_{l-1}`` (plus ``b_l`` when biases are on) and ``h_l = s(z_l)``.

Initialisation is explicit and seeded, so a member of an ensemble
(:mod:`nrc_utils.ensemble`) starts from exactly the weights a single network
with the same seed starts from: ``W_l ~ N(0, init_scale^2 / fan_in)``,
biases zero, drawn layer by layer from ``torch.Generator().manual_seed(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}
SMOOTH_ACTIVATIONS = ("tanh", "gelu", "softplus", "identity")


def make_activation(name: str) -> nn.Module:
    """The activation ``s`` by name; smooth ones (tanh, gelu, softplus) allow exact stationarity."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def activation_derivative(name: str, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``s'(z)`` of the activation ``name``, given ``z`` and ``h = s(z)``, as PyTorch's own backward computes it.

    tanh: ``1 - h^2``; relu: ``1[z > 0]``; gelu (exact): ``Phi(z) + z phi(z)``;
    softplus (``beta = 1``, linear above ``threshold = 20``): ``sigmoid(z)``, 1 above 20;
    identity: 1. Used by the batched back-propagation of :mod:`nrc_utils.ensemble`;
    ``tests/test_models.py`` checks each against autograd.
    """
    if name == "tanh":
        return 1 - h * h
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "gelu":
        return 0.5 * (1 + torch.erf(z * math.sqrt(0.5))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if name == "softplus":
        return torch.where(z > 20, torch.ones_like(z), torch.sigmoid(z))
    if name == "identity":
        return torch.ones_like(z)
    raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")


def layer_shapes(d_in: int, widths: Sequence[int], d_out: int) -> list[tuple[int, int]]:
    """Shapes ``(d_l, d_{l-1})`` of ``W_1 .. W_L`` for an MLP ``d_in -> widths -> d_out``."""
    dims = [d_in, *widths, d_out]
    return [(dims[i + 1], dims[i]) for i in range(len(dims) - 1)]


def init_weights(shapes: Sequence[tuple[int, int]], seed: int, init_scale: float = 1.0) -> list[torch.Tensor]:
    """``W_l ~ N(0, init_scale^2 / fan_in)`` in float32, drawn in layer order from one seeded generator."""
    g = torch.Generator().manual_seed(int(seed))
    return [torch.randn(shape, generator=g) * (init_scale / math.sqrt(shape[1])) for shape in shapes]


class MLP(nn.Module):
    """Fully connected network ``f(x) = W_L s(W_{L-1} ... s(W_1 x))``.

    ``model.config`` holds the constructor arguments, so a trained result can be
    cached under a hash of them (:mod:`nrc_utils.cache`).
    """

    def __init__(
        self,
        d_in: int,
        widths: Sequence[int],
        d_out: int,
        activation: str = "tanh",
        bias: bool = False,
        seed: int = 0,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.config = {
            "kind": "mlp",
            "d_in": int(d_in),
            "widths": [int(w) for w in widths],
            "d_out": int(d_out),
            "activation": activation,
            "bias": bool(bias),
            "seed": int(seed),
            "init_scale": float(init_scale),
        }
        self.act = make_activation(activation)
        shapes = layer_shapes(d_in, widths, d_out)
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own init must not advance the global RNG
            self.layers = nn.ModuleList(nn.Linear(i, o, bias=bias) for o, i in shapes)
        with torch.no_grad():
            for layer, w in zip(self.layers, init_weights(shapes, seed, init_scale)):
                layer.weight.copy_(w)
                if layer.bias is not None:
                    layer.bias.zero_()

    @property
    def depth(self) -> int:
        """Number of weight matrices ``L``."""
        return len(self.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        return self.layers[-1](h)

    def features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """All intermediate quantities: ``hs = [h_0, ..., h_{L-1}]`` (layer inputs) and ``zs = [z_1, ..., z_L]``."""
        h = x.flatten(1)
        hs, zs = [h], []
        for i, layer in enumerate(self.layers):
            z = layer(h)
            zs.append(z)
            if i < len(self.layers) - 1:
                h = self.act(z)
                hs.append(h)
        return hs, zs


def deep_linear(d_in: int, width: int, depth: int, d_out: int, seed: int = 0, init_scale: float = 1.0) -> MLP:
    """Deep linear network ``f(x) = W_L ... W_1 x`` (no biases), ``depth`` = number of matrices ``L``."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    return MLP(d_in, [width] * (depth - 1), d_out, activation="identity", bias=False, seed=seed, init_scale=init_scale)


class SmallCNN(nn.Module):
    """Two 3x3 convolutions (with 2x2 max-pooling) and a two-layer MLP head.

    Its conv kernels enter rank measurements reshaped to ``out x (in * k * k)``
    (:func:`weight_matrices`).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, n_classes: int = 10, channels: Sequence[int] = (16, 32),
                 hidden: int = 128, activation: str = "relu", bias: bool = True, seed: int = 0) -> None:
        super().__init__()
        self.config = {"kind": "cnn", "in_channels": in_channels, "image_size": image_size, "n_classes": n_classes,
                       "channels": list(channels), "hidden": hidden, "activation": activation, "bias": bias, "seed": seed}
        c1, c2 = channels
        self.act = make_activation(activation)
        self.pool = nn.MaxPool2d(2)
        side = image_size // 4
        with torch.random.fork_rng(devices=[]):  # PyTorch's default init, seeded, global RNG untouched
            torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1, bias=bias)
            self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=bias)
            self.fc1 = nn.Linear(c2 * side * side, hidden, bias=bias)
            self.fc2 = nn.Linear(hidden, n_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The ``nn.Linear`` and ``nn.Conv2d`` modules of ``model`` in forward order: ``W_1 .. W_L``."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The weight matrices ``W_1 .. W_L`` as 2-D tensors (conv kernels reshaped to ``out x (in*k*k)``), biases left out."""
    return [m.weight.reshape(m.weight.shape[0], -1) for m in weight_layers(model)]
