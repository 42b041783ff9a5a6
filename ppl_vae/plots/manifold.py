r"""The decoded manifold of a 2-D latent: decoder means on a grid of prior quantiles
(Kingma & Welling [1], figure 4).

Coordinate :math:`u` of the grid takes the values :math:`F_u^{-1}(l_i)` at the levels
:math:`l_i = (i + 1/2) / n`, :math:`i = 0, \dots, n-1`, of the marginal CDF :math:`F_u` of
the latent site under the model's prior. :math:`F_u^{-1}` is exact where the prior's
coordinate marginals have an ``icdf`` and do not vary across datapoints (the standard
Normal, a learned diagonal Normal, Laplace); otherwise (mixtures, VampPrior, flows,
Student-t, a lower layer :math:`p(z_1 \mid z_2)`) it is the empirical quantile of
``num_draws`` seeded ancestral draws. Latent sites other than the gridded one take their
conditional mean given it (for the hierarchical model gridded over :math:`z_2`,
:math:`z_1 = \mathbb{E}[z_1 \mid z_2]`).

Layout: column ``c`` has coordinate 0 at level ``c`` (left to right, increasing); row ``r``
has coordinate 1 at level ``n - 1 - r`` (top to bottom, decreasing), as on a plot's axes.

References

[1] Kingma & Welling (2014), *Auto-Encoding Variational Bayes*, ICLR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributions as td
from pyro.distributions.torch_distribution import ExpandedDistribution

from ppl_vae.errors import ConfigError
from ppl_vae.plots._layout import checked, out_path, range_for
from ppl_vae.plots.decoding import ancestral_trace, decode, latent_values
from ppl_vae.plots.grids import write_cells
from ppl_vae.plots.result import PlotResult

__all__ = ["plot_manifold", "prior_quantiles", "quantile_levels"]


def quantile_levels(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(n,)`` levels ``(i + 1/2) / n``: the midpoints of ``n`` equal-probability bins."""
    if n < 1:
        raise ConfigError(f"the grid needs at least one point per side, got {n}")
    return (torch.arange(n, dtype=dtype) + 0.5) / n


def _exact_quantiles(fn: Any, levels: torch.Tensor) -> torch.Tensor | None:
    """``(n, D)`` quantiles from the coordinate marginals' ``icdf`` when they exist and are
    the same for every datapoint, else ``None``."""
    while isinstance(fn, ExpandedDistribution):
        fn = fn.base_dist
    if not isinstance(fn, td.Independent) or fn.reinterpreted_batch_ndims != 1:
        return None
    base = fn.base_dist
    try:
        shape = (levels.shape[0],) + (1,) * len(base.batch_shape)
        values = base.icdf(levels.to(base.mean).reshape(shape))
    except (NotImplementedError, AttributeError, RuntimeError, ValueError):
        return None
    values = values.expand(levels.shape[0], *base.batch_shape)
    rows = values.reshape(levels.shape[0], -1, values.shape[-1])
    constant = torch.allclose(rows, rows[:, :1].expand_as(rows))
    if not constant or not bool(torch.isfinite(rows).all()):
        return None
    return rows[:, 0]


@torch.no_grad()
def prior_quantiles(
    model: Callable,
    x: torch.Tensor,
    site: str | None,
    levels: torch.Tensor,
    *,
    y: int | None = None,
    num_draws: int = 4096,
    seed: int = 0,
) -> tuple[str, torch.Tensor, str]:
    """``(site, quantiles (n, D), method)``: the prior marginal quantiles of every
    coordinate of a latent site (by default the model's first, i.e. the top one) at
    ``levels``; ``method`` is ``"exact"`` or ``"empirical"`` (see the module docs)."""
    labels = None if y is None else torch.full((num_draws,), int(y), dtype=torch.int64)
    trace = ancestral_trace(model, x, num_draws, y=labels, seed=seed)
    values = latent_values(trace)
    if site is None:
        if not values:
            raise ConfigError("the model has no latent site")
        site = next(iter(values))
    if site not in values:
        raise ConfigError(f"{site!r} is not a latent site of the model; it has {list(values)}")
    draws = values[site].reshape(num_draws, -1)
    exact = _exact_quantiles(trace.nodes[site]["fn"], levels)
    if exact is not None and exact.shape[-1] == draws.shape[-1]:
        return site, exact.to(draws.dtype), "exact"
    return site, torch.quantile(draws, levels.to(draws.dtype), dim=0), "empirical"


