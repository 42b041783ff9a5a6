r"""A VAE with two stochastic layers, :math:`p(z_2)\, p(z_1 \mid z_2)\, p(x \mid z_1, z_2)`.

.. math::

    z_2 \sim p_\lambda(z_2), \qquad
    z_1 \mid z_2 \sim \mathcal{N}\!\left(z_1;\ \mu_\theta(z_2),\
        \mathrm{diag}\,\sigma_\theta(z_2)^2\right), \qquad
    x \mid z_1, z_2 \sim p_\theta\!\left(x \mid \mathrm{dec}([z_1, z_2])\right),

the two-layer model of Burda et al. [1] with the skip connection of Tomczak & Welling's
HVAE [2], whose decoder reads both layers. The top prior :math:`p_\lambda(z_2)` is any prior
module of :mod:`models.priors`, the VampPrior included [2] (it then mixes the guide's
:math:`q(z_2 \mid u_c)`); the conditional :math:`p(z_1 \mid z_2)` is a
:class:`~models.networks.GaussianMLP` (softplus scale with a small floor). The sites
``"z2"``, ``"z1"`` and ``"x"`` lie in ``pyro.plate("data")`` on the rightmost batch dimension,
so the engine's importance weights, ELBOs and diagnostics apply unchanged: the guide
(:class:`guides.hierarchical.HierarchicalGuide`) samples both latent sites.

References

[1] Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
[2] Tomczak & Welling (2018), *VAE with a VampPrior*, AISTATS (the HVAE of section 3.2).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from models.likelihoods import Likelihood
from models.likelihoods.base import likelihood_of_flat
from models.masking import mask_datapoints, split_mask
from models.networks import GaussianMLP

__all__ = ["HierarchicalVAE"]


def _check_size(what: str, actual: int | None, expected: int) -> None:
    if actual is not None and actual != expected:
        raise ValueError(f"{what} is {actual}, expected {expected}")


class HierarchicalVAE(PyroModule):
    r"""``model(x, mask=None)``: :math:`z_2 \sim p(z_2)`, :math:`z_1 \mid z_2 \sim
    \mathcal{N}(\mu(z_2), \mathrm{diag}\,\sigma(z_2)^2)`, :math:`x \mid z_1, z_2 \sim`
    ``likelihood(decoder(cat(z1, z2)))``.

    :param prior: module whose ``forward()`` returns a distribution over :math:`z_2` with
        ``event_dim == 1``, e.g. :class:`~models.priors.VampPrior` (built on the guide's
        encoder, whose ``latent_dim`` is then the top dimension).
    :param conditional: network ``z2 -> (loc, scale)`` of :math:`p(z_1 \mid z_2)`, e.g. a
        :class:`~models.networks.GaussianMLP`.
    :param decoder: network from ``(..., latent_dim + top_latent_dim)`` (``z1`` first) to
        ``(..., likelihood.num_params)``.
    :param likelihood: a :class:`~models.likelihoods.Likelihood`; it fixes ``data_shape``.
    """

    def __init__(
        self,
        prior: nn.Module,
        conditional: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
    ) -> None:
        super().__init__()
        top = getattr(prior, "latent_dim", None) or getattr(conditional, "in_features", None)
        bottom = getattr(conditional, "latent_dim", None)
        #: Dimensions of z1 and z2 (``None`` where the parts do not say).
        self.latent_dim: int | None = None if bottom is None else int(bottom)
        self.top_latent_dim: int | None = None if top is None else int(top)
        if top is not None:
            _check_size(
                "the conditional network's in_features (the prior's latent_dim)",
                getattr(conditional, "in_features", None),
                int(top),
            )
        if bottom is not None and top is not None:
            _check_size(
                "the decoder's latent_dim (z1 and z2 concatenated)",
                getattr(decoder, "latent_dim", None),
                int(bottom) + int(top),
            )
        _check_size(
            f"the decoder's out_features (the likelihood needs {likelihood.params_per_element}"
            f" per element of data_shape {likelihood.data_shape})",
            getattr(decoder, "out_features", None),
            likelihood.num_params,
        )
        self.prior = prior
        self.conditional = conditional
        self.decoder = decoder
        self.likelihood = likelihood
        to_pyro_module_(self)  # plain nn.Module parts emit pyro.param statements

    @classmethod
    def with_mlp_conditional(
        cls,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        *,
        latent_dim: int,
        top_latent_dim: int,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        min_scale: float = 1e-4,
    ) -> HierarchicalVAE:
        """The model with :math:`p(z_1 \\mid z_2)` a :class:`~models.networks.GaussianMLP`
        ``top_latent_dim -> hidden -> latent_dim``."""
        conditional = GaussianMLP(top_latent_dim, latent_dim, hidden, activation, min_scale)
        return cls(prior, conditional, decoder, likelihood)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one datapoint, e.g. ``(64,)``."""
        return self.likelihood.data_shape

    def prior_z1(self, z2: torch.Tensor) -> dist.Distribution:
        r""":math:`p(z_1 \mid z_2)` for ``z2`` of shape ``(..., top_latent_dim)``."""
        loc, scale = self.conditional(z2)
        return dist.Normal(loc, scale).to_event(1)

    def decode(
        self, z1: torch.Tensor, z2: torch.Tensor, feature_mask: torch.Tensor | None = None
    ) -> dist.Distribution:
        r""":math:`p(x \mid z_1, z_2)`; the batch shapes of ``z1`` and ``z2`` broadcast."""
        batch = torch.broadcast_shapes(z1.shape[:-1], z2.shape[:-1])
        z = torch.cat([z1.expand(*batch, -1), z2.expand(*batch, -1)], dim=-1)
        return likelihood_of_flat(self.likelihood, self.decoder(z), feature_mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the generative program with ``x`` observed; returns ``z1``.

        :param mask: optional boolean tensor of shape ``(N,)`` or of ``x``'s shape, as for
            :class:`~models.vae.VAE`: it masks the likelihood only.
        """
        datapoint_mask, feature_mask = split_mask(mask, x)
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.prior_z1(z2))
            with mask_datapoints(datapoint_mask):
                pyro.sample("x", self.decode(z1, z2, feature_mask), obs=x)
        return z1

    @torch.no_grad()
    def generate(self, num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ancestral samples; returns ``(z, mean of p(x | z1, z2), x)`` with
        ``z = cat(z1, z2)`` of shape ``(num_samples, latent_dim + top_latent_dim)``."""
        z2 = self.prior().sample((num_samples,))
        z1 = self.prior_z1(z2).sample()
        px = self.decode(z1, z2)
        return torch.cat([z1, z2], dim=-1), px.mean, px.sample()
