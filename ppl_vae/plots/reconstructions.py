r"""Reconstructions: each input next to the decoder mean at its posterior mean,
:math:`\mathbb{E}[x \mid z = \mathbb{E}_q[z \mid x]]`.

Every latent site takes its posterior mean under the full guide
(:func:`~ppl_vae.plots.encoding.posterior_means`): for the hierarchical model both
:math:`\mathbb{E}_q[z_2 \mid x]` and :math:`\mathbb{E}_q[z_1 \mid x]` (the latter averaged
over :math:`z_2 \sim q(z_2 \mid x)`); conditional models read the inputs' labels ``y`` in
guide and decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from ppl_vae.plots._layout import checked, out_path, range_for
from ppl_vae.plots.decoding import decode
from ppl_vae.plots.encoding import posterior_means
from ppl_vae.plots.grids import write_cells
from ppl_vae.plots.result import PlotResult

__all__ = ["Reconstruction", "plot_reconstructions", "reconstruct"]


class Reconstruction(NamedTuple):
    """Posterior means (site -> ``(N, ...)``) and the decoder mean at them, ``(N, *data_shape)``."""

    latents: dict[str, torch.Tensor]
    mean: torch.Tensor


@torch.no_grad()
def reconstruct(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    num_samples: int = 32,
    seed: int = 0,
) -> Reconstruction:
    r"""The decoder mean at the posterior means of every latent site, for each row of ``x``
    (``num_samples`` particles for the means that need Monte Carlo; seeded)."""
    latents = posterior_means(guide, x, y=y, num_samples=num_samples, seed=seed)
    return Reconstruction(latents, decode(model, latents, x, y=y, seed=seed).px.mean)


@torch.no_grad()
def plot_reconstructions(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    out_dir: str | Path,
    *,
    y: torch.Tensor | None = None,
    per_row: int = 8,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    num_samples: int = 32,
    seed: int = 0,
    name: str = "reconstructions",
) -> PlotResult:
    r"""``{name}.png``: every row of ``x`` and its reconstruction, in rows of ``per_row``
    cells alternating input row, reconstruction row (the cell below an input is its
    reconstruction); a last partial row is padded with empty cells. Non-image data are
    drawn as a heatmap with the same order of lines.

    :param y: labels ``(N,)`` of conditional models.
    :returns: a :class:`PlotResult` with tensors ``inputs``, ``reconstructions`` (both
        ``(N, *data_shape)``) and ``latents`` (the posterior means, site -> ``(N, ...)``).
    """
    x, y = checked(model, guide, x, y)
    result = reconstruct(model, guide, x, y=y, num_samples=num_samples, seed=seed)
    num = x.shape[0]
    columns = max(1, min(per_row, num))
    rows = -(-num // columns)
    flat_x, flat_r = x.reshape(num, -1).cpu(), result.mean.reshape(num, -1).cpu()
    cells = torch.full((rows, 2, columns, flat_x.shape[-1]), float("nan"), dtype=flat_x.dtype)
    for r in range(rows):
        part = slice(r * columns, min(num, (r + 1) * columns))
        cells[r, 0, : part.stop - part.start] = flat_x[part]
        cells[r, 1, : part.stop - part.start] = flat_r[part]
    row_labels = [
        f"{kind} {r * columns}..{min(num, (r + 1) * columns) - 1}"
        for r in range(rows)
        for kind in ("input", "reconstruction")
    ]
    path = write_cells(
        cells.reshape(2 * rows, columns, -1),
        out_path(out_dir, name),
        image_shape=image_shape,
        value_range=range_for(x, value_range),
        title="inputs x and reconstructions E[x | z = E_q[z | x]]",
        description=f"{num} inputs, {columns} per row; rows alternate input, reconstruction "
        "(the cell below an input is its reconstruction)",
        row_labels=row_labels,
        column_labels=[str(c) for c in range(columns)] if columns > 1 else [""],
        scale=scale,
    )
    tensors = {"inputs": x, "reconstructions": result.mean, "latents": result.latents}
    return PlotResult((path,), tensors)
