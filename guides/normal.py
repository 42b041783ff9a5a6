r"""Amortized diagonal-Normal guide
:math:`q(z \mid x) = \mathcal{N}(z; \mu(x), \mathrm{diag}\,\sigma(x)^2)`."""

from __future__ import annotations

from torch import nn

from guides.amortized import AmortizedGuide
from guides.families import DiagonalNormal

__all__ = ["DiagonalNormalGuide"]


class DiagonalNormalGuide(AmortizedGuide):
    """The mean-field guide: an :class:`~guides.amortized.AmortizedGuide` of the
    :class:`~guides.families.DiagonalNormal` family.

    :param encoder: network with ``features``/``gaussian`` stages, e.g.
        :class:`~guides.encoders.MLPEncoder`.
    :param site: name of the model's latent site this guide samples.
    """

    def __init__(self, encoder: nn.Module, site: str = "z") -> None:
        super().__init__(encoder, DiagonalNormal(encoder.latent_dim, encoder.feature_dim), site)
