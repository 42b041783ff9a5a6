r"""Masks shared by the generative programs: a boolean mask is either per datapoint ``(N,)``
(drop whole datapoints from the likelihood) or per element, of ``x``'s shape (score only the
observed elements, :math:`\log p(x_{\text{obs}} \mid z)`)."""

from __future__ import annotations

import contextlib

import torch
from pyro import poutine

__all__ = ["mask_datapoints", "split_mask"]


def split_mask(
    mask: torch.Tensor | None, x: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(datapoint_mask, feature_mask)``: at most one of them is not ``None``.

    :raises ValueError: if ``mask`` has neither shape ``(N,)`` nor ``x.shape``.
    """
    if mask is None:
        return None, None
    mask = torch.as_tensor(mask, dtype=torch.bool, device=x.device)
    if mask.shape == x.shape[:1]:
        return mask, None
    if mask.shape == x.shape:
        return None, mask
    raise ValueError(
        f"mask must have shape {tuple(x.shape[:1])} (per datapoint) or {tuple(x.shape)} "
        f"(per element), got {tuple(mask.shape)}"
    )


def mask_datapoints(datapoint_mask: torch.Tensor | None) -> contextlib.AbstractContextManager:
    """A context that drops the masked-out datapoints' log densities (no-op for ``None``)."""
    if datapoint_mask is None:
        return contextlib.nullcontext()
    return poutine.mask(mask=datapoint_mask)
