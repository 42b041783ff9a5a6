r"""A diagonal Normal prior with learned location and scale.

.. math::

    p_\theta(z) = \prod_{j=1}^{d} \mathcal{N}(z_j;\ \mu_j,\ \sigma_j^2), \qquad
    \sigma_j = \mathrm{softplus}(\rho_j) + \sigma_{\min},

with :math:`\mu, \rho \in \mathbb{R}^d` learned. Softplus rather than :math:`\exp` keeps the
scale's growth linear (as in the encoder), and the floor :math:`\sigma_{\min}` keeps
:math:`\log p(z)` finite if the optimiser pushes a scale toward zero. The KL divergence from a
diagonal Normal guide is analytic, so ``TraceMeanField_ELBO`` uses it.

With a flexible decoder, learning the prior's location and scale changes little (the decoder
can absorb an affine map of z) but it does give the prior a say in which directions carry
information; see e.g. Kingma & Welling (2019), *An Introduction to Variational
Autoencoders*, sec. 3.4 (learned priors).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from models.priors._checks import check_latent_dim, check_positive, inverse_softplus

__all__ = ["LearnedNormalPrior"]


class LearnedNormalPrior(nn.Module):
    r""":math:`p(z) = \mathcal{N}(z; \mu, \mathrm{diag}\,\sigma^2)` with learned ``loc`` and scale.

    :param latent_dim: dimension d of z.
    :param init_scale: every :math:`\sigma_j` at initialisation (``loc`` starts at 0), so the
        default starts as the standard Normal.
    :param min_scale: the floor :math:`\sigma_{\min}` added to the softplus.
    """

    def __init__(
        self, latent_dim: int, *, init_scale: float = 1.0, min_scale: float = 1e-3
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        self.min_scale = check_positive("min_scale", min_scale)
        init_scale = check_positive("init_scale", init_scale)
        if init_scale <= self.min_scale:
            raise ValueError(f"init_scale {init_scale} must exceed min_scale {self.min_scale}")
        self.loc = nn.Parameter(torch.zeros(latent_dim))
        raw = inverse_softplus(torch.tensor(init_scale - self.min_scale))
        self.raw_scale = nn.Parameter(raw.expand(latent_dim).clone())

    @property
    def scale(self) -> torch.Tensor:
        """The current :math:`\\sigma`, shape ``(latent_dim,)``."""
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)
