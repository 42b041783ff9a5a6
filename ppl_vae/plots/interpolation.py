r"""Interpolation between two inputs in latent space, linear and spherical.

The endpoints are the posterior means :math:`a = \mathbb{E}_q[z \mid x_a]` and
:math:`b = \mathbb{E}_q[z \mid x_b]` of every latent site (each site interpolated on its
own), and each point on the way is decoded to its decoder mean. At :math:`t = 0` and
:math:`t = 1` the pictures are therefore the two reconstructions.

* linear: :math:`(1 - t)\, a + t\, b`. Under a Gaussian prior in many dimensions its
  midpoints pass close to the origin, where the prior has little mass: their norm drops to
  :math:`|a| \cos(\Omega / 2)` for :math:`|a| = |b|` (White [1]).
* spherical (slerp, Shoemake [2]): the direction moves along the great circle from
  :math:`\hat a` to :math:`\hat b` at constant angular speed and the norm changes linearly,

  .. math::

      \mathrm{slerp}(a, b; t) = \big((1 - t) |a| + t |b|\big)\,
          \frac{\sin((1 - t)\Omega)\, \hat a + \sin(t \Omega)\, \hat b}{\sin \Omega},
      \qquad \cos \Omega = \hat a \cdot \hat b,

  so the angle to :math:`a` is :math:`t\Omega` and the norm :math:`(1 - t)|a| + t|b|`; for
  :math:`|a| = |b|` this is exactly White's slerp [1]. Nearly parallel endpoints
  (:math:`\sin \Omega < 10^{-6}`) fall back to the linear path, as does a zero endpoint.

For conditional models each point is decoded with the label of the nearer endpoint
(:math:`y_a` for :math:`t < 1/2`, else :math:`y_b`).

References

[1] White (2016), *Sampling Generative Networks*, arXiv:1609.04468.
[2] Shoemake (1985), *Animating rotation with quaternion curves*, SIGGRAPH.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ppl_vae.errors import ConfigError
from ppl_vae.plots._layout import checked, out_path, range_for
from ppl_vae.plots.decoding import decode
from ppl_vae.plots.encoding import posterior_means
from ppl_vae.plots.grids import write_cells
from ppl_vae.plots.result import PlotResult

__all__ = ["lerp", "plot_interpolation", "slerp"]


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(T, *shape)``: :math:`(1 - t) a + t b` for each of the ``T`` values of ``t``."""
    t = t.to(device=a.device, dtype=a.dtype).reshape(-1, *([1] * a.dim()))
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """``(T, *shape)``: the spherical interpolation of the module docs (the tensors are
    flattened to vectors for the angle, and reshaped back)."""
    t = t.to(device=a.device, dtype=a.dtype).reshape(-1, 1)
    u, v = a.reshape(-1), b.reshape(-1)
    norm_u, norm_v = u.norm(), v.norm()
    if float(norm_u) == 0.0 or float(norm_v) == 0.0:
        return lerp(a, b, t.reshape(-1))
    hat_u, hat_v = u / norm_u, v / norm_v
    omega = torch.arccos(torch.clamp(hat_u @ hat_v, -1.0, 1.0))
    sin_omega = torch.sin(omega)
    if float(sin_omega) < eps:
        return lerp(a, b, t.reshape(-1))
    direction = (torch.sin((1 - t) * omega) * hat_u + torch.sin(t * omega) * hat_v) / sin_omega
    path = ((1 - t) * norm_u + t * norm_v) * direction
    return path.reshape(-1, *a.shape)


@torch.no_grad()
def plot_interpolation(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    out_dir: str | Path,
    *,
    steps: int = 10,
    y: torch.Tensor | None = None,
    show_inputs: bool = True,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    num_samples: int = 32,
    seed: int = 0,
    name: str = "interpolation",
) -> PlotResult:
    r"""``{name}.png``: two rows of decoded images between the two inputs ``x[0]`` and
    ``x[1]``: row 1 linear, row 2 spherical, at ``steps`` evenly spaced ``t`` from 0 to 1;
    with ``show_inputs`` the inputs themselves are the first and last columns. Non-image
    data as a heatmap with the same order of lines.

    :param x: exactly two datapoints ``(2, *data_shape)``.
    :param y: their labels ``(2,)`` for conditional models.
    :returns: a :class:`PlotResult` with tensors ``t`` (``(steps,)``), ``endpoints`` (site
        -> ``(2, ...)`` posterior means), ``linear`` and ``spherical`` (site ->
        ``(steps, ...)`` latents) and ``linear_mean``, ``spherical_mean`` (``(steps,
        *data_shape)`` decoder means).
    """
    x, y = checked(model, guide, x, y)
    if x.shape[0] != 2:
        raise ConfigError(f"interpolation needs exactly two inputs, got {x.shape[0]}")
    if steps < 2:
        raise ConfigError(f"interpolation needs at least 2 steps (t = 0 and 1), got {steps}")
    ends = posterior_means(guide, x, y=y, num_samples=num_samples, seed=seed)
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    labels = None if y is None else torch.where((t < 0.5).to(y.device), y[0], y[1])
    tensors: dict = {"t": t, "endpoints": ends}
    rows = []
    for kind, path_fn in (("linear", lerp), ("spherical", slerp)):
        latents = {site: path_fn(v[0], v[1], t) for site, v in ends.items()}
        mean = decode(model, latents, x, y=labels, seed=seed).px.mean
        tensors[kind], tensors[f"{kind}_mean"] = latents, mean
        row = mean.reshape(steps, -1).cpu()
        if show_inputs:
            flat = x.reshape(2, -1).cpu().to(row.dtype)
            row = torch.cat([flat[:1], row, flat[1:]])
        rows.append(row)
    columns = [f"t={float(v):.2f}" for v in t]
    if show_inputs:
        columns = ["input a", *columns, "input b"]
    inputs = "first and last columns the inputs, " if show_inputs else ""
    path = write_cells(
        torch.stack(rows),
        out_path(out_dir, name),
        image_shape=image_shape,
        value_range=range_for(x, value_range),
        title="latent interpolation: row 1 linear, row 2 spherical (slerp)",
        description=f"{inputs}{steps} decoder means at t = 0..1 between the posterior means of "
        "the two inputs; row 1 linear, row 2 spherical",
        row_labels=["linear", "spherical"],
        column_labels=columns,
        scale=scale,
    )
    return PlotResult((path,), tensors)
