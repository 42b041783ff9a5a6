r"""Amortized autoregressive neural spline flows (Durkan et al., 2019 [1]) on Pyro's
``SplineAutoregressive`` [3].

Each coordinate passes through a monotone spline on :math:`[-B, B]` whose knots depend on
the earlier coordinates and on the encoder features :math:`h(x)`:

.. math::

    f(z)_j = g_j(z_j), \qquad (\theta_j)_{j=1}^{d} = \mathrm{MADE}(z, h), \qquad
    \log\left|\det\frac{\partial f}{\partial z}\right| = \sum_j \log g_j'(z_j),

where :math:`g_j` has ``count_bins`` = K bins with widths, heights (softmax-normalised, so the
knots span :math:`[-B, B]^2`) and positive interior derivatives read off
:math:`\theta_j`. With ``order="quadratic"`` each bin is the monotone rational-quadratic
function of [1]: for :math:`\xi = (z - x_k)/w_k \in [0, 1]` and :math:`s_k = h_k / w_k`,

.. math::

    g(z) = y_k + \frac{h_k\,[s_k \xi^2 + \delta_k \xi(1 - \xi)]}
        {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1 - \xi)},

inverted in closed form by solving a quadratic; ``order="linear"`` uses the rational-linear
splines of [2] (one more parameter per bin). Outside :math:`[-B, B]` the map is the
identity (boundary derivatives 1), so ``bound`` should cover where the base Normal puts
its mass. The MADE is Pyro's ``ConditionalAutoRegressiveNN`` (see :mod:`guides.flows.iaf`),
and ``reverse=True`` reverses the autoregressive order. Scoring an arbitrary point inverts
coordinate by coordinate (d network passes); the guide's own samples come from the cache.

References

[1] Durkan, Bekasov, Murray & Papamakarios (2019), *Neural Spline Flows*, NeurIPS.
[2] Dolatabadi, Erfani & Leckie (2020), *Invertible Generative Modeling using Linear
    Rational Splines*, AISTATS.
[3] Pyro documentation, ``pyro.distributions.transforms.ConditionalSplineAutoregressive``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from pyro.distributions.transforms import SplineAutoregressive

from guides.flows._checks import check_bool, check_choice, check_int, check_positive_float
from guides.flows.base import AmortizedFlow
from guides.flows.iaf import made, made_hidden

__all__ = ["ORDERS", "AmortizedSpline"]

#: Spline orders: rational-quadratic [1] or rational-linear [2].
ORDERS = ("quadratic", "linear")

# Pyro gives every bin a width and height of at least 1e-3 of the box.
_MAX_BINS = 1000
# Pyro's interior slopes are softplus(raw) + 1e-3; this raw value makes them 1.
_UNIT_SLOPE = math.log(math.expm1(1 - 1e-3))


class AmortizedSpline(AmortizedFlow):
    """An autoregressive spline layer conditioned on the encoder features.

    :param latent_dim: dimension d of z.
    :param context_dim: size of the context (the encoder's ``feature_dim``).
    :param hidden: hidden layer sizes of the MADE, each at least ``latent_dim``; default
        ``(10 * latent_dim,)``.
    :param count_bins: bins K per spline, 2..1000; default 8.
    :param bound: half-width B of the box :math:`[-B, B]` the spline acts on; default 3.
    :param order: ``"quadratic"`` (default, [1]) or ``"linear"`` ([2]).
    :param reverse: reverse the autoregressive order.

    The MADE's output weights start at a hundredth of their default and its output biases
    at equal bin widths and heights and unit slopes, so the layer starts near the identity
    (Pyro's default initialisation gives steep, spiky random splines).
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        *,
        hidden: Sequence[int] | None = None,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "quadratic",
        reverse: bool = False,
    ) -> None:
        super().__init__(latent_dim, context_dim)
        self.hidden = made_hidden(hidden, latent_dim)
        self.count_bins = check_int("count_bins", count_bins, minimum=2, maximum=_MAX_BINS)
        self.bound = check_positive_float("bound", bound)
        self.order = check_choice("order", order, ORDERS)
        self.reverse = check_bool("reverse", reverse)
        k = self.count_bins
        param_dims = [k, k, k - 1] + ([k] if order == "linear" else [])
        self.arn = made(latent_dim, context_dim, self.hidden, param_dims, reverse=reverse)
        with torch.no_grad():  # start near the identity: equal bins, unit slopes
            for layer in (self.arn.layers[-1], self.arn.skip_layer):
                layer.weight.mul_(1e-2)
            bias = self.arn.layers[-1].bias.view(sum(param_dims), latent_dim)
            bias.zero_()
            bias[2 * k : 3 * k - 1] = _UNIT_SLOPE

    def condition(self, context: torch.Tensor) -> SplineAutoregressive:
        """A fresh Pyro ``SplineAutoregressive`` (new cache) reading ``context``
        ``(..., context_dim)``, broadcast over the inputs' extra batch dimensions."""
        net = partial(self.arn, context=context)
        net.permutation = self.arn.permutation  # type: ignore[attr-defined]
        net.get_permutation = self.arn.get_permutation  # type: ignore[attr-defined]
        return SplineAutoregressive(
            self.latent_dim, net, count_bins=self.count_bins, bound=self.bound, order=self.order
        )