@torch.no_grad()
def plot_manifold(
    model: Callable,
    x: torch.Tensor,
    out_dir: str | Path,
    *,
    site: str | None = None,
    n: int = 15,
    y: int | None = None,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    num_draws: int = 4096,
    seed: int = 0,
    name: str = "manifold",
) -> PlotResult:
    r"""``{name}.png``: an ``n x n`` grid of decoder means over the prior quantiles of a
    2-D latent site (see the module docs); non-image data as a heatmap of the ``n * n``
    decoded vectors.

    :param x: data; its first row sizes the data plate, and it sets the default grey levels.
    :param site: the gridded latent site; by default the model's first (top) one.
    :param y: for a conditional model, the one class decoded everywhere.
    :raises ConfigError: when the site does not have exactly two coordinates.
    :returns: a :class:`PlotResult` with tensors ``levels`` (``(n,)``), ``quantiles``
        (``(n, 2)``), ``grid`` (``(n * n, 2)``, row-major as drawn), ``latents`` (every site
        decoded, site -> ``(n * n, ...)``), ``mean`` (``(n * n, *data_shape)``) and
        ``method``.
    """
    x, _ = checked(model, None, x)
    levels = quantile_levels(n)
    site, quantiles, method = prior_quantiles(
        model, x, site, levels, y=y, num_draws=num_draws, seed=seed
    )
    if quantiles.shape[-1] != 2:
        raise ConfigError(
            f"the manifold grid needs a 2-D latent site; site {site!r} has "
            f"{quantiles.shape[-1]} coordinates. plot_latent_space shows latents of any "
            "dimension (by PCA); for this picture train with --latent-dim 2 (the hierarchical "
            "model: --top-latent-dim 2 for z2)"
        )
    first = quantiles[:, 0].repeat(n)  # column c: coordinate 0 at level c
    second = quantiles.flip(0)[:, 1].repeat_interleave(n)  # row r: coordinate 1 at n - 1 - r
    grid = torch.stack([first, second], dim=1)
    labels = None if y is None else torch.full((n * n,), int(y), dtype=torch.int64)
    decoding = decode(model, {site: grid.to(x)}, x, y=labels, seed=seed)
    mean = decoding.px.mean
    row_labels = [f"{site}[1]={float(v):.2f}" for v in quantiles.flip(0)[:, 1]]
    column_labels = [f"{site}[0]={float(v):.2f}" for v in quantiles[:, 0]]
    conditioned = "" if y is None else f", class y={int(y)}"
    path = write_cells(
        mean.reshape(n, n, -1),
        out_path(out_dir, name),
        image_shape=image_shape,
        value_range=range_for(x, value_range),
        title=f"decoded manifold of {site}: E[x | {site}] on prior quantiles{conditioned}",
        description=f"{n}x{n} grid at prior quantile levels (i+1/2)/{n} ({method}); columns: "
        f"{site}[0] increasing left to right, rows: {site}[1] decreasing top to bottom; "
        "other latent sites at their conditional means",
        row_labels=row_labels,
        column_labels=column_labels,
        scale=scale,
    )
    tensors = {
        "levels": levels,
        "quantiles": quantiles,
        "grid": grid,
        "latents": decoding.latents,
        "mean": mean,
        "method": method,
    }
    return PlotResult((path,), tensors)
