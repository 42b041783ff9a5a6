"""Normal likelihoods for real-valued data."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from models.likelihoods.base import Likelihood

__all__ = ["NormalLikelihood"]


class NormalLikelihood(Likelihood):
    r"""Independent Normal elements with the decoder giving the mean and a learned scale per
    feature (shared across datapoints): :math:`x_i \sim \mathcal{N}(\mu_i(z), \sigma_i^2)`.

    :math:`\sigma_i = \mathrm{softplus}(\rho_i) + \sigma_{\min}`; the floor keeps the density
    bounded when a feature is constant in the training data (e.g. blank image borders).
    """

    def __init__(
        self, data_shape: Sequence[int], init_scale: float = 1.0, min_scale: float = 1e-3
    ) -> None:
        super().__init__(data_shape)
        if not init_scale > min_scale >= 0:
            raise ValueError(
                f"need init_scale > min_scale >= 0, got init_scale={init_scale}, "
                f"min_scale={min_scale}"
            )
        self.min_scale = float(min_scale)
        # inverse softplus of (init_scale - min_scale)
        raw = torch.tensor(init_scale - min_scale).expm1().log()
        self.raw_scale = nn.Parameter(raw.expand(self.data_shape).clone())

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + self.min_scale

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split_params(params)
        return dist.Normal(loc, self.scale.to(loc.dtype))

    def support_violation(self, x: torch.Tensor) -> str | None:
        if bool(torch.isfinite(x).all()):
            return None
        return "the 'normal' likelihood needs finite real values; remove or impute inf/NaN."
