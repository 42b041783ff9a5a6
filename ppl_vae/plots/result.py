"""What every plotting function returns: the files it wrote and the numbers it drew."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PlotResult"]


@dataclass(frozen=True)
class PlotResult:
    """The PNG files a plotting function wrote and the tensors drawn in them.

    :param paths: the files written, in a fixed order (documented by each function).
    :param tensors: the underlying values by name (decoded images as flat ``(..., D)``
        tensors, latents, coordinates); each function documents its keys. Values are
        tensors, or mappings site name -> tensor for per-site latents.
    """

    paths: tuple[Path, ...]
    tensors: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The first (for most functions the only) file written."""
        return self.paths[0]
