"""Encoder networks: map a datapoint to the parameters of q(z | x)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.networks import mlp

__all__ = ["ENCODERS", "MLPEncoder"]


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
        self.register_buffer("input_scale", torch.tensor(float(input_scale)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``h(x)``, shape ``(..., feature_dim)``."""
        h = x.flatten(-len(self.data_shape)) * self.input_scale.to(x.dtype)
        return self.net[:-1](h)

    def gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of the diagonal Normal from the features ``h``."""
        loc, raw_scale = self.net[-1](h).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + self.min_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.features(x))


#: Encoders by name; each is ``ENCODERS[name](data_shape, latent_dim, **options)``.
ENCODERS: dict[str, type[nn.Module]] = {"mlp": MLPEncoder}
