"""How the engine calls a model or guide: ``fn(x)``, ``fn(x, mask)``, and for conditional
programs the keyword ``y=labels``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["call_program", "program_args"]


def program_args(
    x: torch.Tensor, mask: torch.Tensor | None = None, y: torch.Tensor | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``(args, kwargs)`` for a model or guide: ``(x,)`` or ``(x, mask)``, plus ``y=y`` when
    labels are given (conditional programs take them as the keyword ``y``)."""
    args = (x,) if mask is None else (x, mask)
    return args, ({} if y is None else {"y": y})


def call_program(
    fn: Callable,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
) -> Any:
    """Call ``fn`` the way the engine does (see :func:`program_args`)."""
    args, kwargs = program_args(x, mask, y)
    return fn(*args, **kwargs)
