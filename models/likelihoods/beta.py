r"""Beta likelihood for data in [0, 1] (grey-scale pixels, proportions).

.. math::

    p(x \mid \alpha, \beta) = \frac{x^{\alpha - 1} (1 - x)^{\beta - 1}}{B(\alpha, \beta)},
    \qquad \alpha = \mathrm{softplus}(a) + c_{\min}, \quad
    \beta = \mathrm{softplus}(b) + c_{\min},

with two decoder outputs :math:`(a, b)` per element. The floor :math:`c_{\min}`
(``min_concentration``, default 0.01) keeps :math:`\log B(\alpha, \beta)` and its gradient
(:math:`\psi(\alpha) \approx -1/\alpha`) bounded.

Clamp policy: the Beta density lives on the open interval (0, 1), where it is infinite or zero
at the ends, but real data in [0, 1] (8-bit pixels divided by 255) contain exact 0s and 1s.
Values in the closed interval [0, 1] are accepted and scored as
:math:`\log p(\mathrm{clamp}(x, \epsilon, 1 - \epsilon))` (``eps``, default 1e-4, below the
smallest step 1/255 of 8-bit data), so only values within :math:`\epsilon` of an end move.
On :math:`[\epsilon, 1 - \epsilon]` this is exactly the Beta density; over [0, 1] it
integrates to :math:`1 + O(\epsilon)` for concentrations of order 1 (the tails
:math:`[0, \epsilon)` and :math:`(1 - \epsilon, 1]` are scored at their end points). Samples
are the Beta's own, in [0, 1].

Caveat: values repeated exactly at an end (blank image borders) let a decoder grow
:math:`\alpha, \beta` without bound and put a spike at :math:`\epsilon`, so the log density is
unbounded there, as for a Normal with a learned scale; 'continuous_bernoulli' or a discrete
likelihood ('binomial', 'categorical', 'discretized_logistic') avoids this for such data.

References:

[1] N. L. Johnson, S. Kotz and N. Balakrishnan, "Continuous Univariate Distributions",
    vol. 2, 2nd ed., Wiley 1995, ch. 25 (Beta distributions).
[2] G. Loaiza-Ganem and J. P. Cunningham, "The continuous Bernoulli: fixing a pervasive
    error in variational autoencoders", NeurIPS 2019 (Beta decoders as a baseline).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import constraints

from models.likelihoods.base import Likelihood

__all__ = ["BetaLikelihood", "ClampedBeta"]


class ClampedBeta(dist.Beta):
    r"""Pyro's ``Beta`` whose ``log_prob`` clamps values into :math:`[\epsilon, 1 - \epsilon]`
    first; its support is the closed interval [0, 1]."""

    support = constraints.unit_interval

    def __init__(
        self,
        concentration1: torch.Tensor,
        concentration0: torch.Tensor,
        eps: float = 1e-4,
        validate_args: bool | None = None,
    ) -> None:
        self.eps = float(eps)
        super().__init__(concentration1, concentration0, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> ClampedBeta:
        new = self._get_checked_instance(ClampedBeta, _instance)
        new.eps = self.eps
        return super().expand(batch_shape, _instance=new)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return super().log_prob(value.clamp(self.eps, 1 - self.eps))


class BetaLikelihood(Likelihood):
    r"""Independent Beta elements for data in [0, 1]; two decoder outputs per element, read as
    the concentrations :math:`\alpha` (of x) and :math:`\beta` (of 1 - x).

    :param eps: values are clamped into ``[eps, 1 - eps]`` before scoring, so exact 0s and 1s
        are accepted; ``0 < eps < 0.5``.
    :param min_concentration: floor added to both softplus concentrations; ``>= 0``.
    """

    params_per_element = 2
    support = constraints.unit_interval

    def __init__(
        self, data_shape: Sequence[int], eps: float = 1e-4, min_concentration: float = 1e-2
    ) -> None:
        super().__init__(data_shape)
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
        if not 0 <= min_concentration < float("inf"):
            raise ValueError(
                f"min_concentration must be finite and >= 0, got {min_concentration!r}"
            )
        self.eps = float(eps)
        self.min_concentration = float(min_concentration)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        a, b = self.split_params(params)
        floor = self.min_concentration
        return ClampedBeta(F.softplus(a) + floor, F.softplus(b) + floor, eps=self.eps)

    def support_violation(self, x: torch.Tensor) -> str | None:
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            return (
                f"the 'beta' likelihood needs values in [0, 1], but {int(bad.sum())} values are "
                "inf or NaN; remove or impute them (or fill them with any value in [0, 1] and "
                "pass mask=... with False where a value is missing)."
            )
        outside = (x < 0) | (x > 1)
        if not bool(outside.any()):
            return None
        lo, hi = float(x.min()), float(x.max())
        return (
            f"the 'beta' likelihood needs values in [0, 1] (exact 0s and 1s are clamped to "
            f"[{self.eps:g}, 1 - {self.eps:g}]), but {int(outside.sum())} values are outside it "
            f"(data range [{lo:g}, {hi:g}]). Rescale the data into [0, 1] (e.g. 8-bit pixels "
            "x / 255), or choose a likelihood for this data: 'binomial', 'categorical' or "
            "'discretized_logistic' for integer intensities, 'normal' for real values."
        )
