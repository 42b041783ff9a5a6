r"""Normal likelihoods for real-valued data.

Three ways to set the scale :math:`\sigma` of :math:`x_i \sim \mathcal{N}(\mu_i(z), \sigma^2)`:

* ``"normal"`` (:class:`NormalLikelihood`): learned per feature, shared across datapoints;
* ``"normal_fixed"`` (:class:`FixedNormalLikelihood`): given, not learned (``scale=1`` makes
  :math:`-\log p` the squared error / 2 plus a constant);
* ``"normal_heteroscedastic"`` (:class:`HeteroscedasticNormalLikelihood`): output by the
  decoder for every datapoint and element [1, 2].

With a learned or decoded scale the likelihood of a VAE is unbounded (a decoder that puts
:math:`\mu_i(z) = x_i` for one datapoint and shrinks :math:`\sigma` drives
:math:`\log p \to \infty`) [3]; every scale here therefore carries a floor ``min_scale``.

References:

1. D. A. Nix, A. S. Weigend (1994). Estimating the mean and variance of the target
   probability distribution. ICNN.
2. D. P. Kingma, M. Welling (2014). Auto-Encoding Variational Bayes. ICLR. Appendix C.2
   (Gaussian MLP decoder).
3. P.-A. Mattei, J. Frellsen (2018). Leveraging the exact likelihood of deep latent variable
   models. NeurIPS.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch

from models.likelihoods.positive import softplus_floor
from models.likelihoods.real import LearnedScaleLikelihood, RealLikelihood

__all__ = ["FixedNormalLikelihood", "HeteroscedasticNormalLikelihood", "NormalLikelihood"]


class NormalLikelihood(LearnedScaleLikelihood):
    r"""Independent Normal elements with the decoder giving the mean and a learned scale per
    feature (shared across datapoints): :math:`x_i \sim \mathcal{N}(\mu_i(z), \sigma_i^2)`.

    :math:`\sigma_i = \mathrm{softplus}(\rho_i) + \sigma_{\min}`; the floor keeps the density
    bounded when a feature is constant in the training data (e.g. blank image borders).
    """

    name = "normal"

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split_params(params)
        return dist.Normal(loc, self.scale.to(loc.dtype))


class FixedNormalLikelihood(RealLikelihood):
    r"""Independent Normal elements with a given, fixed scale:
    :math:`x_i \sim \mathcal{N}(\mu_i(z), \sigma_i^2)`, so
    :math:`-\log p(x \mid z) = \sum_i (x_i - \mu_i(z))^2 / (2\sigma_i^2) + \mathrm{const}`.

    The choice of :math:`\sigma` weighs reconstruction against the KL term (a small
    :math:`\sigma` acts like a small :math:`\beta` in a :math:`\beta`-VAE); it is a model
    choice, not fitted, and stored as a buffer so ``.to(device)`` and checkpoints carry it.

    :param scale: :math:`\sigma > 0`, one number or one per feature (broadcast to
        ``data_shape``); default 1.
    """

    name = "normal_fixed"

    def __init__(
        self, data_shape: Sequence[int], scale: float | Sequence[float] | torch.Tensor = 1.0
    ) -> None:
        super().__init__(data_shape)
        value = torch.as_tensor(scale, dtype=torch.get_default_dtype())
        try:
            value = value.expand(self.data_shape).clone()
        except RuntimeError:
            raise ValueError(
                f"scale of shape {tuple(value.shape)} does not broadcast to data_shape "
                f"{self.data_shape}"
            ) from None
        if not bool(((value > 0) & torch.isfinite(value)).all()):
            raise ValueError(f"scale must be positive and finite, got {scale!r}")
        self.register_buffer("scale", value)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (loc,) = self.split_params(params)
        return dist.Normal(loc, self.scale.to(loc.dtype))


class HeteroscedasticNormalLikelihood(RealLikelihood):
    r"""Independent Normal elements with mean and scale both from the decoder [1, 2]:
    :math:`x_i \sim \mathcal{N}(\mu_i(z), \sigma_i(z)^2)` with
    :math:`\sigma_i(z) = \mathrm{softplus}(\rho_i(z)) + \sigma_{\min}`.

    Two decoder outputs per element, ``(loc, raw_scale)``. The floor :math:`\sigma_{\min}`
    bounds the density, which is otherwise unbounded for a VAE [3].

    :param min_scale: :math:`\sigma_{\min} > 0`; default ``1e-3``.
    """

    name = "normal_heteroscedastic"
    params_per_element = 2

    def __init__(self, data_shape: Sequence[int], min_scale: float = 1e-3) -> None:
        super().__init__(data_shape)
        if not 0 < min_scale < float("inf"):
            raise ValueError(f"min_scale must be positive and finite, got {min_scale!r}")
        self.min_scale = float(min_scale)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        loc, raw_scale = self.split_params(params)
        return dist.Normal(loc, softplus_floor(raw_scale, self.min_scale))
