"""Bernoulli likelihood for binary data."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models.likelihoods.base import Likelihood

__all__ = ["BernoulliLikelihood"]


class BernoulliLikelihood(Likelihood):
    r"""Independent Bernoulli pixels, :math:`x_i \sim \mathrm{Bernoulli}(\sigma(\ell_i))`, for
    binary data in {0, 1}."""

    support = constraints.boolean

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split_params(params)
        return dist.Bernoulli(logits=logits)

    def support_violation(self, x: torch.Tensor) -> str | None:
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
