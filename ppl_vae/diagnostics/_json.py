"""Numbers for the JSON summaries of the diagnostics: plain Python floats, ``None`` where a
value has no JSON number (strict JSON has no NaN or Infinity)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["json_float", "json_floats"]


def json_float(value: Any, *, keep_infinite: bool = False) -> float | None:
    """``value`` (a number, NumPy scalar or one-element tensor) as a plain float for JSON:
    ``None`` where it is NaN and, unless ``keep_infinite``, where it is infinite."""
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not keep_infinite):
        return None
    return value


def json_floats(values: torch.Tensor, *, keep_infinite: bool = False) -> float | None | list[Any]:
    """A tensor as a JSON-ready float (0-d) or nested lists of floats (one level per
    dimension), each element as :func:`json_float` gives it."""
    return _map(values.detach().cpu().to(torch.float64).tolist(), keep_infinite)


def _map(nested: Any, keep_infinite: bool) -> Any:
    if isinstance(nested, list):
        return [_map(item, keep_infinite) for item in nested]
    return json_float(nested, keep_infinite=keep_infinite)
