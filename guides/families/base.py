"""The interface every posterior family of :mod:`guides` implements."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["Family"]


class Family(nn.Module):
    r"""Maps an encoder's output to the distribution :math:`q(z \mid x)`.

    An amortized guide computes the encoder features :math:`h(x)` and the Gaussian
    parameters ``(loc, scale)`` read off them; the family turns these into a distribution
    over :math:`z \in \mathbb{R}^d` with ``event_shape == (d,)`` and batch shape
    ``loc.shape[:-1]``. The diagonal Normal uses ``(loc, scale)`` alone; richer families
    (full or low-rank covariance, normalizing flows) learn extra x-dependent parameters from
    ``features`` with layers of their own.

    Subclasses take ``(latent_dim, feature_dim, **options)`` and implement :meth:`forward`.

    :param latent_dim: dimension d of z.
    :param feature_dim: size of the features ``h(x)`` the encoder provides.
    """

    def __init__(self, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        if latent_dim < 1 or feature_dim < 1:
            raise ValueError(
                f"latent_dim and feature_dim must be positive, got {latent_dim}, {feature_dim}"
            )
        self.latent_dim = int(latent_dim)
        self.feature_dim = int(feature_dim)

    def forward(
        self, loc: torch.Tensor, scale: torch.Tensor, features: torch.Tensor
    ) -> dist.TorchDistribution:
        """``q(z | x)`` with batch shape ``loc.shape[:-1]`` and event shape ``(d,)``.

        :param loc: ``(..., d)`` mean of the base Gaussian.
        :param scale: ``(..., d)`` positive standard deviations of the base Gaussian.
        :param features: ``(..., feature_dim)`` encoder features ``h(x)``.
        """
        raise NotImplementedError
