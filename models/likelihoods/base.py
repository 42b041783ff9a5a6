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
from torch import nn
from torch.distributions import constraints

__all__ = ["Likelihood", "check_decoder_outputs", "likelihood_of_flat", "non_integer_count"]


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
        """Split ``(..., P, *data_shape)`` decoder output into P tensors ``(..., *data_shape)``.
        One parameter per element is a squeeze, whose gradient is a view: ``unbind``'s would
        copy the whole output."""
        dim = -1 - self.event_dim
        if params.shape[dim] == 1:
            return (params.squeeze(dim),)
        return params.unbind(dim=dim)

    def support_violation(self, x: torch.Tensor) -> str | None:
        """A message explaining why ``x`` is outside the support and what to do, or None."""
        return None


def check_decoder_outputs(decoder: nn.Module, likelihood: Likelihood) -> None:
    """Raise ``ValueError`` if ``decoder`` declares ``out_features`` other than
    ``likelihood.num_params``."""
    out_features = getattr(decoder, "out_features", None)
    if out_features is not None and out_features != likelihood.num_params:
        raise ValueError(
            f"the decoder produces {out_features} outputs but the likelihood needs "
            f"{likelihood.num_params} ({likelihood.params_per_element} per element of "
            f"data_shape {likelihood.data_shape})"
        )


def likelihood_of_flat(
    likelihood: Likelihood, params: torch.Tensor, feature_mask: torch.Tensor | None = None
) -> dist.TorchDistribution:
    """The likelihood's distribution over x for flat decoder output ``(..., num_params)``,
    read as ``(..., params_per_element, *data_shape)``."""
    shape = (likelihood.params_per_element, *likelihood.data_shape)
    return likelihood(params.unflatten(-1, shape), feature_mask)


def non_integer_count(x: torch.Tensor) -> int:
    return int((x != torch.round(x)).sum())
