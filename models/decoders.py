"""Decoder networks: map a latent ``z`` of shape ``(..., latent_dim)`` to the flat
``(..., out_features)`` parameters a likelihood needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.networks import mlp

__all__ = ["DECODERS", "MLPDecoder"]


class MLPDecoder(nn.Module):
    """A multilayer perceptron decoder with configurable hidden sizes and activation."""

    def __init__(
        self,
        latent_dim: int,
        out_features: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.out_features = out_features
        self.net = mlp(latent_dim, hidden, out_features, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


#: Decoders by name; each is ``DECODERS[name](latent_dim, out_features, **options)``.
DECODERS: dict[str, type[nn.Module]] = {"mlp": MLPDecoder}
