r"""Learned positive parameters (scales, degrees of freedom, inverse dispersions).

A positive quantity :math:`\theta` is stored as an unconstrained ``raw`` tensor and read as

.. math:: \theta = \mathrm{softplus}(\rho) + \theta_{\min}.

Softplus grows linearly rather than exponentially (steadier gradients than ``exp``), and the
floor :math:`\theta_{\min}` keeps the quantity away from zero, where densities are unbounded
or log-gamma terms blow up.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["inverse_softplus", "positive_parameter", "softplus_floor"]


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    r"""The :math:`\rho` with :math:`\mathrm{softplus}(\rho) = y` for :math:`y > 0`:
    :math:`\log(e^y - 1)`, and :math:`y` itself above 20 (where softplus is the identity in
    torch), so large values do not overflow."""
    return torch.where(y > 20, y, y.expm1().log())


def softplus_floor(raw: torch.Tensor, floor: float) -> torch.Tensor:
    r""":math:`\mathrm{softplus}(\rho) + \theta_{\min}`."""
    return F.softplus(raw) + floor


def positive_parameter(
    init: float,
    floor: float,
    shape: Sequence[int],
    *,
    init_name: str,
    floor_name: str,
) -> nn.Parameter:
    """A raw parameter of ``shape`` whose :func:`softplus_floor` equals ``init`` everywhere.

    :raises ValueError: unless ``init > floor >= 0`` and both are finite; the message names
        the options (``init_name``, ``floor_name``) as the user wrote them.
    """
    init, floor = float(init), float(floor)
    if not (init > floor >= 0 and init < float("inf")):
        raise ValueError(
            f"need {init_name} > {floor_name} >= 0, got {init_name}={init}, {floor_name}={floor}"
        )
    raw = inverse_softplus(torch.tensor(init - floor))
    return nn.Parameter(raw.expand(tuple(shape)).clone())
