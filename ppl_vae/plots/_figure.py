"""A matplotlib figure detached from pyplot, saved as a PNG on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from matplotlib.figure import Figure

__all__ = ["figure"]


@contextlib.contextmanager
def figure(path: Path, figsize: tuple[float, float], dpi: float = 100) -> Iterator[Figure]:
    """A :class:`~matplotlib.figure.Figure` (never registered with pyplot, so no window opens
    and nothing is left open on any backend) written to ``path`` at ``figsize * dpi`` pixels
    when the block ends without error; parent folders are created."""
    fig = Figure(figsize=figsize, dpi=dpi)
    try:
        yield fig
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        fig.clear()
