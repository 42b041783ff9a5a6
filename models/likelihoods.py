r"""Likelihoods p(x | z): small modules that turn decoder output into a distribution over x.

A likelihood declares

* ``params_per_element``: how many decoder outputs it needs for each data element, so the
  decoder can be sized as ``params_per_element * prod(data_shape)``;
* ``support``: the values of x it accepts, with :meth:`Likelihood.support_violation`
  explaining what to do with data outside it.

``forward(params, feature_mask=None)`` takes decoder output shaped
``(..., params_per_element, *data_shape)`` and returns a distribution whose event shape is
``data_shape``. Every likelihood here factorizes over data elements, so a per-element
``feature_mask`` drops the masked elements from :math:`\log p(x \mid z)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

__all__ = [
    "LIKELIHOODS",
    "BernoulliLikelihood",
    "BinomialLikelihood",
    "Likelihood",
    "NormalLikelihood",
]


class Likelihood(nn.Module):
    """Base class: subclasses set ``params_per_element``, ``support`` and implement
    :meth:`base_distribution` (batch shape ``(..., *data_shape)``, event shape ``()``)."""

    params_per_element: int = 1
    support: constraints.Constraint = constraints.real

    def __init__(self, data_shape: Sequence[int]) -> None:
        super().__init__()
        self.data_shape = tuple(int(s) for s in data_shape)
        if not self.data_shape or any(s < 1 for s in self.data_shape):
            raise ValueError(f"data_shape must be non-empty and positive, got {self.data_shape}")

    @property
    def event_dim(self) -> int:
        return len(self.data_shape)

    @property
    def num_params(self) -> int:
        """Decoder outputs needed for one datapoint."""
        return self.params_per_element * int(torch.Size(self.data_shape).numel())

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def forward(
        self, params: torch.Tensor, feature_mask: torch.Tensor | None = None
    ) -> dist.TorchDistribution:
        base = self.base_distribution(params)
        if feature_mask is not None:
            base = base.mask(feature_mask)
        return base.to_event(self.event_dim)

    def split_params(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Split ``(..., P, *data_shape)`` decoder output into P tensors ``(..., *data_shape)``."""
        return params.unbind(dim=-1 - self.event_dim)

    def support_violation(self, x: torch.Tensor) -> str | None:
        """A message explaining why ``x`` is outside the support and what to do, or None."""
        return None


def _non_integer_count(x: torch.Tensor) -> int:
    return int((x != torch.round(x)).sum())


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
            f"values are not 0 or 1 ({what}). Binarize the data first (statically, e.g. "
            "x = (x > 0.5), or dynamically by sampling x ~ Bernoulli(x) each epoch), or choose "
            "a likelihood for this data: 'binomial' for integer counts with a known maximum, "
            "'normal' for real values."
        )


class BinomialLikelihood(Likelihood):
    r"""Independent Binomial counts, :math:`x_i \sim \mathrm{Binomial}(n, \sigma(\ell_i))`, for
    integer data in {0, ..., n} such as 8x8 digits (n = 16) or 8-bit pixels (n = 255)."""

    def __init__(self, data_shape: Sequence[int], total_count: int = 1) -> None:
        super().__init__(data_shape)
        if int(total_count) != total_count or total_count < 1:
            raise ValueError(f"total_count must be a positive integer, got {total_count!r}")
        self.total_count = int(total_count)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.integer_interval(0, self.total_count)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        (logits,) = self.split_params(params)
        return dist.Binomial(total_count=self.total_count, logits=logits)

    def support_violation(self, x: torch.Tensor) -> str | None:
        n_frac = _non_integer_count(x)
        if n_frac:
            return (
                f"the 'binomial' likelihood needs integer counts, but {n_frac} values are not "
                "integers. Round or rescale the data to counts, or choose 'normal' for real "
                "values."
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0:
            return (
                f"the 'binomial' likelihood needs non-negative counts, but the data go down to "
                f"{lo:g}. Shift or rescale the data to counts in [0, total_count], or choose "
                "'normal' for real values."
            )
        if hi > self.total_count:
            return (
                f"the 'binomial' likelihood with total_count={self.total_count} needs counts in "
                f"[0, {self.total_count}], but the data go up to {hi:g}. Set "
                f"total_count to at least {hi:g} (--total-count), or rescale the data."
            )
        return None


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


#: Likelihoods by name; each is constructed as ``LIKELIHOODS[name](data_shape, **options)``.
LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "binomial": BinomialLikelihood,
    "normal": NormalLikelihood,
}
