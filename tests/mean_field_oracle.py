r"""A diagonal Gaussian guide for the linear-Gaussian oracle, with its ELBO in closed form.

For :math:`q(z \mid x_n) = \mathcal{N}(m_n, \mathrm{diag}(v))` and the model of
:mod:`tests.oracle` (:math:`z \sim \mathcal{N}(0, I)`, :math:`x \mid z \sim
\mathcal{N}(Wz + b, s^2 I)`):

.. math::

    \mathbb{E}_q[\log p(x_n \mid z)] = \log \mathcal{N}(x_n; W m_n + b, s^2 I)
        - \frac{1}{2 s^2} \sum_{d,j} W_{dj}^2 v_j, \qquad
    \mathrm{KL}(q \,\|\, p(z)) = \frac{1}{2} \sum_j (v_j + m_{nj}^2 - 1 - \log v_j).

The guide is a ``Normal(...).to_event(1)``, so Pyro's ``TraceMeanField_ELBO`` finds the
analytic KL against the model's ``Normal(0, 1).to_event(1)`` prior.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch

from tests.oracle import LinearGaussian


def diagonal_moments(
    oracle: LinearGaussian, x: torch.Tensor, mean_shift: float, cov_scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, v)``: guide means ``(N, d)`` and variances ``(d,)``."""
    mean = oracle.posterior_mean(x) + mean_shift
    var = oracle.posterior_cov().diagonal() * cov_scale
    return mean, var


def diagonal_guide(oracle: LinearGaussian, mean_shift: float, cov_scale: float) -> Callable:
    def guide(x: torch.Tensor, mask=None) -> None:
        mean, var = diagonal_moments(oracle, x, mean_shift, cov_scale)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(mean, var.sqrt()).to_event(1))

    return guide


def expected_log_likelihood(
    oracle: LinearGaussian, x: torch.Tensor, mean_shift: float, cov_scale: float
) -> torch.Tensor:
    """:math:`\\mathbb{E}_q[\\log p(x_n \\mid z)]` per datapoint."""
    mean, var = diagonal_moments(oracle, x, mean_shift, cov_scale)
    at_mean = dist.Normal(mean @ oracle.W.T + oracle.b, oracle.s).log_prob(x).sum(-1)
    return at_mean - (oracle.W.pow(2) @ var).sum() / (2 * oracle.s**2)


def kl_to_prior(
    oracle: LinearGaussian, x: torch.Tensor, mean_shift: float, cov_scale: float
) -> torch.Tensor:
    """:math:`\\mathrm{KL}(q(z \\mid x_n) \\| \\mathcal{N}(0, I))` per datapoint."""
    mean, var = diagonal_moments(oracle, x, mean_shift, cov_scale)
    return 0.5 * (var + mean.pow(2) - 1 - var.log()).sum(-1)


def closed_form_elbo(
    oracle: LinearGaussian, x: torch.Tensor, mean_shift: float, cov_scale: float
) -> torch.Tensor:
    """The ELBO per datapoint."""
    return expected_log_likelihood(oracle, x, mean_shift, cov_scale) - kl_to_prior(
        oracle, x, mean_shift, cov_scale
    )
