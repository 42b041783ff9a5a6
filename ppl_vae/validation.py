"""Checks run on data before the engine touches it, so bad input fails with a clear message
instead of a stack trace from deep inside torch or Pyro."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ppl_vae.errors import DataError

__all__ = [
    "as_data_tensor",
    "check_mask",
    "module_dtype_device",
    "validate_data",
    "validate_labels",
]


def module_dtype_device(*modules: Any) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the first parameter or buffer of the given modules (plain
    functions have none: then torch's default dtype on the CPU)."""
    for module in modules:
        if isinstance(module, nn.Module):
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point():
                    return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")


def as_data_tensor(
    x: Any, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Convert an array-like batch to a floating tensor, rejecting what cannot be data."""
    if isinstance(x, torch.Tensor):
        tensor = x
    else:
        try:
            tensor = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as error:
            raise DataError(
                f"data must be a numeric array or tensor of shape (N, ...), got {type(x).__name__}"
            ) from error
    if tensor.is_complex():
        raise DataError(f"data must be real numbers, got dtype {tensor.dtype}")
    return tensor.to(dtype=dtype or torch.get_default_dtype(), device=device)


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite, in one pass over the data (the minimum and maximum are
    NaN if any value is, infinite if any value is), several times faster than ``isfinite``."""
    if tensor.numel() == 0:
        return True
    lo, hi = torch.aminmax(tensor)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def validate_data(
    x: Any,
    model: Callable | None = None,
    *,
    name: str = "data",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return ``x`` as a floating tensor after checking it can be fed to ``model``.

    Checks, each with a message naming the fix: a batch dimension exists and is non-empty;
    no NaN or infinite values; the per-datapoint shape matches ``model.data_shape`` where the
    model declares one; the values lie in the support of ``model.likelihood`` where the model
    has one (anything with a ``support_violation(x) -> str | None`` method).
    """
    tensor = as_data_tensor(x, dtype=dtype, device=device)
    if tensor.dim() < 2:
        raise DataError(
            f"{name} must be a batch of shape (N, *data_shape), got shape {tuple(tensor.shape)}; "
            "add a batch dimension (x[None]) for a single datapoint"
        )
    if tensor.shape[0] == 0:
        raise DataError(f"{name} is empty (shape {tuple(tensor.shape)})")
    if not _all_finite(tensor):
        bad = ~torch.isfinite(tensor)
        rows = torch.nonzero(bad.flatten(1).any(1)).flatten()
        raise DataError(
            f"{name} contain {int(bad.sum())} NaN or infinite values in {rows.numel()} rows "
            f"(first row {int(rows[0])}); drop those rows, or fill them with any valid value "
            "and pass mask=... (False where a value is missing)"
        )
    expected = getattr(model, "data_shape", None)
    if expected is not None and tuple(tensor.shape[1:]) != tuple(expected):
        raise DataError(
            f"the model expects datapoints of shape {tuple(expected)} but {name} have shape "
            f"{tuple(tensor.shape[1:])} (batch of {tensor.shape[0]}); was the model built or "
            "trained for other data? Reshape the data or build the model for this data_shape"
        )
    likelihood = getattr(model, "likelihood", None)
    check = getattr(likelihood, "support_violation", None)
    if callable(check):
        message = check(tensor)
        if message is not None:
            raise DataError(f"{name} outside the likelihood's support: {message}")
    return tensor


def validate_labels(
    y: Any,
    num_data: int,
    model: Callable | None = None,
    *,
    name: str = "labels",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return class labels ``y`` as an int64 tensor of shape ``(num_data,)``.

    Checks, each with a message naming the fix: one whole-number label per datapoint, no
    negative label, and none at or above ``model.num_classes`` where the model declares it.
    """
    try:
        labels = torch.as_tensor(y if isinstance(y, torch.Tensor) else np.asarray(y))
    except (TypeError, ValueError) as error:
        raise DataError(
            f"{name} must be an array of class indices, got {type(y).__name__}"
        ) from error
    if labels.is_floating_point():
        if not bool(torch.isfinite(labels).all()) or bool((labels != labels.round()).any()):
            raise DataError(f"{name} must be whole class indices 0, 1, ...; got fractions or NaN")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise DataError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    labels = labels.to(dtype=torch.int64, device=device)
    if tuple(labels.shape) != (num_data,):
        raise DataError(
            f"{name} must hold one class index per datapoint, shape ({num_data},), got "
            f"{tuple(labels.shape)}"
        )
    if num_data and int(labels.min()) < 0:
        raise DataError(f"{name} contain negative class indices ({int(labels.min())})")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_data and int(labels.max()) >= num_classes:
        raise DataError(
            f"{name} contain class {int(labels.max())} but the model has {num_classes} classes "
            f"(0..{num_classes - 1}); build the model with num_classes={int(labels.max()) + 1} "
            "or more"
        )
    return labels


def check_mask(
    mask: Any,
    x: torch.Tensor,
    *,
    name: str = "the mask",
    if_empty: str = "such a datapoint carries no data; drop those rows",
) -> torch.Tensor:
    """``mask`` as a boolean tensor on ``x``'s device after checking it is a per-element
    mask for ``x`` (``True`` where a value is observed) that leaves at least one observed
    element in every datapoint.

    :param name: what the mask is called in the messages, e.g. ``"train_mask"``.
    :param if_empty: the advice given for datapoints with every element missing.
    :raises DataError: for a non-boolean mask, a wrong shape, or a datapoint with every
        element missing.
    """
    try:
        mask = torch.as_tensor(mask if isinstance(mask, torch.Tensor) else np.asarray(mask))
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} must be a boolean array, got {type(mask).__name__}") from error
    if mask.dtype != torch.bool:
        raise DataError(
            f"{name} must be boolean (True where a value is observed, False where it is "
            f"missing), got dtype {mask.dtype}; convert it with mask.bool() or mask == 1"
        )
    if tuple(mask.shape) != tuple(x.shape):
        raise DataError(
            f"{name} must have the data's shape {tuple(x.shape)} (one entry per element, "
            f"True where observed), got {tuple(mask.shape)}"
        )
    mask = mask.to(x.device)
    empty = ~mask.flatten(1).any(1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten()
        raise DataError(
            f"{name}: {rows.numel()} datapoints have every element missing (first row "
            f"{int(rows[0])}); {if_empty}"
        )
    return mask
