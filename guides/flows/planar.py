r"""Amortized planar flows (Rezende & Mohamed, 2015 [1]; amortized as in [2]).

One layer maps

.. math::

    f(z) = z + \hat u \tanh(w^\top z + b), \qquad
    \log\left|\det \frac{\partial f}{\partial z}\right|
        = \log\left(1 + (1 - \tanh^2(w^\top z + b))\, w^\top \hat u\right),

where :math:`u, w \in \mathbb{R}^d` and :math:`b \in \mathbb{R}` are read off the encoder
features :math:`h(x)` by a small network, so every datapoint gets its own flow (the
amortization of van den Berg et al. [2]). The map is invertible when :math:`w^\top\hat u
\ge -1` ([1], appendix A); :math:`\hat u` enforces it:

.. math::

    \hat u = u + \big(m(w^\top u) - w^\top u\big) \frac{w}{\lVert w \rVert^2}, \qquad
    m(a) = -1 + \mathrm{softplus}(a + \log(e - 1)),

so :math:`w^\top \hat u = m(w^\top u) > -1` and the determinant is positive. (Paper [1] uses
:math:`m(a) = -1 + \mathrm{softplus}(a)`; the shift makes :math:`m(0) = 0`, so :math:`u = 0`
gives the identity map, and bounds the correction by :math:`\lVert u \rVert`, so a small
:math:`\lVert w \rVert` cannot blow :math:`\hat u` up.)

**Inverse.** Planar flows have no closed-form inverse ([1]; Pyro's ``Planar`` only inverts
values it produced itself). Writing :math:`\alpha = w^\top z`, the equation
:math:`y = f(z)` projected on :math:`w` reads :math:`\alpha + (w^\top\hat u)\tanh(\alpha + b)
= w^\top y`, a strictly increasing scalar equation solved to machine precision by
:func:`guides.flows._solve.solve_tanh`; then :math:`z = y - \hat u\tanh(\alpha + b)`. So
``log_prob`` works at arbitrary points (e.g. MCMC draws), not only at the flow's own samples.

References

[1] Rezende & Mohamed (2015), *Variational Inference with Normalizing Flows*, ICML.
[2] van den Berg, Hasenclever, Tomczak & Welling (2018), *Sylvester Normalizing Flows for
    Variational Inference*, UAI.
[3] Pyro documentation, ``pyro.distributions.transforms.ConditionalPlanar``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.distributions import Transform, constraints

from guides.flows._checks import check_hidden
from guides.flows._solve import solve_tanh
from guides.flows.base import AmortizedFlow
from models.networks import mlp

__all__ = ["AmortizedPlanar", "PlanarTransform"]

_SHIFT = math.log(math.e - 1)  # softplus(_SHIFT) == 1, so m(0) == 0


class PlanarTransform(Transform):
    r""":math:`f(z) = z + \hat u \tanh(w^\top z + b)` with given (batched) parameters.

    :param u: ``(..., d)``, made into :math:`\hat u` here.
    :param w: ``(..., d)``.
    :param b: ``(..., 1)``.

    The parameters broadcast against the inputs from the left, e.g. ``(N, d)`` parameters
    with ``(K, N, d)`` inputs.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__(cache_size=1)
        alpha = (w * u).sum(-1, keepdim=True)
        self.w = w
        self.b = b
        self.wu_hat = -1 + F.softplus(alpha + _SHIFT)  # w^T u_hat > -1
        norm2 = w.square().sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        self.u_hat = u + (self.wu_hat - alpha) * w / norm2

    def _preactivation(self, z: torch.Tensor) -> torch.Tensor:
        return (self.w * z).sum(-1, keepdim=True) + self.b

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.u_hat * torch.tanh(self._preactivation(z))

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        t = (self.w * y).sum(-1, keepdim=True)
        alpha = solve_tanh(t, self.wu_hat, torch.ones_like(self.wu_hat), self.b)
        return y - self.u_hat * torch.tanh(alpha + self.b)

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        slope = 1 - torch.tanh(self._preactivation(z)).square()
        return torch.log1p(slope * self.wu_hat).squeeze(-1)


class AmortizedPlanar(AmortizedFlow):
    r"""A planar layer whose :math:`u, w, b` come from the context :math:`h(x)`.

    :param latent_dim: dimension d of z.
    :param context_dim: size of the context (the encoder's ``feature_dim``).
    :param hidden: hidden layer sizes of the network :math:`h \mapsto (u, w, b)`; the
        default ``()`` is a linear read-out of the features, as in [2].

    The read-out of :math:`u` starts small (weights scaled by ``1e-2``), so the layer
    starts close to the identity map.
    """

    def __init__(self, latent_dim: int, context_dim: int, *, hidden: Sequence[int] = ()) -> None:
        super().__init__(latent_dim, context_dim)
        self.hidden = check_hidden("hidden", hidden)
        self.net = mlp(context_dim, self.hidden, 2 * latent_dim + 1)
        with torch.no_grad():
            self.net[-1].weight[:latent_dim].mul_(1e-2)
            self.net[-1].bias[:latent_dim].mul_(1e-2)

    def condition(self, context: torch.Tensor) -> PlanarTransform:
        """A fresh :class:`PlanarTransform` (new cache) for the context ``(..., context_dim)``."""
        d = self.latent_dim
        params = self.net(context)
        return PlanarTransform(params[..., :d], params[..., d : 2 * d], params[..., 2 * d :])
