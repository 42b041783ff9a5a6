"""Pictures of many datapoints at once: image grids, and a heatmap for data that are not
images.

Every picture is a table of cells, ``rows x columns``, one datapoint per cell, given as a
tensor ``(R, K, D)`` of flat datapoints. :func:`write_cells` draws it

* for image data (an ``image_shape`` ``(C, H, W)``, e.g. :attr:`Dataset.image_shape`):
  each cell is an image, upscaled by an integer factor (nearest neighbour) and laid out by
  :func:`torchvision.utils.make_grid` with ``nrow = K`` and ``padding`` pixels of grey
  between cells, then written as a PNG whose pixel size is exactly :func:`grid_size`; the
  title and a description of the layout go into the PNG's ``Title`` and ``Description``
  text chunks;
* for other data (tables): a matplotlib heatmap with one line per cell (``R * K`` lines,
  features along the horizontal axis), each line labelled with its row and column names.

Values are mapped to grey levels linearly from ``value_range = (low, high)`` (clamped): the
data's natural range, e.g. ``(0, 16)`` for ``digits``, ``(0, 1)`` for binarized MNIST.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torchvision.utils import make_grid

from ppl_vae.errors import ConfigError
from ppl_vae.plots._figure import figure

__all__ = [
    "PAD_VALUE",
    "default_scale",
    "grid_size",
    "save_image_grid",
    "to_images",
    "value_range_of",
    "write_cells",
]

#: Grey level of the padding between cells: distinct from black and white pixels.
PAD_VALUE = 0.5


def default_scale(image_shape: Sequence[int]) -> int:
    """Upscaling factor that makes every cell at least 32 pixels on its longer side: 4 for
    8x8 digits, 2 for 28x28 MNIST, 1 from 32 pixels up."""
    return max(1, math.ceil(32 / max(int(image_shape[1]), int(image_shape[2]))))


def grid_size(
    num_cells: int, nrow: int, image_shape: Sequence[int], *, scale: int = 1, padding: int = 2
) -> tuple[int, int]:
    """``(height, width)`` in pixels of :func:`make_grid`'s grid of ``num_cells`` images of
    ``image_shape`` upscaled by ``scale``, ``nrow`` per row, ``padding`` pixels around each."""
    columns = min(nrow, num_cells)
    rows = math.ceil(num_cells / columns)
    height = int(image_shape[1]) * scale + padding
    width = int(image_shape[2]) * scale + padding
    return rows * height + padding, columns * width + padding


def value_range_of(x: torch.Tensor) -> tuple[float, float]:
    """``(min(0, x.min()), x.max())``, the default grey-level range for data ``x`` (nonnegative
    data keep 0 as black)."""
    low, high = float(x.min()), float(x.max())
    low = min(0.0, low)
    return (low, high if high > low else low + 1.0)


def _check_range(value_range: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ConfigError(f"value_range must be (low, high) with high > low, got {value_range}")
    return low, high


def to_images(
    x: torch.Tensor, image_shape: Sequence[int], value_range: tuple[float, float]
) -> torch.Tensor:
    """``(N, C, H, W)`` grey levels in [0, 1] from flat data ``(N, C*H*W)``."""
    low, high = _check_range(value_range)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or math.prod(shape) != x[0].numel():
        raise ConfigError(
            f"image_shape must be (C, H, W) with C*H*W = {x[0].numel()} data elements, got "
            f"{image_shape}"
        )
    images = x.detach().to("cpu", torch.float32).reshape(x.shape[0], *shape)
    return ((images - low) / (high - low)).clamp(0.0, 1.0)


def save_image_grid(
    images: torch.Tensor,
    path: str | Path,
    *,
    nrow: int,
    scale: int = 1,
    padding: int = 2,
    title: str = "",
    description: str = "",
) -> Path:
    """Write ``images`` ``(N, C, H, W)`` in [0, 1] (NaN cells are left as padding) as a
    PNG grid of :func:`grid_size` pixels, ``nrow`` images per row, with ``title`` and
    ``description`` in its text chunks; returns the path."""
    if scale < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale}")
    images = images.nan_to_num(PAD_VALUE)
    if scale > 1:
        images = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=PAD_VALUE)
    # As torchvision.utils.save_image does, plus the text chunks.
    array = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    info = PngInfo()
    info.add_text("Title", title)
    info.add_text("Description", description)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(out, format="png", pnginfo=info)
    return out


def _heatmap(
    cells: torch.Tensor,
    path: Path,
    *,
    value_range: tuple[float, float],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
) -> Path:
    rows, columns, features = cells.shape
    matrix = cells.detach().to("cpu", torch.float64).reshape(rows * columns, features).numpy()
    labels = [f"{r}, {c}" if c else r for r in row_labels for c in column_labels]
    lines = rows * columns
    height = min(40.0, max(3.0, 0.16 * lines + 1.4))
    with figure(path, (7.0, height)) as fig:
        ax = fig.add_subplot()
        shown = ax.imshow(
            np.ma.masked_invalid(matrix),
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            vmin=value_range[0],
            vmax=value_range[1],
        )
        step = max(1, math.ceil(lines / 60))
        ax.set_yticks(range(0, lines, step), labels[::step], fontsize=6)
        for boundary in range(columns, lines, columns):
            if columns > 1:
                ax.axhline(boundary - 0.5, color="w", lw=1.5)
        ax.set_xlabel("feature")
        ax.set_title(title, fontsize=9)
        fig.colorbar(shown, ax=ax, fraction=0.04)
        fig.tight_layout()
    return path


def write_cells(
    cells: torch.Tensor,
    path: str | Path,
    *,
    image_shape: Sequence[int] | None,
    value_range: tuple[float, float],
    title: str,
    description: str,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    scale: int | None = None,
    padding: int = 2,
) -> Path:
    """Draw ``cells`` ``(R, K, D)`` (NaN cells stay empty) as an image grid (image data) or
    a heatmap (other data); see the module docs. Returns the path.

    :param row_labels: ``R`` names of the rows (heatmap labels; the image grid's layout is
        in ``description``).
    :param column_labels: ``K`` names of the columns (``[""]`` when ``K == 1``).
    :param scale: upscaling of image cells; :func:`default_scale` by default.
    """
    out = Path(path)
    value_range = _check_range(value_range)
    if len(row_labels) != cells.shape[0] or len(column_labels) != cells.shape[1]:
        raise ValueError(
            f"{cells.shape[0]} rows and {cells.shape[1]} columns need as many labels, got "
            f"{len(row_labels)} and {len(column_labels)}"
        )
    if image_shape is None:
        return _heatmap(
            cells,
            out,
            value_range=value_range,
            row_labels=row_labels,
            column_labels=column_labels,
            title=title,
        )
    flat = cells.reshape(-1, cells.shape[-1])
    images = to_images(flat, image_shape, value_range)
    return save_image_grid(
        images,
        out,
        nrow=cells.shape[1],
        scale=default_scale(image_shape) if scale is None else scale,
        padding=padding,
        title=title,
        description=description,
    )
