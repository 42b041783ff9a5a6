r"""Amortized guides :math:`q(z \mid x)` of any posterior family.

The guide runs the encoder once, ``h = encoder.features(x)`` and ``(loc, scale) =
encoder.gaussian(h)``, and hands both to a :class:`~guides.families.Family`, which returns
the distribution of z. The family is what ``--guide NAME`` picks.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from guides.families import FAMILIES, Family
from guides.family_factory import make_family
from models.masking import fill_missing

__all__ = ["AmortizedGuide", "make_guide"]


class AmortizedGuide(PyroModule):
    """``guide(x, mask=None)`` sampling the latent site ``site`` inside ``plate("data")``.

    :param encoder: a network with ``features(x) -> h`` and ``gaussian(h) -> (loc, scale)``,
        e.g. :class:`~guides.encoders.MLPEncoder`.
    :param family: the posterior family; by default the diagonal Normal.
    :param site: name of the model's latent site this guide samples.
    :param fill_value: what the encoder sees in place of missing elements when the guide is
        given a per-element mask (``False`` = missing): a number, or a tensor broadcasting
        to one datapoint such as the per-feature training mean. The attribute can be
        changed after construction (it is not saved with the parameters).
    """

    def __init__(
        self,
        encoder: nn.Module,
        family: Family | None = None,
        site: str = "z",
        fill_value: float | torch.Tensor = 0.0,
    ):
        super().__init__()
        self.encoder = encoder
        self.family = family if family is not None else FAMILIES["normal"](1, 1)
        self.site = site
        self.fill_value = fill_value
        to_pyro_module_(self)

    def posterior(self, x: torch.Tensor) -> dist.TorchDistribution:
        """The distribution q(z | x) for a batch ``x``: batch shape ``(N,)``, event ``(d,)``."""
        h = self.encoder.features(x)
        loc, scale = self.encoder.gaussian(h)
        return self.family(loc, scale, h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sample the latent site from q(z | x). With a per-element ``mask`` the encoder
        reads x only where it is observed: the holes hold :attr:`fill_value`."""
        qz = self.posterior(fill_missing(x, mask, self.fill_value))
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample(self.site, qz)


def make_guide(family: str, encoder: nn.Module, site: str = "z", **options: Any) -> AmortizedGuide:
    """An :class:`AmortizedGuide` of the family registered as ``family``, sized from the
    encoder's ``latent_dim`` and ``feature_dim``.

    :raises ValueError: for an unknown family or an option it does not take (the message
        lists its options).
    """
    return AmortizedGuide(
        encoder, make_family(family, encoder.latent_dim, encoder.feature_dim, **options), site
    )
