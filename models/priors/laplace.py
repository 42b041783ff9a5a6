r"""The standard Laplace prior, a fixed heavy(ier)-tailed alternative to the Normal.

.. math::

    p(z) = \prod_{j=1}^{d} \tfrac{1}{2} e^{-|z_j|},

the Laplace (double-exponential) law with location 0 and scale 1 in every coordinate: variance
2, exponential rather than Gaussian tails, and a cusp at zero that favours sparse codes (the
:math:`|z|` penalty of sparse coding; Olshausen & Field (1996), *Emergence of simple-cell
receptive field properties by learning a sparse code for natural images*, Nature 381). Both
parameters are buffers. ``torch`` registers the KL divergence from a Normal to a Laplace, so
``TraceMeanField_ELBO`` uses the analytic KL.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from models.priors._checks import check_latent_dim

__all__ = ["LaplacePrior"]


class LaplacePrior(nn.Module):
    r""":math:`p(z) = \prod_j \mathrm{Laplace}(z_j; 0, 1)`; no options besides ``latent_dim``."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Laplace(self.loc, self.scale).to_event(1)
