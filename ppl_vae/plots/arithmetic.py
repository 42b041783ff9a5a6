r"""Latent arithmetic: move inputs along an attribute vector and decode.

The attribute vector of two labelled groups is the difference of their mean posterior means,

.. math::

    v = \frac{1}{|T|} \sum_{n \in T} \mathbb{E}_q[z \mid x_n]
      - \frac{1}{|S|} \sum_{n \in S} \mathbb{E}_q[z \mid x_n],

``target`` group T minus ``source`` group S, per latent site (for the hierarchical model both
:math:`z_2` and :math:`z_1`), as in the "smile vector" of White [1]. Each input's posterior
mean is moved to :math:`\mathbb{E}_q[z \mid x] + s\, v` for the scales ``s`` and decoded to
the decoder mean; at :math:`s = 0` that is the plain reconstruction.

References

[1] White (2016), *Sampling Generative Networks*, arXiv:1609.04468.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ppl_vae.errors import ConfigError, DataError
from ppl_vae.plots._layout import checked, out_path, range_for
from ppl_vae.plots.decoding import decode
from ppl_vae.plots.encoding import posterior_means
from ppl_vae.plots.grids import write_cells
from ppl_vae.plots.result import PlotResult

__all__ = ["DEFAULT_SCALES", "attribute_vector", "plot_latent_arithmetic"]

#: Scales of the attribute vector, one column each.
DEFAULT_SCALES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)


def _group_rows(labels: torch.Tensor, group: int | float, role: str) -> torch.Tensor:
    rows = labels == group
    if not bool(rows.any()):
        present = sorted({int(v) if float(v).is_integer() else float(v) for v in labels.tolist()})
        raise DataError(
            f"latent arithmetic: no datapoint has the {role} label {group!r}; the labels "
            f"present are {present}"
        )
    return rows


def attribute_vector(
    means: dict[str, torch.Tensor],
    labels: torch.Tensor,
    *,
    source: int | float,
    target: int | float,
) -> dict[str, torch.Tensor]:
    """Site -> ``(*event_shape,)``: mean of ``means`` over rows labelled ``target`` minus the
    mean over rows labelled ``source``.

    :raises DataError: when a group has no datapoint (the message lists the labels present).
    :raises ConfigError: when ``source == target``.
    """
    if source == target:
        raise ConfigError(f"source and target must be different groups, got {source!r} twice")
    labels = torch.as_tensor(labels).reshape(-1)
    to_rows = _group_rows(labels, target, "target")
    from_rows = _group_rows(labels, source, "source")
    return {
        site: value[to_rows.to(value.device)].mean(0) - value[from_rows.to(value.device)].mean(0)
        for site, value in means.items()
    }


@torch.no_grad()
def plot_latent_arithmetic(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    out_dir: str | Path,
    *,
    source: int | float,
    target: int | float,
    num_inputs: int = 8,
    scales: Sequence[float] = DEFAULT_SCALES,
    y: torch.Tensor | None = None,
    show_inputs: bool = True,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] | None = None,
    scale: int | None = None,
    num_samples: int = 32,
    seed: int = 0,
    name: str = "latent_arithmetic",
) -> PlotResult:
    r"""``{name}.png``: the first ``num_inputs`` datapoints of the ``source`` group, one per
    row, moved along the attribute vector ``target - source`` (computed from all of ``x``)
    by each of ``scales``, one column per scale; with ``show_inputs`` the first column is the
    input itself. Non-image data as a heatmap with the same order of lines.

    :param labels: ``(N,)`` group labels of ``x`` (e.g. the classes).
    :param source: the group the inputs come from and the vector starts at.
    :param target: the group the vector points to.
    :param y: labels ``(N,)`` read by conditional models (each input is decoded with its own).
    :raises DataError: without labels, or when a group has no datapoint.
    :returns: a :class:`PlotResult` with tensors ``attribute`` (site -> vector),
        ``scales`` (``(K,)``), ``rows`` (the inputs' row indices in ``x``), ``inputs``,
        ``latents`` (site -> ``(R, K, ...)`` moved latents) and ``mean`` (``(R, K,
        *data_shape)`` decoder means).
    """
    if labels is None:
        raise DataError(
            "latent arithmetic needs labels naming the groups (e.g. the classes of a labelled "
            "dataset); this data has none"
        )
    x, y = checked(model, guide, x, y)
    labels = torch.as_tensor(labels).reshape(-1).cpu()
    if labels.shape[0] != x.shape[0]:
        raise DataError(
            f"labels must hold one value per datapoint ({x.shape[0]}), got {labels.shape[0]}"
        )
    scale_values = torch.tensor([float(s) for s in scales], dtype=torch.float64)
    if scale_values.numel() < 1:
        raise ConfigError("latent arithmetic needs at least one scale")
    means = posterior_means(guide, x, y=y, num_samples=num_samples, seed=seed)
    vector = attribute_vector(means, labels, source=source, target=target)
    rows = torch.nonzero(labels == source).reshape(-1)[:num_inputs]
    count, k = rows.numel(), scale_values.numel()
    latents = {}
    for site, value in means.items():
        start = value[rows.to(value.device)]  # (R, ...)
        steps = scale_values.to(value).reshape(1, k, *([1] * (value.dim() - 1)))
        latents[site] = start.unsqueeze(1) + steps * vector[site]
    flat = {site: v.reshape(count * k, *v.shape[2:]) for site, v in latents.items()}
    decode_y = None if y is None else y[rows].repeat_interleave(k)
    mean = decode(model, flat, x, y=decode_y, seed=seed).px.mean
    cells = mean.reshape(count, k, -1).cpu()
    columns = [f"s={float(s):g}" for s in scale_values]
    if show_inputs:
        cells = torch.cat([x[rows].reshape(count, 1, -1).cpu().to(cells.dtype), cells], dim=1)
        columns = ["input", *columns]
    path = write_cells(
        cells,
        out_path(out_dir, name),
        image_shape=image_shape,
        value_range=range_for(x, value_range),
        title=f"latent arithmetic: E_q[z | x] + s (mean z of {target!r} - mean z of {source!r})",
        description=f"rows: {count} inputs labelled {source!r}; columns: "
        + ("the input, then " if show_inputs else "")
        + f"decoder means at scales s = {', '.join(f'{float(s):g}' for s in scale_values)}",
        row_labels=[f"input {int(r)}" for r in rows],
        column_labels=columns,
        scale=scale,
    )
    tensors = {
        "attribute": vector,
        "scales": scale_values,
        "rows": rows,
        "inputs": x[rows],
        "latents": latents,
        "mean": mean.reshape(count, k, *mean.shape[1:]),
    }
    return PlotResult((path,), tensors)
