"""Shared support check of the likelihoods for unbounded counts {0, 1, 2, ...}."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import constraints

from models.likelihoods.base import Likelihood, non_integer_count

__all__ = ["CountLikelihood"]


class CountLikelihood(Likelihood):
    """Base class for likelihoods over the non-negative integers with no upper bound.

    Subclasses set ``name`` to their registry name; it appears in the support messages.
    """

    name: ClassVar[str] = "count"
    support = constraints.nonnegative_integer

    def support_violation(self, x: torch.Tensor) -> str | None:
        what = f"the '{self.name}' likelihood needs non-negative integer counts"
        real = "or choose 'normal', 'laplace' or 'student_t' for real values"
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            return (
                f"{what}, but {int(bad.sum())} values are inf or NaN; remove or impute them "
                "(or fill them with any count and pass mask=... with False where a value is "
                "missing)."
            )
        n_frac = non_integer_count(x)
        if n_frac:
            return (
                f"{what}, but {n_frac} values are not integers. If the data are counts stored "
                f"with rounding noise, round them (x.round()); {real}, 'beta' or "
                "'continuous_bernoulli' for values in [0, 1]."
            )
        lo = float(x.min())
        if lo < 0:
            return (
                f"{what}, but the data go down to {lo:g}. If the data are shifted counts, shift "
                f"them back to start at 0; {real}."
            )
        return None
