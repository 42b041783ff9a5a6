r"""A learned mixture of diagonal Gaussians (the GMVAE-style prior).

.. math::

    p_\theta(z) = \sum_{c=1}^{C} \pi_c\, \mathcal{N}\!\left(z;\ \mu_c,\
        \mathrm{diag}\,\sigma_c^2\right), \qquad
    \pi = \mathrm{softmax}(\ell), \quad \sigma_c = \mathrm{softplus}(\rho_c) + \sigma_{\min},

with logits :math:`\ell \in \mathbb{R}^C`, means :math:`\mu_c` and raw scales :math:`\rho_c`
all learned. The means start at random, :math:`\mu_c \sim \mathcal{N}(0, s^2 I)` with
:math:`s` = ``init_spread``, so the components start apart; the weights start uniform.

The density is a :class:`~models.priors.diagonal_mixture.DiagonalNormalMixture` (a
:class:`~pyro.distributions.MixtureSameFamily` whose ``log_prob`` is one matrix product), so
:math:`\log p(z)` is a ``logsumexp`` over components and broadcasts over any sample shape,
e.g. ``(K, N, d)`` to ``(K, N)``. It has no reparametrised sampler (``rsample``) and needs
none: in a VAE the guide draws z and the prior only scores it; ``sample()`` (for generation)
works. No KL divergence from a Normal to a mixture has a closed form, so
``TraceMeanField_ELBO`` falls back to the sampled KL (Pyro catches the
``NotImplementedError`` of ``kl_divergence``).

References

[1] Dilokthanakul et al. (2016), *Deep Unsupervised Clustering with Gaussian Mixture
    Variational Autoencoders*, arXiv:1611.02648.
[2] Jiang et al. (2017), *Variational Deep Embedding: An Unsupervised and Generative Approach
    to Clustering*, IJCAI.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.priors._checks import check_latent_dim, check_positive, inverse_softplus
from models.priors.diagonal_mixture import DiagonalNormalMixture

__all__ = ["MixturePrior"]


class MixturePrior(nn.Module):
    r"""A mixture of ``num_components`` diagonal Gaussians with learned weights, means, scales.

    :param latent_dim: dimension d of z.
    :param num_components: the number of components C.
    :param init_spread: standard deviation :math:`s` of the random initial means.
    :param init_scale: every :math:`\sigma_{c,j}` at initialisation.
    :param min_scale: the floor :math:`\sigma_{\min}` added to the softplus.
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        num_components: int = 10,
        init_spread: float = 1.0,
        init_scale: float = 1.0,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        if isinstance(num_components, bool) or not isinstance(num_components, int):
            raise ValueError(f"num_components must be an integer, got {num_components!r}")
        if num_components < 1:
            raise ValueError(f"num_components must be positive, got {num_components}")
        self.num_components = num_components
        self.min_scale = check_positive("min_scale", min_scale)
        init_spread = check_positive("init_spread", init_spread)
        init_scale = check_positive("init_scale", init_scale)
        if init_scale <= self.min_scale:
            raise ValueError(f"init_scale {init_scale} must exceed min_scale {self.min_scale}")
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.loc = nn.Parameter(init_spread * torch.randn(num_components, latent_dim))
        raw = inverse_softplus(torch.tensor(init_scale - self.min_scale))
        self.raw_scale = nn.Parameter(raw.expand(num_components, latent_dim).clone())

    @property
    def scale(self) -> torch.Tensor:
        """The current component scales, shape ``(num_components, latent_dim)``."""
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self) -> DiagonalNormalMixture:
        return DiagonalNormalMixture(self.logits, self.loc, self.scale)
