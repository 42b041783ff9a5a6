r"""Normalizing-flow posterior families: the encoder's Gaussian pushed through amortized
flows.

.. math::

    z_0 \sim \mathcal{N}(\mu(x), \mathrm{diag}\,\sigma(x)^2), \qquad
    z = f_L \circ \dots \circ f_1(z_0), \qquad
    \log q(z \mid x) = \log \mathcal{N}(z_0; \mu, \mathrm{diag}\,\sigma^2)
        - \sum_{l=1}^{L} \log\left|\det \frac{\partial f_l}{\partial z_{l-1}}\right|,

where every layer :math:`f_l` reads its parameters off the encoder features :math:`h(x)`
(:mod:`guides.flows`), so the flow itself is amortized [1, 3]. The distribution is Pyro's
``TransformedDistribution``: sampling caches each layer's input and output, so the guide's
own samples are scored exactly without inversion; points from elsewhere (MCMC draws, other
guides) are scored through the layers' inverses, analytic (IAF, splines) or numerical to
machine precision (planar, Sylvester). Every :meth:`FlowFamily.forward` builds fresh
transform objects, so no cache outlives the parameters it was computed with.

References

[1] Rezende & Mohamed (2015), *Variational Inference with Normalizing Flows*, ICML.
[2] Kingma et al. (2016), *Improved Variational Inference with Inverse Autoregressive
    Flow*, NeurIPS.
[3] van den Berg, Hasenclever, Tomczak & Welling (2018), *Sylvester Normalizing Flows for
    Variational Inference*, UAI.
[4] Durkan, Bekasov, Murray & Papamakarios (2019), *Neural Spline Flows*, NeurIPS.
[5] Pyro documentation, ``pyro.distributions.TransformedDistribution`` and
    ``pyro.distributions.transforms``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from guides.families.base import Family
from guides.flows import AmortizedIAF, AmortizedPlanar, AmortizedSpline, AmortizedSylvester
from guides.flows._checks import check_int
from guides.flows.base import AmortizedFlow

__all__ = ["FlowFamily", "IAFFamily", "PlanarFamily", "SplineFamily", "SylvesterFamily"]


class FlowFamily(Family):
    """The Gaussian base through ``num_flows`` amortized layers (see the module docs).

    Subclasses call ``super().__init__`` and then fill :attr:`flows` with
    ``num_flows`` layers (:meth:`add_flows`, or :meth:`build_flows` for layers of one
    class and options), each an :class:`~guides.flows.base.AmortizedFlow` whose
    ``condition(h)`` returns a fresh transform.

    :param num_flows: the depth L, at least 1; default 2.
    """

    def __init__(self, latent_dim: int, feature_dim: int, *, num_flows: int = 2) -> None:
        super().__init__(latent_dim, feature_dim)
        self.num_flows = check_int("num_flows", num_flows)
        self.flows = nn.ModuleList()

    def add_flows(self, flows: Sequence[AmortizedFlow]) -> None:
        """Install the layers, applied in the given order to the base draw."""
        if len(flows) != self.num_flows:
            raise ValueError(f"expected {self.num_flows} flows, got {len(flows)}")
        self.flows = nn.ModuleList(flows)

    def build_flows(
        self,
        layer: Callable[..., AmortizedFlow],
        *,
        alternate: bool = False,
        **options: Any,
    ) -> None:
        """Install ``num_flows`` layers ``layer(latent_dim, feature_dim, **options)``, built
        in order; with ``alternate=True`` each also gets ``reverse=bool(i % 2)``, so the
        autoregressive order is reversed in every other layer."""
        flows = []
        for i in range(self.num_flows):
            order = {"reverse": bool(i % 2)} if alternate else {}
            flows.append(layer(self.latent_dim, self.feature_dim, **options, **order))
        self.add_flows(flows)

    def forward(
        self, loc: torch.Tensor, scale: torch.Tensor, features: torch.Tensor
    ) -> dist.TorchDistribution:
        if len(self.flows) != self.num_flows:
            raise RuntimeError(f"{type(self).__name__} has no flows; call add_flows first")
        base = dist.Normal(loc, scale).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(features) for flow in self.flows])


class IAFFamily(FlowFamily):
    """Inverse autoregressive flow [2] conditioned on h(x): ``num_flows`` MADE layers
    (:class:`~guides.flows.AmortizedIAF`), the order reversed in every other one.

    :param num_flows: depth; default 2.
    :param hidden: hidden sizes of each MADE, each >= ``latent_dim``; default
        ``(10 * latent_dim,)``.
    :param stable: the sigmoid-gated update of [2] (default) or the clamped affine one.
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        *,
        num_flows: int = 2,
        hidden: Sequence[int] | None = None,
        stable: bool = True,
    ) -> None:
        super().__init__(latent_dim, feature_dim, num_flows=num_flows)
        self.build_flows(AmortizedIAF, alternate=True, hidden=hidden, stable=stable)


class PlanarFamily(FlowFamily):
    """Amortized planar flows [1, 3] (:class:`~guides.flows.AmortizedPlanar`).

    :param num_flows: depth; default 2.
    :param hidden: hidden sizes of the network h -> (u, w, b); default ``()``, linear.
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        *,
        num_flows: int = 2,
        hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(latent_dim, feature_dim, num_flows=num_flows)
        self.build_flows(AmortizedPlanar, hidden=hidden)


class SylvesterFamily(FlowFamily):
    """Amortized Sylvester flows [3] (:class:`~guides.flows.AmortizedSylvester`).

    :param num_flows: depth; default 2.
    :param kind: ``"householder"`` (H-SNF, default) or ``"orthogonal"`` (O-SNF).
    :param num_householder: reflections per layer for H-SNF; default 2.
    :param num_columns: columns M of Q for O-SNF, 1..latent_dim; default latent_dim.
    :param hidden: hidden sizes of the network reading the layer's parameters; default
        ``()``, linear.
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        *,
        num_flows: int = 2,
        kind: str = "householder",
        num_householder: int | None = None,
        num_columns: int | None = None,
        hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(latent_dim, feature_dim, num_flows=num_flows)
        self.build_flows(
            AmortizedSylvester,
            kind=kind,
            num_householder=num_householder,
            num_columns=num_columns,
            hidden=hidden,
        )


class SplineFamily(FlowFamily):
    """Autoregressive neural spline flows [4] conditioned on h(x)
    (:class:`~guides.flows.AmortizedSpline`), the order reversed in every other layer.

    :param num_flows: depth; default 2.
    :param hidden: hidden sizes of each MADE, each >= ``latent_dim``; default
        ``(10 * latent_dim,)``.
    :param count_bins: bins per spline, 2..1000; default 8.
    :param bound: the splines act on ``[-bound, bound]`` (identity outside); default 3.
    :param order: ``"quadratic"`` (default) or ``"linear"`` rational splines.
    """

    def __init__(
        self,
        latent_dim: int,
        feature_dim: int,
        *,
        num_flows: int = 2,
        hidden: Sequence[int] | None = None,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "quadratic",
    ) -> None:
        super().__init__(latent_dim, feature_dim, num_flows=num_flows)
        self.build_flows(
            AmortizedSpline,
            alternate=True,
            hidden=hidden,
            count_bins=count_bins,
            bound=bound,
            order=order,
        )
