r"""Shared parts of the likelihoods for real-valued data: one support check (finite values)
and one learned per-feature scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch.distributions import constraints

from models.likelihoods.base import Likelihood
from models.likelihoods.positive import positive_parameter, softplus_floor

__all__ = ["LearnedScaleLikelihood", "RealLikelihood"]


class RealLikelihood(Likelihood):
    r"""Base class for likelihoods over all of :math:`\mathbb{R}`: accepts any finite value.

    Subclasses set ``name`` to their registry name; it appears in the support message.
    """

    name: ClassVar[str] = "real"
    support = constraints.real

    def support_violation(self, x: torch.Tensor) -> str | None:
        bad = ~torch.isfinite(x)
        if not bool(bad.any()):
            return None
        return (
            f"the '{self.name}' likelihood needs finite real values, but {int(bad.sum())} "
            "values are inf or NaN; remove or impute inf/NaN (or fill them with any finite "
            "value and pass mask=... with False where a value is missing)."
        )


class LearnedScaleLikelihood(RealLikelihood):
    r"""A real-valued likelihood with one learned scale per feature, shared across datapoints:
    :math:`\sigma_i = \mathrm{softplus}(\rho_i) + \sigma_{\min}`, stored as ``raw_scale``.

    The floor :math:`\sigma_{\min}` keeps the density bounded when a feature is constant in the
    training data (e.g. blank image borders), where the maximum-likelihood scale is zero.

    :param init_scale: the scale at initialisation (every feature).
    :param min_scale: the floor :math:`\sigma_{\min}`; need ``init_scale > min_scale >= 0``.
    """

    def __init__(
        self, data_shape: Sequence[int], init_scale: float = 1.0, min_scale: float = 1e-3
    ) -> None:
        super().__init__(data_shape)
        self.raw_scale = positive_parameter(
            init_scale, min_scale, self.data_shape, init_name="init_scale", floor_name="min_scale"
        )
        self.min_scale = float(min_scale)

    @property
    def scale(self) -> torch.Tensor:
        """The per-feature scale, shape ``data_shape``."""
        return softplus_floor(self.raw_scale, self.min_scale)
