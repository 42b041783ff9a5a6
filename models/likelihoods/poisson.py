r"""Poisson likelihood for unbounded counts.

:math:`x_i \sim \mathrm{Poisson}(\lambda_i(z))` with :math:`\log \lambda_i(z)` from the
decoder, :math:`p(x_i \mid z) = \lambda_i^{x_i} e^{-\lambda_i} / x_i!`; mean and variance are
both :math:`\lambda_i`. For counts whose variance exceeds their mean use
:class:`~models.likelihoods.negative_binomial.NegativeBinomialLikelihood`.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from models.likelihoods.counts import CountLikelihood

__all__ = ["PoissonLikelihood"]


class PoissonLikelihood(CountLikelihood):
    r"""Independent Poisson counts, :math:`x_i \sim \mathrm{Poisson}(\exp \ell_i(z))`, with the
    decoder giving the log-rate :math:`\ell_i` (one output per element)."""

    name = "poisson"

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (log_rate,) = self.split_params(params)
        return dist.Poisson(log_rate.exp())
