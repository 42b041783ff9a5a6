"""Private helpers shared by the priors: option checks and the softplus parametrisation."""

from __future__ import annotations

import math

import torch

__all__ = ["check_latent_dim", "check_positive", "inverse_softplus"]


def check_latent_dim(latent_dim: int) -> int:
    """Return ``latent_dim`` as an int, or raise ``ValueError`` unless it is a positive int."""
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    return latent_dim


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is finite and > 0."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    r"""The ``x`` with :math:`\log(1 + e^x) = y` for ``y > 0``, computed stably."""
    return y + torch.log(-torch.expm1(-y))
