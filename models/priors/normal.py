"""The standard Normal prior."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["StandardNormalPrior"]


class StandardNormalPrior(nn.Module):
    r"""The standard Normal prior :math:`p(z) = \mathcal{N}(z; 0, I_d)`."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)
