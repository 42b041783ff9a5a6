r"""Gaussian posterior families."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from guides.families.base import Family

__all__ = ["DiagonalNormal"]


class DiagonalNormal(Family):
    r""":math:`q(z \mid x) = \mathcal{N}(z; \mu(x), \mathrm{diag}\,\sigma(x)^2)`, the mean-field
    family of Kingma & Welling (2014); no parameters beyond the encoder's."""

    def forward(
        self, loc: torch.Tensor, scale: torch.Tensor, features: torch.Tensor
    ) -> dist.TorchDistribution:
        return dist.Normal(loc, scale).to_event(1)
