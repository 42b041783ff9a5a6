"""Option checks shared by the flow layers and the posterior families: each raises a
``ValueError`` that names the option, the allowed values and what was given."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["check_bool", "check_choice", "check_hidden", "check_int", "check_positive_float"]


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (booleans are not integers here)."""
    allowed = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {allowed}, got {value}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    """``value`` as a finite ``float > 0``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_hidden(name: str, value: Any, *, minimum: int = 1) -> tuple[int, ...]:
    """A sequence of layer sizes, each an integer ``>= minimum`` (possibly empty)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a sequence of integers >= {minimum}, got {value!r}")
    sizes = []
    for size in value:
        if isinstance(size, bool) or not isinstance(size, int) or size < minimum:
            raise ValueError(
                f"{name} must be a sequence of integers >= {minimum}, got {list(value)!r}"
            )
        sizes.append(int(size))
    return tuple(sizes)
