"""Shared small helpers of the plotting functions: data checks, cell tables, labels."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ppl_vae.estimators import prepare_inputs
from ppl_vae.plots.grids import value_range_of

__all__ = ["as_cells", "checked", "out_path", "range_for"]


def checked(
    model: Callable | None, guide: Callable, x: Any, y: Any = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, y)`` validated against the model (shape, finiteness, support) and moved to the
    programs' dtype and device, as the estimators do."""
    x, _, y = prepare_inputs(model, guide, x, None, y)
    return x, y


def range_for(x: torch.Tensor, value_range: tuple[float, float] | None) -> tuple[float, float]:
    """``value_range``, or the data's own (:func:`~ppl_vae.plots.grids.value_range_of`)."""
    return value_range_of(x) if value_range is None else value_range


def as_cells(flat: torch.Tensor, columns: int) -> torch.Tensor:
    """``(N, D)`` to ``(ceil(N / columns), columns, D)``, the last row filled with NaN."""
    rows = math.ceil(flat.shape[0] / columns)
    cells = torch.full((rows * columns, flat.shape[-1]), float("nan"), dtype=flat.dtype)
    cells[: flat.shape[0]] = flat.detach().cpu()
    return cells.reshape(rows, columns, -1)


def out_path(out_dir: str | Path, name: str) -> Path:
    """``out_dir/name.png``."""
    return Path(out_dir) / f"{name}.png"
