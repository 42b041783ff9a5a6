"""Encoder networks: map a datapoint to the parameters of q(z | x).

Every encoder has two stages, so guide families richer than the diagonal Normal can reuse
the network: ``features(x)`` maps ``x`` to the last hidden layer ``h(x)`` (``feature_dim``
numbers) and ``gaussian(h)`` maps ``h`` to ``(loc, scale)``; ``forward(x) ==
gaussian(features(x))``. Each also has ``data_shape``, ``latent_dim`` and the buffer
``input_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.networks import (
    all_but_last,
    check_activation,
    check_image_shape,
    halved_sizes,
    loc_and_scale,
    mlp,
)

__all__ = ["ENCODERS", "ConvEncoder", "MLPEncoder"]


def _register_input_scale(encoder: nn.Module, input_scale: float) -> None:
    """The buffer ``input_scale`` (saved with the weights), and whether it is 1, kept up to
    date when weights are loaded."""
    encoder.register_buffer("input_scale", torch.tensor(float(input_scale)))
    encoder.unit_input_scale = float(input_scale) == 1.0
    encoder.register_load_state_dict_post_hook(_note_input_scale)


def _note_input_scale(encoder: nn.Module, incompatible_keys: object) -> None:
    encoder.unit_input_scale = bool(encoder.input_scale == 1)


def _scaled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x * input_scale``; ``x`` itself when the scale is 1 (the same values, without a pass
    over the batch)."""
    return x if encoder.unit_input_scale else x * encoder.input_scale.to(x.dtype)


class MLPEncoder(nn.Module):
    r"""An MLP returning ``(loc, scale)`` of a diagonal Normal over ``latent_dim`` latents.

    Every encoder has two stages, so guide families richer than the diagonal Normal can
    reuse the network: :meth:`features` maps ``x`` to the last hidden layer ``h(x)``
    (``feature_dim`` numbers) and :meth:`gaussian` maps ``h`` to ``(loc, scale)``;
    ``forward(x) == gaussian(features(x))``. Flow and full-covariance families read their
    extra, x-dependent parameters off ``h`` (see :mod:`guides.families`).

    The input is flattened over ``data_shape`` and multiplied by ``input_scale`` (e.g. 1/16
    for counts 0..16) so the network sees values of order one. The scale is positive through
    :math:`\sigma = \mathrm{softplus}(h) + \sigma_{\min}`: softplus grows linearly rather than
    exponentially, which keeps early training stable, and the floor
    :math:`\sigma_{\min}` (default ``1e-4``) keeps :math:`\log q` finite.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        input_scale: float = 1.0,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        self.latent_dim = latent_dim
        self.min_scale = float(min_scale)
        in_features = int(torch.Size(self.data_shape).numel())
        self.net = mlp(in_features, hidden, 2 * latent_dim, activation)
        self.feature_dim = int(hidden[-1]) if len(hidden) else in_features
        _register_input_scale(self, input_scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``h(x)``, shape ``(..., feature_dim)``."""
        return all_but_last(self.net, _scaled(self, x.flatten(-len(self.data_shape))))

    def gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of the diagonal Normal from the features ``h``."""
        return loc_and_scale(self.net[-1](h), self.min_scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.features(x))


class ConvEncoder(nn.Module):
    r"""A convolutional encoder for images of shape ``image_shape = (C, H, W)``.

    A stack of stride-2 convolutions (kernel 3, padding 1; ``channels`` e.g. 32 then 64)
    halves the resolution at each layer, :math:`H \to \lceil H/2 \rceil`; the flattened
    feature map goes through a dense network with ``hidden`` layers whose last layer is the
    features ``h(x)``, and a linear layer gives ``(loc, scale)`` as in :class:`MLPEncoder`
    (same ``input_scale``, same softplus scale with floor ``min_scale``).

    Datapoints may come flat (``data_shape = (C*H*W,)``, as the datasets store them, in
    ``(C, H, W)`` order) or as images (``data_shape = (C, H, W)``); leading batch dimensions
    ``(K, N, ...)`` are flattened into one for the convolutions and restored.

    :param image_shape: ``(C, H, W)``; required unless ``data_shape`` is itself 3-D.
    :param channels: output channels of the convolutions, one stride-2 layer each.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        input_scale: float = 1.0,
        min_scale: float = 1e-4,
        *,
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if image_shape is None and len(self.data_shape) == 3:
            image_shape = self.data_shape
        self.image_shape = check_image_shape(image_shape, math.prod(self.data_shape), who="encoder")
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be one or more positive sizes, got {channels}")
        act = check_activation(activation)
        self.latent_dim = latent_dim
        self.min_scale = float(min_scale)
        layers: list[nn.Module] = []
        for n_in, n_out in zip((self.image_shape[0], *channels[:-1]), channels, strict=True):
            layers += [nn.Conv2d(n_in, n_out, 3, stride=2, padding=1), act()]
        self.conv = nn.Sequential(*layers)
        height = halved_sizes(self.image_shape[1], len(channels))[-1]
        width = halved_sizes(self.image_shape[2], len(channels))[-1]
        self.conv_features = channels[-1] * height * width
        self.net = mlp(self.conv_features, hidden, 2 * latent_dim, activation)
        self.feature_dim = int(hidden[-1]) if len(hidden) else self.conv_features
        _register_input_scale(self, input_scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``h(x)``, shape ``(..., feature_dim)``."""
        batch = x.shape[: x.dim() - len(self.data_shape)]
        images = _scaled(self, x.reshape(batch.numel(), *self.image_shape))
        maps = self.conv(images)
        return all_but_last(self.net, maps.reshape(*batch, self.conv_features))

    def gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of the diagonal Normal from the features ``h``."""
        return loc_and_scale(self.net[-1](h), self.min_scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.features(x))


#: Encoders by name; each is ``ENCODERS[name](data_shape, latent_dim, **options)``; the
#: ``"conv"`` encoder also takes the keyword ``image_shape=(C, H, W)``.
ENCODERS: dict[str, type[nn.Module]] = {"mlp": MLPEncoder, "conv": ConvEncoder}
