"""Bernoulli likelihood for binary data."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import constraints
from torch.distributions.utils import _sum_rightmost

from models.likelihoods.base import Likelihood

__all__ = ["BernoulliLikelihood", "IndependentBernoulli"]


class IndependentBernoulli(dist.Independent):
    r"""``Bernoulli(logits=...).to_event(n)`` with a cheaper ``log_prob`` on binary data.

    For :math:`x \in \{0, 1\}`, :math:`\log p(x \mid \ell) = x\ell - \log(1 + e^\ell)
    = -\operatorname{softplus}((1 - 2x)\,\ell)`: one product and one softplus per element,
    summed over the event and then negated, where ``binary_cross_entropy_with_logits`` makes
    a contiguous copy of the data broadcast to the logits' shape and a log-sigmoid with a
    work buffer. Measured on (5000, 6, 784) logits: 0.7x the time and 2/3 of the memory,
    with the same rounding error against float64 (the softplus of a number of either sign is
    computed without cancellation), and gradients equal to float32 rounding.

    The density is that of the support {0, 1}; other values raise under Pyro's validation
    (the engine also checks the data up front), where torch's Bernoulli would return the
    cross entropy of a soft target.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        base = self.base_dist
        if base._validate_args:
            base._validate_sample(value)
        signed_logits = base.logits * (1 - 2 * value)
        return -_sum_rightmost(F.softplus(signed_logits), self.reinterpreted_batch_ndims)


class BernoulliLikelihood(Likelihood):
    r"""Independent Bernoulli pixels, :math:`x_i \sim \mathrm{Bernoulli}(\sigma(\ell_i))`, for
    binary data in {0, 1}."""

    support = constraints.boolean

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split_params(params)
        return dist.Bernoulli(logits=logits)

    def forward(
        self, params: torch.Tensor, feature_mask: torch.Tensor | None = None
    ) -> dist.TorchDistribution:
        if feature_mask is not None:
            return super().forward(params, feature_mask)
        return IndependentBernoulli(self.base_distribution(params), self.event_dim)

    def support_violation(self, x: torch.Tensor) -> str | None:
        if x.numel():
            lo, hi = torch.aminmax(x)  # NaN if any value is: then the slow path
            if bool(lo >= 0) and bool(hi <= 1) and torch.equal(x, x.round()):
                return None  # every value is 0 or 1 (a faster test than the one below)
        outside = (x != 0) & (x != 1)
        if not bool(outside.any()):
            return None
        grey = bool(((x >= 0) & (x <= 1)).all())
        lo, hi = float(x.min()), float(x.max())
        what = "grey-scale values in [0, 1]" if grey else f"values in [{lo:g}, {hi:g}]"
        return (
            f"the 'bernoulli' likelihood needs binary data in {{0, 1}}, but {int(outside.sum())} "
            f"values are not 0 or 1 ({what}). Binarize the data first: statically (sample "
            "x ~ Bernoulli(x / max) once: --binarize static, binarize='static') or dynamically "
            "(new draws every minibatch: --binarize dynamic), or choose a likelihood for this "
            "data: 'continuous_bernoulli' or 'beta' for grey levels in [0, 1], 'binomial' for "
            "integer counts with a known maximum, 'normal' for real values."
        )
