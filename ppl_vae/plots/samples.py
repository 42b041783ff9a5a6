r"""Samples from the model's marginal :math:`p(x) = \int p(z)\, p(x \mid z)\, dz`.

Ancestral draws :math:`z \sim p(z)` (every latent site, e.g. :math:`z_2` then
:math:`z_1 \mid z_2` for the hierarchical model), pictured two ways: the decoder mean
:math:`\mathbb{E}[x \mid z]` (what is usually shown, smooth) and a true draw
:math:`x \sim p(x \mid z)` of the same z (what the model actually generates, with the
likelihood's noise: binary pixels for a Bernoulli, counts for a Binomial).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ppl_vae.errors import ConfigError
from ppl_vae.plots._figure import figure
from ppl_vae.plots._layout import as_cells, checked, out_path, range_for
from ppl_vae.plots.decoding import prior_draws
from ppl_vae.plots.grids import write_cells
from ppl_vae.plots.result import PlotResult

__all__ = ["plot_samples"]


def _table_samples(
    x: torch.Tensor, mean: torch.Tensor, draw: torch.Tensor, path: Path, shown: int
) -> Path:
    """Non-image data: the two features of largest data variance as a scatter (data, decoder
    means, draws) and a few sampled feature vectors over the feature index."""
    data = x.detach().cpu().reshape(x.shape[0], -1).double().numpy()
    means = mean.detach().cpu().reshape(mean.shape[0], -1).double().numpy()
    draws = draw.detach().cpu().reshape(draw.shape[0], -1).double().numpy()
    order = np.argsort(-data.var(0), kind="stable")
    i, j = (int(order[0]), int(order[1])) if data.shape[1] > 1 else (0, 0)
    with figure(path, (11.0, 4.4)) as fig:
        scatter, lines = fig.subplots(1, 2)
        scatter.scatter(data[:, i], data[:, j], s=6, c="0.6", label="data", lw=0)
        scatter.scatter(draws[:, i], draws[:, j], s=8, c="C1", label="draw x ~ p(x | z)", lw=0)
        scatter.scatter(means[:, i], means[:, j], s=8, c="C0", label="mean E[x | z]", lw=0)
        scatter.set_xlabel(f"feature {i}")
        scatter.set_ylabel(f"feature {j}")
        scatter.set_title("two features of largest data variance", fontsize=9)
        scatter.legend(fontsize="small", markerscale=2)
        features = np.arange(data.shape[1])
        for k in range(min(shown, means.shape[0])):
            color = f"C{k % 10}"
            lines.plot(features, means[k], color=color, lw=1.2)
            lines.plot(features, draws[k], color=color, ls="", marker=".", ms=4)
        lines.plot([], [], color="k", lw=1.2, label="mean E[x | z]")
        lines.plot([], [], color="k", ls="", marker=".", label="draw x ~ p(x | z)")
        lines.set_xlabel("feature")
        lines.set_ylabel("value")
        lines.set_title(f"{min(shown, means.shape[0])} samples, one colour each", fontsize=9)
        lines.legend(fontsize="small")
        fig.suptitle("samples from p(x): z ~ p(z), decoder mean and a draw of x")
        fig.tight_layout()
    return path


@torch.no_grad()
def plot_samples(
    model: Callable,
    x: torch.Tensor,
    out_dir: str | Path,
    *,
    num: int = 64,
    nrow: int = 8,
    y: torch.Tensor | None = None,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    seed: int = 0,
    name: str = "samples",
) -> PlotResult:
    r"""Pictures of ``num`` ancestral samples of the model.

    Image data (``image_shape`` given): two grids of ``nrow`` columns, cell ``i`` of both
    from the same :math:`z_i \sim p(z)`:

    * ``{name}_mean.png``: the decoder means :math:`\mathbb{E}[x \mid z_i]`;
    * ``{name}_draw.png``: draws :math:`x_i \sim p(x \mid z_i)`.

    Other data (tables): ``{name}.png``, a scatter of the two features with the largest
    variance in ``x`` (data in grey, decoder means and draws in colour) beside five sampled
    feature vectors (means as lines, draws as dots).

    :param x: data; its first row sizes the model's data plate, and it sets the default grey
        levels (:func:`~ppl_vae.plots.grids.value_range_of`) and the table scatter.
    :param y: for conditional models, the label of each sample, shape ``(num,)``.
    :returns: a :class:`PlotResult` with tensors ``latents`` (site -> ``(num, ...)``),
        ``mean`` and ``draw`` (``(num, *data_shape)``).
    """
    if nrow < 1:
        raise ConfigError(f"nrow must be a positive integer, got {nrow}")
    x, _ = checked(model, None, x)
    draws = prior_draws(model, x, num, y=y, seed=seed)
    tensors = {"latents": draws.latents, "mean": draws.mean, "draw": draws.draw}
    if image_shape is None:
        path = _table_samples(x, draws.mean, draws.draw, out_path(out_dir, name), shown=5)
        return PlotResult((path,), tensors)
    value_range = range_for(x, value_range)
    columns = min(nrow, num)
    rows = [f"row {r}" for r in range(-(-num // columns))]
    labels = "" if y is None else " (row-major, labels y as given)"
    paths = []
    for kind, values, title in (
        ("mean", draws.mean, "decoder means E[x | z], z ~ p(z)"),
        ("draw", draws.draw, "draws x ~ p(x | z), z ~ p(z)"),
    ):
        cells = as_cells(values.reshape(num, -1), columns)
        paths.append(
            write_cells(
                cells,
                out_path(out_dir, f"{name}_{kind}"),
                image_shape=image_shape,
                value_range=value_range,
                title=f"samples from p(x): {title}",
                description=f"{num} samples, {columns} per row{labels}; cell i of "
                f"{name}_mean.png and {name}_draw.png share z_i",
                row_labels=rows,
                column_labels=[str(c) for c in range(columns)],
                scale=scale,
            )
        )
    return PlotResult(tuple(paths), tensors)
