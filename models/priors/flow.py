r"""A flow prior: a standard Normal pushed through learned masked autoregressive flows.

.. math::

    p_\theta(z) = \mathcal{N}\!\left(f_\theta(z);\ 0, I_d\right)
        \left|\det \frac{\partial f_\theta(z)}{\partial z}\right|, \qquad
    f_\theta = g_L \circ \dots \circ g_1,

where each layer :math:`g_l` is an affine autoregressive map (Pyro's
:class:`~pyro.distributions.transforms.AffineAutoregressive` on a MADE,
:class:`~pyro.nn.AutoRegressiveNN`):

.. math::

    g(z)_j = \exp\!\big(s_j(z_{<j})\big)\, z_j + m_j(z_{<j}), \qquad
    \log\left|\det \partial g / \partial z\right| = \textstyle\sum_j s_j(z_{<j}),

with the variable order reversed in every other layer.

**Direction.** A prior is mostly *scored*: every training step evaluates :math:`\log p(z)`
at the guide's draws, values the flow never produced. In this (MAF, [1]) direction that is a
single network pass per layer, :math:`\varepsilon = f_\theta(z)` computed in parallel over the
coordinates; sampling (generation only) inverts each layer coordinate by coordinate, d
passes. So ``forward()`` returns ``TransformedDistribution(N(0, I), [g_1^{-1}, ...])`` built
from the *inverses* of Pyro's ``AffineAutoregressive`` (whose forward direction is the one-pass
one). Used this way as a VAE prior it is the autoregressive-flow prior of [2] (equivalent to an
IAF on the posterior side). The event dimension is 1, and ``log_prob`` of a ``(K, N, d)``
tensor has shape ``(K, N)``.

**Caching.** ``AffineAutoregressive`` caches its last input/output pair (``cache_size=1`` is
fixed) and would return a stale result for the same tensor object after the parameters
changed (an optimiser step, ``load_state_dict``). The learned networks therefore live in
``self.made`` (an ``nn.ModuleList``) and every ``forward()`` wraps them in fresh, parameter-free
transform objects, so no cache outlives the distribution it belongs to. Use one ``forward()``
per evaluation, as with any prior built from parameters.

With ``latent_dim == 1`` a MADE has no earlier coordinate to condition on, so every layer is a
learned elementwise affine map and the prior a learned Normal (Pyro's warning about that is
silenced). The log-scales are clamped to ``[-5, 3]`` in both directions (Pyro's defaults), so
the density stays exactly normalised.

References

[1] Papamakarios, Pavlakou & Murray (2017), *Masked Autoregressive Flow for Density
    Estimation*, NeurIPS.
[2] Chen et al. (2017), *Variational Lossy Autoencoder*, ICLR (autoregressive flow prior).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.nn import AutoRegressiveNN
from torch import nn

from models.priors._checks import check_latent_dim
from models.transforms import DtypeSafeAffineAutoregressive

__all__ = ["FlowPrior"]


class FlowPrior(nn.Module):
    r"""A standard Normal base through ``num_flows`` learned affine autoregressive layers.

    :param latent_dim: dimension d of z.
    :param num_flows: the number L of layers.
    :param hidden: hidden layer sizes of each layer's MADE, each at least ``latent_dim``;
        default ``(3 * latent_dim + 1,)`` (Pyro's default).
    """

    def __init__(
        self,
        latent_dim: int,
        *,
        num_flows: int = 2,
        hidden: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        if isinstance(num_flows, bool) or not isinstance(num_flows, int) or num_flows < 1:
            raise ValueError(f"num_flows must be a positive integer, got {num_flows!r}")
        hidden = [3 * latent_dim + 1] if hidden is None else [int(h) for h in hidden]
        if any(h < latent_dim for h in hidden):
            raise ValueError(
                f"hidden sizes must be at least latent_dim = {latent_dim}, got {list(hidden)}"
            )
        self.num_flows = num_flows
        self.register_buffer("base_loc", torch.zeros(latent_dim))
        self.register_buffer("base_scale", torch.ones(latent_dim))
        order = torch.arange(latent_dim)
        made = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input_dim = 1", category=UserWarning)
            for layer in range(num_flows):
                permutation = order if layer % 2 == 0 else order.flip(0)
                made.append(AutoRegressiveNN(latent_dim, hidden, permutation=permutation))
        self.made = nn.ModuleList(made)

    def forward(self) -> dist.Distribution:
        base = dist.Normal(self.base_loc, self.base_scale).to_event(1)
        # g_1 is applied to z first when scoring, so sampling applies g_L^{-1} first.
        layers = [DtypeSafeAffineAutoregressive(net).inv for net in reversed(self.made)]
        return dist.TransformedDistribution(base, layers)
