r"""Amortized diagonal-Normal guide
:math:`q(z \mid x) = \mathcal{N}(z; \mu(x), \mathrm{diag}\,\sigma(x)^2)`."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

__all__ = ["GUIDES", "DiagonalNormalGuide"]


class DiagonalNormalGuide(PyroModule):
    """``guide(x, mask=None)`` sampling the latent site ``site`` inside ``plate("data")``.

    :param encoder: network with ``forward(x) -> (loc, scale)``, e.g.
        :class:`~guides.encoders.MLPEncoder`.
    :param site: name of the model's latent site this guide samples.
    """

    def __init__(self, encoder: nn.Module, site: str = "z") -> None:
        super().__init__()
        self.encoder = encoder
        self.site = site
        to_pyro_module_(self)

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """The distribution q(z | x) for a batch ``x``, batch shape ``(N,)``, event ``(d,)``."""
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        qz = self.posterior(x)
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample(self.site, qz)


#: Guides by name; each is ``GUIDES[name](encoder, **options)``.
GUIDES: dict[str, type[nn.Module]] = {"normal": DiagonalNormalGuide}
