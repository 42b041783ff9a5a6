r"""Categorical likelihood: a free distribution over the K values of each element.

.. math::

    p(x_i = k \mid z) = \mathrm{softmax}(\ell_{i})_k, \qquad k \in \{0, \dots, K - 1\},

with K decoder outputs (logits) per element, e.g. the 256-way softmax over 8-bit pixel
intensities of PixelRNN [1]. It assumes no order or smoothness between neighbouring values
(unlike 'binomial' or 'discretized_logistic'), at the price of K outputs per element.
The distribution's ``mean`` and ``variance`` are those of the value index k (torch's
``Categorical`` has none); samples are floats, like the data.

References:

[1] A. van den Oord, N. Kalchbrenner and K. Kavukcuoglu, "Pixel recurrent neural networks",
    ICML 2016.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models.likelihoods.base import Likelihood, non_integer_count

__all__ = ["CategoricalLikelihood", "IndexCategorical", "integer_range_violation"]


class IndexCategorical(dist.Categorical):
    """Pyro's ``Categorical`` with the mean and variance of the index, and float samples."""

    @property
    def mean(self) -> torch.Tensor:
        k = torch.arange(self._num_events, dtype=self.probs.dtype, device=self.probs.device)
        return (self.probs * k).sum(-1)

    @property
    def variance(self) -> torch.Tensor:
        k = torch.arange(self._num_events, dtype=self.probs.dtype, device=self.probs.device)
        return (self.probs * (k - self.mean.unsqueeze(-1)).square()).sum(-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        return super().sample(sample_shape).to(self.logits.dtype)


def integer_range_violation(x: torch.Tensor, name: str, high: int, option: str) -> str | None:
    """The support message for likelihoods over the integers ``0..high`` (8-bit pixels)."""
    other = (
        "or choose 'continuous_bernoulli' or 'beta' for values in [0, 1], 'binomial' for "
        "counts, 'normal' for real values"
    )
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        return (
            f"the '{name}' likelihood needs integers in [0, {high}], but {int(bad.sum())} values "
            "are inf or NaN; remove or impute them (or fill them with any valid value and pass "
            "mask=... with False where a value is missing)."
        )
    n_frac = non_integer_count(x)
    lo, hi = float(x.min()), float(x.max())
    if n_frac:
        hint = " (grey-scale in [0, 1]?)" if lo >= 0 and hi <= 1 else ""
        return (
            f"the '{name}' likelihood needs integers in [0, {high}], but {n_frac} values are not "
            f"integers{hint}. Rescale pixel intensities to integers 0..{high}, e.g. "
            f"x = (x * {high}).round() for values in [0, 1], {other}."
        )
    if lo < 0 or hi > high:
        return (
            f"the '{name}' likelihood needs integers in [0, {high}], but the data have values "
            f"outside [0, {high}] (data range [{lo:g}, {hi:g}]). Rescale pixel intensities to "
            f"integers 0..{high}, or set {option} to cover the data, {other}."
        )
    return None


class CategoricalLikelihood(Likelihood):
    """Independent Categorical elements over ``{0, ..., num_categories - 1}``.

    :param num_categories: K, the number of values per element (and of decoder outputs per
        element); 256 for 8-bit pixels; ``>= 2``.
    """

    def __init__(self, data_shape: Sequence[int], num_categories: int = 256) -> None:
        super().__init__(data_shape)
        if int(num_categories) != num_categories or num_categories < 2:
            raise ValueError(f"num_categories must be an integer >= 2, got {num_categories!r}")
        self.num_categories = int(num_categories)
        self.params_per_element = self.num_categories

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.integer_interval(0, self.num_categories - 1)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        logits = params.movedim(-1 - self.event_dim, -1)  # categories last
        return IndexCategorical(logits=logits)

    def support_violation(self, x: torch.Tensor) -> str | None:
        return integer_range_violation(x, "categorical", self.num_categories - 1, "num_categories")
