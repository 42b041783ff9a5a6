r"""Negative binomial likelihood for over-dispersed counts (e.g. single-cell RNA-seq).

The mean/inverse-dispersion parametrisation of scVI [1]: with mean
:math:`\mu > 0` and inverse dispersion :math:`r > 0`,

.. math::

    p(x \mid \mu, r) = \frac{\Gamma(x + r)}{\Gamma(r)\, x!}
        \Bigl(\frac{r}{r + \mu}\Bigr)^{r} \Bigl(\frac{\mu}{r + \mu}\Bigr)^{x},
    \qquad \mathbb{E}[x] = \mu, \quad \mathrm{Var}[x] = \mu + \mu^2 / r,

a Gamma-Poisson mixture (:math:`\lambda \sim \mathrm{Gamma}(r, r/\mu)`,
:math:`x \sim \mathrm{Poisson}(\lambda)`) that tends to the Poisson as :math:`r \to \infty`.
In torch's ``NegativeBinomial(total_count, logits)`` (failures ``total_count``, success
log-odds ``logits``, mean ``total_count * exp(logits)``) this is
``total_count = r`` and ``logits = log(mu) - log(r)``.

References:

1. R. Lopez, J. Regier, M. B. Cole, M. I. Jordan, N. Yosef (2018). Deep generative modeling
   for single-cell transcriptomics. Nature Methods 15, 1053-1058.
2. A. C. Cameron, P. K. Trivedi (2013). Regression Analysis of Count Data, 2nd ed.,
   chapter 3 (the NB2 model).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch

from models.likelihoods.counts import CountLikelihood
from models.likelihoods.positive import positive_parameter, softplus_floor

__all__ = ["NegativeBinomialLikelihood"]


class NegativeBinomialLikelihood(CountLikelihood):
    r"""Independent negative binomial counts with the decoder giving the log-mean
    :math:`\log \mu_i(z)` (one output per element) and a learned inverse dispersion per
    feature, shared across datapoints as in scVI's gene-wise dispersion [1]:

    .. math::

        x_i \sim \mathrm{NB}\bigl(\mu_i(z), r_i\bigr), \quad
        r_i = \mathrm{softplus}(\rho_i) + r_{\min},

    built as ``NegativeBinomial(total_count=r, logits=log_mu - log(r))`` so its mean is
    exactly :math:`\mu_i(z)` and its variance :math:`\mu + \mu^2 / r`.

    :param init_total_count: :math:`r` at initialisation; default 1 (variance
        :math:`\mu + \mu^2`).
    :param min_total_count: the floor :math:`r_{\min}`; default ``1e-4``. Need
        ``init_total_count > min_total_count >= 0``.
    """

    name = "negative_binomial"

    def __init__(
        self,
        data_shape: Sequence[int],
        init_total_count: float = 1.0,
        min_total_count: float = 1e-4,
    ) -> None:
        super().__init__(data_shape)
        self.raw_total_count = positive_parameter(
            init_total_count,
            min_total_count,
            self.data_shape,
            init_name="init_total_count",
            floor_name="min_total_count",
        )
        self.min_total_count = float(min_total_count)

    @property
    def total_count(self) -> torch.Tensor:
        """The per-feature inverse dispersion :math:`r`, shape ``data_shape``."""
        return softplus_floor(self.raw_total_count, self.min_total_count)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (log_mean,) = self.split_params(params)
        total_count = self.total_count.to(log_mean.dtype)
        logits = log_mean - total_count.log()
        return dist.NegativeBinomial(total_count=total_count, logits=logits)
