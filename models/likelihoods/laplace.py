r"""Laplace likelihood for real-valued data with heavier-than-Normal tails.

:math:`x_i \sim \mathrm{Laplace}(\mu_i(z), b_i)`, density
:math:`p(x_i \mid z) = \frac{1}{2 b_i} \exp(-|x_i - \mu_i(z)| / b_i)`, so
:math:`-\log p` is the absolute (L1) reconstruction error over :math:`b_i` plus
:math:`\log 2 b_i`: the probabilistic counterpart of an L1 loss, less swayed by outliers
than the Normal's squared error.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from models.likelihoods.real import LearnedScaleLikelihood

__all__ = ["LaplaceLikelihood"]


class LaplaceLikelihood(LearnedScaleLikelihood):
    r"""Independent Laplace elements with the decoder giving the location and a learned scale
    per feature (shared across datapoints): :math:`x_i \sim \mathrm{Laplace}(\mu_i(z), b_i)`,
    :math:`b_i = \mathrm{softplus}(\rho_i) + b_{\min}`, the parametrisation of
    :class:`~models.likelihoods.normal.NormalLikelihood`.

    :param init_scale: :math:`b` at initialisation; default 1 (standard deviation
        :math:`\sqrt{2}\, b`).
    :param min_scale: the floor :math:`b_{\min}`; default ``1e-3``.
    """

    name = "laplace"

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split_params(params)
        return dist.Laplace(loc, self.scale.to(loc.dtype))
