r"""Gaussian posterior families: diagonal, low-rank plus diagonal, and full covariance.

All three share the encoder's mean :math:`\mu(x)` and standard deviations
:math:`\sigma(x)`; the richer ones add x-dependent correlations read off the encoder
features :math:`h(x)` by a linear layer:

.. math::

    \text{normal:}\quad & q(z \mid x) = \mathcal{N}(\mu, \mathrm{diag}\,\sigma^2), \\
    \text{lowrank\_normal:}\quad & q(z \mid x) = \mathcal{N}(\mu,\ F F^\top +
        \mathrm{diag}\,\sigma^2), \quad F = F(h) \in \mathbb{R}^{d \times r}, \\
    \text{fullrank\_normal:}\quad & q(z \mid x) = \mathcal{N}(\mu,\ L L^\top), \quad
        L = \mathrm{diag}\,\sigma + \mathrm{strictly\ lower}(h).

References

[1] Kingma & Welling (2014), *Auto-Encoding Variational Bayes*, ICLR.
[2] Rezende, Mohamed & Wierstra (2014), *Stochastic Backpropagation and Approximate
    Inference in Deep Generative Models*, ICML (low-rank plus diagonal covariance).
[3] Pyro documentation, ``pyro.distributions.LowRankMultivariateNormal`` and
    ``MultivariateNormal``.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from guides.families.base import Family
from guides.flows._checks import check_int

__all__ = ["DiagonalNormal", "FullRankNormal", "LowRankNormal"]


class DiagonalNormal(Family):
    r""":math:`q(z \mid x) = \mathcal{N}(z; \mu(x), \mathrm{diag}\,\sigma(x)^2)`, the mean-field
    family of Kingma & Welling (2014); no parameters beyond the encoder's."""

    def forward(
        self, loc: torch.Tensor, scale: torch.Tensor, features: torch.Tensor
    ) -> dist.TorchDistribution:
        return dist.Normal(loc, scale).to_event(1)


class LowRankNormal(Family):
    r""":math:`q(z \mid x) = \mathcal{N}\big(z;\ \mu(x),\ F(x) F(x)^\top +
    \mathrm{diag}\,\sigma(x)^2\big)`, a Gaussian with ``rank`` x-dependent directions of
    correlation [2].

    The factor :math:`F(x) = \mathrm{reshape}_{d \times r}(A\, h(x) + c)` is a linear read-out
    of the encoder features. Pyro's ``LowRankMultivariateNormal`` scores in
    :math:`O(d r^2 + r^3)` through the Woodbury identity and the matrix determinant lemma, so the
    family stays cheap for large d. :math:`A, c` start at a hundredth of PyTorch's default
    initialisation, so training starts next to the diagonal family (not exactly on it:
    with :math:`F = 0` the gradient with respect to :math:`F` would vanish, since the
    covariance is quadratic in :math:`F`).

    :param rank: the number r of directions, ``1 <= rank <= latent_dim``; default 2.
    """

    def __init__(self, latent_dim: int, feature_dim: int, *, rank: int = 2) -> None:
        super().__init__(latent_dim, feature_dim)
        if isinstance(rank, int) and not isinstance(rank, bool) and rank > self.latent_dim:
            raise ValueError(
                f"rank must be an integer in 1..latent_dim = {self.latent_dim}, got {rank}; "
                "pass a smaller rank (or use fullrank_normal)"
            )
        self.rank = check_int("rank", rank, maximum=self.latent_dim)
        self.cov_factor = nn.Linear(self.feature_dim, self.latent_dim * self.rank)
        with torch.no_grad():
            self.cov_factor.weight.mul_(1e-2)
            self.cov_factor.bias.mul_(1e-2)

    def forward(
        self, loc: torch.Tensor, scale: torch.Tensor, features: torch.Tensor
    ) -> dist.TorchDistribution:
        factor = self.cov_factor(features).unflatten(-1, (self.latent_dim, self.rank))
        return dist.LowRankMultivariateNormal(loc, factor, scale.square())


class FullRankNormal(Family):
    r""":math:`q(z \mid x) = \mathcal{N}\big(z;\ \mu(x),\ L(x) L(x)^\top\big)` with the
    Cholesky factor

    .. math::

        L(x) = \mathrm{diag}\,\sigma(x) + \mathrm{tril}_{-1}\big(A\, h(x) + c\big),

    the encoder's standard deviations on the diagonal (positive, so :math:`L` is a valid
    Cholesky factor and every covariance matrix is reachable) and the
    :math:`d(d-1)/2` strictly lower entries a linear read-out of the features. :math:`A, c`
    start at zero, so training starts exactly at the diagonal family; the gradient with
    respect to :math:`A, c` does not vanish there, since
    :math:`\partial (LL^\top) / \partial L_{ij} = \sigma_j (e_i e_j^\top + e_j e_i^\top)
    \ne 0` at :math:`L = \mathrm{diag}\,\sigma`. No options.
    """

    def __init__(self, latent_dim: int, feature_dim: int) -> None:
        super().__init__(latent_dim, feature_dim)
        d = self.latent_dim
        self.off_diagonal = nn.Linear(self.feature_dim, d * (d - 1) // 2) if d > 1 else None
        if self.off_diagonal is not None:
            nn.init.zeros_(self.off_diagonal.weight)
            nn.init.zeros_(self.off_diagonal.bias)

    def scale_tril(self, scale: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The Cholesky factor :math:`L(x)`, shape ``(..., d, d)``."""
        tril = torch.diag_embed(scale)
        if self.off_diagonal is None:
            return tril
        lower = self.off_diagonal(features)
        d = self.latent_dim
        rows, cols = torch.tril_indices(d, d, offset=-1, device=lower.device)
        strict = lower.new_zeros(lower.shape[:-1] + (d, d))
        strict[..., rows, cols] = lower
        return tril + strict

    def forward(
        self, loc: torch.Tensor, scale: torch.Tensor, features: torch.Tensor
    ) -> dist.TorchDistribution:
        return dist.MultivariateNormal(loc, scale_tril=self.scale_tril(scale, features))
