r"""The guide :math:`q(z \mid x, y)` of the conditional VAE
(:class:`~models.conditional.ConditionalVAE`).

.. math::

    h = h_\phi(x), \qquad g = g_\psi([h, \mathrm{onehot}(y)]), \qquad
    z \sim q(z \mid x, y) = \mathcal{F}\!\left(\mu_\psi(g), \sigma_\psi(g), g\right),

the recognition network of Kingma et al. [1] (M2, label observed) and Sohn et al. [2]: the
encoder's features of x are joined to the one-hot label and a second two-stage network gives
the features ``g`` and the Gaussian parameters a :class:`~guides.families.Family` turns into
the distribution of z (a diagonal Normal by default; any registered family, flows included).
Only the encoder's feature stage is used: its Gaussian head ``encoder.gaussian`` takes no
part in this guide.

Labels are the keyword ``y``: ``guide(x, y=labels)`` or ``guide(x, mask, y=labels)``, int64
class indices of shape ``(N,)``; bad labels raise a ``ValueError`` naming the fix.

References

[1] Kingma, Rezende, Mohamed & Welling (2014), *Semi-supervised Learning with Deep
    Generative Models*, NeurIPS.
[2] Sohn, Lee & Yan (2015), *Learning Structured Output Representation using Deep
    Conditional Generative Models*, NeurIPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from guides._joined import check_joined_inputs, family_or_normal
from guides.families import Family
from guides.family_factory import make_family
from models.conditional import check_labels, check_num_classes, one_hot
from models.masking import fill_missing
from models.networks import GaussianMLP

__all__ = ["ConditionalGuide"]


class ConditionalGuide(PyroModule):
    r"""``guide(x, mask=None, *, y)`` sampling the latent site ``site`` inside
    ``plate("data")`` from :math:`q(z \mid x, y)`.

    :param encoder: network with ``features(x) -> h`` and ``feature_dim``, e.g.
        :class:`~guides.encoders.MLPEncoder`.
    :param network: two-stage network from ``cat(h, onehot(y))`` (``encoder.feature_dim +
        num_classes`` inputs) to features and ``(loc, scale)``, e.g. a
        :class:`~models.networks.GaussianMLP`.
    :param num_classes: number of classes; labels are ``0 .. num_classes - 1``.
    :param family: the posterior family, built for ``(network.latent_dim,
        network.feature_dim)``; the diagonal Normal by default.
    :param site: name of the model's latent site.
    """

    def __init__(
        self,
        encoder: nn.Module,
        network: nn.Module,
        num_classes: int,
        family: Family | None = None,
        site: str = "z",
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_joined_inputs(
            network,
            encoder.feature_dim + num_classes,
            name="network",
            reads="cat(h, onehot(y)), encoder.feature_dim + num_classes",
        )
        self.encoder = encoder
        self.label_network = network
        self.num_classes = num_classes
        self.family = family_or_normal(family, network.latent_dim, network.feature_dim)
        self.site = site
        #: what the encoder sees in the holes of a per-element mask (see AmortizedGuide)
        self.fill_value: float | torch.Tensor = 0.0
        to_pyro_module_(self)

    @classmethod
    def build(
        cls,
        encoder: nn.Module,
        num_classes: int,
        *,
        latent_dim: int | None = None,
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        min_scale: float = 1e-4,
        family: str = "normal",
        site: str = "z",
        **family_options: Any,
    ) -> ConditionalGuide:
        """The guide with a :class:`~models.networks.GaussianMLP` ``cat(h, onehot(y)) ->
        hidden -> latent_dim`` and the family registered as ``family``.

        :param latent_dim: dimension of z; the encoder's ``latent_dim`` by default.
        :raises ValueError: for an unknown family or option.
        """
        latent_dim = encoder.latent_dim if latent_dim is None else latent_dim
        network = GaussianMLP(
            encoder.feature_dim + num_classes, latent_dim, hidden, activation, min_scale
        )
        posterior = make_family(family, latent_dim, network.feature_dim, **family_options)
        return cls(encoder, network, num_classes, posterior, site=site)

    def posterior(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(z \mid x, y)` for a batch ``x`` and labels ``y`` of shape ``(N,)``."""
        y = check_labels(y, self.num_classes, x.shape[0])
        h = self.encoder.features(x)
        g = self.label_network.features(torch.cat([h, one_hot(y, self.num_classes, h)], -1))
        return self.family(*self.label_network.gaussian(g), g)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample the latent site. With a per-element ``mask`` the encoder reads x only
        where it is observed (the holes hold :attr:`fill_value`); a per-datapoint mask is
        ignored.

        :raises ValueError: for missing or bad labels.
        """
        qz = self.posterior(fill_missing(x, mask, self.fill_value), y)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample(self.site, qz)
