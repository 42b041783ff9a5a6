"""Plain PyTorch building blocks shared by decoders (models/) and encoders (guides/): MLPs,
a two-stage Gaussian MLP, and the shape arithmetic of the convolutional networks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "GaussianMLP",
    "all_but_last",
    "check_activation",
    "check_image_shape",
    "halved_sizes",
    "loc_and_scale",
    "mlp",
]

#: Activation functions by name, for decoders and encoders alike.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def check_activation(activation: str) -> type[nn.Module]:
    """The activation class registered as ``activation``; a clear error otherwise."""
    if activation not in ACTIVATIONS:
        choices = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {activation!r}; choose one of: {choices}")
    return ACTIVATIONS[activation]


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "relu",
) -> nn.Sequential:
    """A multilayer perceptron ``in -> hidden[0] -> ... -> out`` with no final activation.

    :param activation: a key of :data:`ACTIVATIONS`.
    """
    act = check_activation(activation)
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ValueError(
            f"layer sizes must be positive, got in={in_features}, hidden={list(hidden)}, "
            f"out={out_features}"
        )
    sizes = [in_features, *hidden]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), act()]
    layers.append(nn.Linear(sizes[-1], out_features))
    return nn.Sequential(*layers)


def all_but_last(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``x`` through every layer of ``net`` but the last (the features of a two-stage
    network), calling the layers themselves.

    Never ``net[:-1](x)``: slicing builds a new ``Sequential`` on every call, and when the
    layers are PyroModules (models and guides convert their parts) it re-parents them to
    that nameless copy, so their ``pyro.param`` statements are named ``0.weight`` instead
    of ``encoder.net.0.weight``; two networks then share one name in Pyro's parameter
    store, and all but one of their first layers are never trained.
    """
    for layer in itertools.islice(net, len(net) - 1):
        x = layer(x)
    return x


def loc_and_scale(output: torch.Tensor, min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Split ``(..., 2d)`` raw outputs into a Normal's ``loc`` and a positive ``scale``,
    :math:`\sigma = \mathrm{softplus}(\cdot) + \sigma_{\min}`: softplus grows linearly rather
    than exponentially (stable early training) and the floor keeps :math:`\log q` finite."""
    loc, raw_scale = output.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + min_scale


class GaussianMLP(nn.Module):
    r"""An MLP from ``u`` to ``(loc, scale)`` of a diagonal Normal over ``latent_dim`` numbers.

    It has the two stages of the encoders in :mod:`guides.encoders`: :meth:`features` maps
    ``u`` to the last hidden layer ``h(u)`` (``feature_dim`` numbers) and :meth:`gaussian`
    maps ``h`` to ``(loc, scale)``, so a posterior family can read extra parameters off
    ``h``. Used for the conditional :math:`p(z_1 \mid z_2)` of
    :class:`~models.hierarchical.HierarchicalVAE` and for the second stage of the
    hierarchical and conditional guides. Any leading batch dimensions broadcast.

    :param in_features: size of the input ``u``.
    :param latent_dim: size of ``loc`` and ``scale``.
    :param hidden: hidden layer sizes; with none, ``h = u``.
    :param min_scale: the floor :math:`\sigma_{\min}` of the scale (see :func:`loc_and_scale`).
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)
        self.net = mlp(self.in_features, hidden, 2 * self.latent_dim, activation)
        self.feature_dim = int(hidden[-1]) if len(hidden) else self.in_features

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``h(u)``, shape ``(..., feature_dim)``."""
        return all_but_last(self.net, u)

    def gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)``, each ``(..., latent_dim)``, from the features ``h``."""
        return loc_and_scale(self.net[-1](h), self.min_scale)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.features(u))


def check_image_shape(
    image_shape: Sequence[int] | None, numel: int | None = None, *, who: str = "network"
) -> tuple[int, int, int]:
    """``image_shape`` as a positive ``(C, H, W)`` triple.

    :param numel: if given, the number of values the image must hold (``C * H * W``).
    :raises ValueError: naming the fix, if it is missing, malformed or of the wrong size.
    """
    if image_shape is None:
        raise ValueError(
            f"the convolutional {who} needs image_shape=(C, H, W), e.g. image_shape=(1, 8, 8) "
            "for the digits or (1, 28, 28) for MNIST (Dataset.image_shape)"
        )
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be (C, H, W) integers, got {image_shape!r}") from None
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"image_shape must be three positive sizes (C, H, W), got {shape}")
    if numel is not None and math.prod(shape) != numel:
        raise ValueError(
            f"image_shape {shape} holds {math.prod(shape)} values but the data have {numel} "
            "per datapoint"
        )
    return shape  # type: ignore[return-value]


def halved_sizes(size: int, times: int) -> list[int]:
    """``[size, ceil(size / 2), ceil(size / 4), ...]``, ``times + 1`` entries: the spatial
    sizes of a stack of stride-2 convolutions (kernel 3, padding 1) on ``size`` pixels."""
    sizes = [int(size)]
    for _ in range(times):
        sizes.append(-(-sizes[-1] // 2))
    return sizes
