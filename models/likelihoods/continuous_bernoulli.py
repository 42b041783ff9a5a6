r"""Continuous Bernoulli likelihood for data in [0, 1] (grey-scale pixels).

The continuous Bernoulli [1] is the Bernoulli mass function read as a density on
:math:`[0, 1]` and normalised:

.. math::

    p(x \mid \lambda) = C(\lambda)\, \lambda^x (1 - \lambda)^{1 - x}, \qquad
    C(\lambda) = \frac{2 \tanh^{-1}(1 - 2\lambda)}{1 - 2\lambda}, \quad C(1/2) = 2.

The decoder gives the logit :math:`\ell = \log\frac{\lambda}{1 - \lambda}`, in which
:math:`\tanh^{-1}(1 - 2\lambda) = -\ell/2` and :math:`1 - 2\lambda = -\tanh(\ell/2)`, so

.. math::

    \log C = \log \frac{\ell}{\tanh(\ell/2)}
           = \log \frac{|\ell|}{1 - e^{-|\ell|}} + \log\left(1 + e^{-|\ell|}\right)
           = \log 2 + \frac{\ell^2}{12} - \frac{7 \ell^4}{1440} + O(\ell^6).

Torch's ``ContinuousBernoulli`` computes :math:`\log C`, the mean and the inverse cdf from
:math:`\lambda` clamped to :math:`[\epsilon, 1 - \epsilon]` (machine epsilon): for
:math:`|\ell| \gtrsim 15` in float32 (:math:`\gtrsim 30` in float64) :math:`\log C` is then
wrong, by 1.1 nats at :math:`|\ell| = 50` in float32 (the density no longer normalises), and
the mean by several hundredths. :class:`StableContinuousBernoulli` computes all three from
the logit instead (series near :math:`\ell = 0`), accurate to a few ulp for every logit, so
no clamping of the logits is needed (torch's Taylor branch for
:math:`\lambda \in (0.499, 0.501]` is not used). The inverse cdf is
:math:`\log(1 + u (e^{\ell} - 1)) / \ell`, written :math:`1 + \log(u + (1 - u) e^{-\ell}) / \ell`
for :math:`\ell > 1`; the mean is :math:`(1 - e^{-\ell})^{-1} - \ell^{-1}`.

References:

[1] G. Loaiza-Ganem and J. P. Cunningham, "The continuous Bernoulli: fixing a pervasive
    error in variational autoencoders", NeurIPS 2019.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import constraints

from models.likelihoods.base import Likelihood

__all__ = ["ContinuousBernoulliLikelihood", "StableContinuousBernoulli", "log_normalizer"]

_SERIES_BELOW = 1e-2  # log C series: next term 3.4e-4 l^6 < 1e-15 here
_MEAN_SERIES_BELOW = 1e-1  # mean series: next term l^7 / 1209600 < 1e-14 here
_ICDF_SERIES_BELOW = 1e-6  # inverse-cdf series: next term O(l^2) < 1e-12 here


def log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    r""":math:`\log C(\sigma(\ell))`, stable for every logit (even in :math:`\ell`)."""
    a = logits.abs()
    series = math.log(2.0) + a.square() / 12 - 7 * a.pow(4) / 1440
    safe = torch.where(a < _SERIES_BELOW, torch.ones_like(a), a)  # no 0/0 in either branch
    exact = torch.log(safe / -torch.expm1(-safe)) + F.softplus(-safe)
    return torch.where(a < _SERIES_BELOW, series, exact)


class StableContinuousBernoulli(dist.ContinuousBernoulli):
    """Pyro's ``ContinuousBernoulli`` with the log normaliser, mean and inverse cdf (hence
    ``sample`` and ``rsample``) computed from the logits; ``cdf``, ``variance`` and
    ``entropy`` are torch's."""

    def _cont_bern_log_norm(self) -> torch.Tensor:
        return log_normalizer(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        l = self.logits  # noqa: E741
        small = l.abs() < _MEAN_SERIES_BELOW
        series = 0.5 + l / 12 - l.pow(3) / 720 + l.pow(5) / 30240
        safe = torch.where(small, torch.ones_like(l), l)
        return torch.where(small, series, -1 / torch.expm1(-safe) - 1 / safe)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        l, u = torch.broadcast_tensors(self.logits, value)  # noqa: E741
        small, big = l.abs() < _ICDF_SERIES_BELOW, l > 1
        safe = torch.where(small | big, torch.ones_like(l), l)
        direct = torch.log1p(u * torch.expm1(safe)) / safe
        big_l = torch.where(big, l, torch.ones_like(l))  # exp(l) would overflow: factor it out
        upper = 1 + torch.logaddexp(torch.log(u), torch.log1p(-u) - big_l) / big_l
        x = torch.where(small, u + l * u * (1 - u) / 2, torch.where(big, upper, direct))
        return x.clamp(0.0, 1.0)


class ContinuousBernoulliLikelihood(Likelihood):
    r"""Independent continuous Bernoulli elements,
    :math:`x_i \sim \mathcal{CB}(\sigma(\ell_i))`, for data in [0, 1]; one logit per element.
    """

    params_per_element = 1
    support = constraints.unit_interval

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split_params(params)
        return StableContinuousBernoulli(logits=logits)

    def support_violation(self, x: torch.Tensor) -> str | None:
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            return (
                f"the 'continuous_bernoulli' likelihood needs values in [0, 1], but "
                f"{int(bad.sum())} values are inf or NaN; remove or impute them (or fill them "
                "with any value in [0, 1] and pass mask=... with False where a value is missing)."
            )
        outside = (x < 0) | (x > 1)
        if not bool(outside.any()):
            return None
        lo, hi = float(x.min()), float(x.max())
        return (
            f"the 'continuous_bernoulli' likelihood needs values in [0, 1], but "
            f"{int(outside.sum())} values are outside it (data range [{lo:g}, {hi:g}]). Rescale "
            "the data into [0, 1] (e.g. 8-bit pixels x / 255), or choose a likelihood for this "
            "data: 'binomial', 'categorical' or 'discretized_logistic' for integer intensities, "
            "'normal' for real values."
        )
