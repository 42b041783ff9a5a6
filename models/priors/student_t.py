r"""A Student-t prior with fixed degrees of freedom, for heavy-tailed latents.

.. math::

    p(z) = \prod_{j=1}^{d} \frac{\Gamma\!\left(\frac{\nu + 1}{2}\right)}
        {\sqrt{\nu\pi}\,\Gamma\!\left(\frac{\nu}{2}\right)}
        \left(1 + \frac{z_j^2}{\nu}\right)^{-\frac{\nu + 1}{2}},

location 0 and scale 1 in every coordinate, with :math:`\nu` (``df``, default 3) fixed: the
tails decay polynomially, so a datapoint far from the others costs little prior density. The
variance :math:`\nu / (\nu - 2)` exists only for :math:`\nu > 2`. All parameters, ``df``
included, are buffers. Heavy-tailed VAE priors: Abiri & Ohlsson (2020), *Variational
auto-encoders with Student's t-prior*, arXiv:2004.02581 (they learn :math:`\nu`; here it is
an option); Kim et al. (2024), *t^3-Variational Autoencoder*, ICLR. No KL divergence from a
Normal to a Student-t is registered, so ``TraceMeanField_ELBO`` falls back to the sampled KL.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from models.priors._checks import check_latent_dim, check_positive

__all__ = ["StudentTPrior"]


class StudentTPrior(nn.Module):
    r""":math:`p(z) = \prod_j t_\nu(z_j)` with location 0 and scale 1.

    :param latent_dim: dimension d of z.
    :param df: the degrees of freedom :math:`\nu > 0`, fixed (a buffer, not learned).
    """

    def __init__(self, latent_dim: int, *, df: float = 3.0) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        df = check_positive("df", df)
        self.register_buffer("df", torch.full((latent_dim,), df))
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)
