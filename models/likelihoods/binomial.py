"""Binomial likelihood for integer counts with a known total."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch.distributions import constraints

from models.likelihoods.base import Likelihood, non_integer_count

__all__ = ["BinomialLikelihood"]


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
        n_frac = non_integer_count(x)
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
