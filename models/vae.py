r"""The VAE generative program :math:`p(z)\,p(x \mid z)` as a :class:`~pyro.nn.PyroModule`.

Built from three swappable parts: a prior module (``forward() -> Distribution`` over z), a
decoder network (z to flat likelihood parameters) and a likelihood module (parameters to a
distribution over x). Sites follow the contract of DESIGN.md section 2: one plate named
``"data"`` on the rightmost batch dimension, the latent site ``"z"`` and the observed
site ``"x"``.
"""

from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from models.likelihoods import Likelihood
from models.likelihoods.base import check_decoder_outputs, likelihood_of_flat
from models.masking import mask_datapoints, split_mask

__all__ = ["VAE"]


class VAE(PyroModule):
    """``model(x, mask=None)``: z ~ prior, x | z ~ likelihood(decoder(z)).

    :param prior: module whose ``forward()`` returns a distribution with ``event_dim == 1``.
    :param decoder: network mapping ``(..., latent_dim)`` to ``(..., likelihood.num_params)``.
    :param likelihood: a :class:`~models.likelihoods.Likelihood`; it fixes ``data_shape``.
    """

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood: Likelihood) -> None:
        super().__init__()
        check_decoder_outputs(decoder, likelihood)
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        # Parameters of plain nn.Module parts must emit pyro.param statements so SVI sees them.
        to_pyro_module_(self)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one datapoint, e.g. ``(64,)``."""
        return self.likelihood.data_shape

    def decode(self, z: torch.Tensor, feature_mask: torch.Tensor | None = None):
        """The distribution p(x | z) for latents of shape ``(..., latent_dim)``."""
        return likelihood_of_flat(self.likelihood, self.decoder(z), feature_mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the generative program with ``x`` observed.

        :param mask: optional boolean tensor, either of shape ``(N,)`` (drop whole datapoints
            from the likelihood) or of ``x``'s shape (drop single elements: the model then
            scores only the observed elements, log p(x_observed | z)).
        """
        datapoint_mask, feature_mask = split_mask(mask, x)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            with mask_datapoints(datapoint_mask):
                pyro.sample("x", self.decode(z, feature_mask), obs=x)
        return z

    @torch.no_grad()
    def generate(self, num_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``z ~ p(z)`` and ``x ~ p(x | z)``; returns ``(z, mean of p(x | z), x)``."""
        z = self.prior().sample((num_samples,))
        px = self.decode(z)
        return z, px.mean, px.sample()
