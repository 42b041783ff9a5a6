r"""The guide :math:`q(z_2 \mid x)\, q(z_1 \mid x, z_2)` of the two-layer
:class:`~models.hierarchical.HierarchicalVAE`.

.. math::

    h = h_\phi(x), \qquad
    z_2 \sim q_\phi(z_2 \mid x) = \mathcal{F}_{\text{top}}\!\left(\mu_\phi(h),
        \sigma_\phi(h), h\right), \qquad
    g = g_\psi([h, z_2]), \qquad
    z_1 \sim q_\psi(z_1 \mid x, z_2) = \mathcal{F}_{\text{bottom}}\!\left(\mu_\psi(g),
        \sigma_\psi(g), g\right),

the inference network of Tomczak & Welling's HVAE [1]: the top layer is the encoder's own
posterior, so with the diagonal Normal family :math:`q(z_2 \mid x)` is exactly the Gaussian a
VampPrior over :math:`z_2` mixes at its pseudo-inputs, and the bottom layer reads both the
features of x and the sampled :math:`z_2` (Burda et al. [2] use the same top-down order of
sampling). Each layer's distribution comes from a :class:`~guides.families.Family`, so full
covariances and normalizing flows serve either layer.

Under the engine's ``pyro.plate("particles", K, dim=-2)`` the features ``h`` of shape
``(N, F)`` are expanded to the particles' batch shape ``(K, N)`` before they are joined to
:math:`z_2`.

References

[1] Tomczak & Welling (2018), *VAE with a VampPrior*, AISTATS.
[2] Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
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
from models.masking import fill_missing
from models.networks import GaussianMLP

__all__ = ["HierarchicalGuide"]


class HierarchicalGuide(PyroModule):
    r"""``guide(x, mask=None)`` sampling ``"z2"`` then ``"z1"`` inside ``plate("data")``.

    :param encoder: two-stage encoder (``features``, ``gaussian``, ``feature_dim``,
        ``latent_dim`` = the top dimension), e.g. :class:`~guides.encoders.MLPEncoder`; the
        same object a VampPrior over :math:`z_2` uses.
    :param bottom: two-stage network from ``cat(h, z2)`` (``encoder.feature_dim +
        encoder.latent_dim`` inputs) to the features and ``(loc, scale)`` of
        :math:`q(z_1 \mid x, z_2)`, e.g. a :class:`~models.networks.GaussianMLP`.
    :param family_top: family of :math:`q(z_2 \mid x)` built for ``(encoder.latent_dim,
        encoder.feature_dim)``; the diagonal Normal by default.
    :param family_bottom: family of :math:`q(z_1 \mid x, z_2)` built for
        ``(bottom.latent_dim, bottom.feature_dim)``; the diagonal Normal by default.
    """

    def __init__(
        self,
        encoder: nn.Module,
        bottom: nn.Module,
        family_top: Family | None = None,
        family_bottom: Family | None = None,
    ) -> None:
        super().__init__()
        check_joined_inputs(
            bottom,
            encoder.feature_dim + encoder.latent_dim,
            name="bottom network",
            reads="cat(h, z2), encoder.feature_dim + encoder.latent_dim",
        )
        self.encoder = encoder
        self.bottom = bottom
        self.family_top = family_or_normal(family_top, encoder.latent_dim, encoder.feature_dim)
        self.family_bottom = family_or_normal(family_bottom, bottom.latent_dim, bottom.feature_dim)
        #: what the encoder sees in the holes of a per-element mask (see AmortizedGuide)
        self.fill_value: float | torch.Tensor = 0.0
        to_pyro_module_(self)

    @classmethod
    def build(
        cls,
        encoder: nn.Module,
        latent_dim: int,
        *,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        min_scale: float = 1e-4,
        family: str = "normal",
        top_family: str | None = None,
        top_family_options: dict[str, Any] | None = None,
        **family_options: Any,
    ) -> HierarchicalGuide:
        """The guide with a :class:`~models.networks.GaussianMLP` bottom network
        ``cat(h, z2) -> hidden -> latent_dim`` and families taken from
        :data:`~guides.families.FAMILIES` by name.

        :param encoder: the top encoder; its ``latent_dim`` is the dimension of z2.
        :param latent_dim: dimension of z1.
        :param family: family of both layers, unless ``top_family`` names another for z2.
        :param top_family_options: options of ``top_family`` (only with ``top_family``).
        :param family_options: options of ``family``; also those of the top layer when
            ``top_family`` is not given.
        :raises ValueError: for an unknown family or option.
        """
        bottom = GaussianMLP(
            encoder.feature_dim + encoder.latent_dim, latent_dim, hidden, activation, min_scale
        )
        if top_family is None:
            if top_family_options:
                raise ValueError("top_family_options needs top_family; name the family of z2")
            top_family, top_family_options = family, family_options
        top = make_family(
            top_family, encoder.latent_dim, encoder.feature_dim, **(top_family_options or {})
        )
        low = make_family(family, latent_dim, bottom.feature_dim, **family_options)
        return cls(encoder, bottom, top, low)

    def posterior_top(self, x: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(z_2 \mid x)` for a batch ``x``: batch shape ``(N,)``."""
        h = self.encoder.features(x)
        return self.family_top(*self.encoder.gaussian(h), h)

    def posterior_bottom(self, x: torch.Tensor, z2: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`q(z_1 \mid x, z_2)`; batch shape ``z2.shape[:-1]`` (e.g. ``(K, N)``)."""
        return self._bottom(self.encoder.features(x), z2)

    def _bottom(self, h: torch.Tensor, z2: torch.Tensor) -> dist.TorchDistribution:
        batch = torch.broadcast_shapes(h.shape[:-1], z2.shape[:-1])
        g = self.bottom.features(torch.cat([h.expand(*batch, -1), z2.expand(*batch, -1)], -1))
        return self.family_bottom(*self.bottom.gaussian(g), g)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``"z2"`` and ``"z1"``; returns ``(z1, z2)``. With a per-element ``mask``
        the encoder reads x only where it is observed (the holes hold :attr:`fill_value`);
        a per-datapoint mask is ignored."""
        h = self.encoder.features(fill_missing(x, mask, self.fill_value))
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.family_top(*self.encoder.gaussian(h), h))
            z1 = pyro.sample("z1", self._bottom(h, z2))
        return z1, z2
