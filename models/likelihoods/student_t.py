r"""Student-t likelihood for real-valued data with outliers.

:math:`x_i \sim t_{\nu_i}(\mu_i(z), \sigma_i)`, density

.. math::

    p(x_i \mid z) = \frac{\Gamma(\frac{\nu_i + 1}{2})}
        {\Gamma(\frac{\nu_i}{2}) \sqrt{\pi \nu_i}\, \sigma_i}
        \Bigl(1 + \frac{(x_i - \mu_i(z))^2}{\nu_i \sigma_i^2}\Bigr)^{-\frac{\nu_i + 1}{2}},

a scale mixture of Normals whose polynomial tails make the fit robust to outliers [1]; it
tends to the Normal as :math:`\nu \to \infty` and is the Cauchy at :math:`\nu = 1`.

References:

1. H. Takahashi, T. Iwata, Y. Yamanaka, M. Yamada, S. Yagi (2018). Student-t Variational
   Autoencoder for Robust Density Estimation. IJCAI. (There the decoder outputs the degrees
   of freedom per datapoint; here they are learned per feature, like the scale.)
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch

from models.likelihoods.positive import positive_parameter, softplus_floor
from models.likelihoods.real import LearnedScaleLikelihood

__all__ = ["StudentTLikelihood"]


class StudentTLikelihood(LearnedScaleLikelihood):
    r"""Independent Student-t elements with the decoder giving the location, and a learned
    scale and learned degrees of freedom per feature (shared across datapoints):

    .. math::

        x_i \sim t_{\nu_i}(\mu_i(z), \sigma_i), \quad
        \sigma_i = \mathrm{softplus}(\rho_i) + \sigma_{\min}, \quad
        \nu_i = \mathrm{softplus}(\eta_i) + \nu_{\min}.

    Degrees of freedom are per feature (``raw_df`` has ``data_shape``) so each feature finds
    its own tail weight, e.g. outlier-prone pixels heavier tails than clean ones. The floor
    :math:`\nu_{\min} = 1` (default) keeps :math:`\nu > 1`, so the mean :math:`\mu_i(z)`
    exists and ``VAE.generate`` can report it; the variance
    :math:`\sigma^2 \nu / (\nu - 2)` exists only once :math:`\nu > 2`.

    :param init_scale: :math:`\sigma` at initialisation; default 1.
    :param min_scale: the floor :math:`\sigma_{\min}`; default ``1e-3``.
    :param init_df: :math:`\nu` at initialisation; default 5 (moderately heavy tails).
    :param min_df: the floor :math:`\nu_{\min}`; default 1. Need ``init_df > min_df >= 0``.
    """

    name = "student_t"

    def __init__(
        self,
        data_shape: Sequence[int],
        init_scale: float = 1.0,
        min_scale: float = 1e-3,
        init_df: float = 5.0,
        min_df: float = 1.0,
    ) -> None:
        super().__init__(data_shape, init_scale=init_scale, min_scale=min_scale)
        self.raw_df = positive_parameter(
            init_df, min_df, self.data_shape, init_name="init_df", floor_name="min_df"
        )
        self.min_df = float(min_df)

    @property
    def df(self) -> torch.Tensor:
        """The per-feature degrees of freedom, shape ``data_shape``."""
        return softplus_floor(self.raw_df, self.min_df)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split_params(params)
        return dist.StudentT(self.df.to(loc.dtype), loc, self.scale.to(loc.dtype))
