r"""The latent layout of a model on one datapoint, and the ArviZ ``InferenceData`` built on it,
for :mod:`ppl_vae.diagnostics.mcmc`.

A model keeping the contract of DESIGN.md section 2 is traced once on a single datapoint;
its latent sites, in execution order, must be continuous (NUTS samples continuous latents
only, in the unconstrained space of :func:`torch.distributions.biject_to`), lie in the
``"data"`` plate and have value shape ``(1, *event_shape)``. Each site's event is flattened
in C order into :math:`\prod_j e_j` coordinates, and the sites are concatenated into one
vector :math:`z \in \mathbb{R}^D`; :class:`Layout` records which columns
``[start, stop)`` belong to which site.

Draws of either source (NUTS chains, or the guide with a single chain) become an
:class:`arviz.InferenceData` whose ``posterior`` group has one variable per latent site with
dims ``(chain, draw, obs, latent)`` when the model has one latent site, else
``(chain, draw, obs, latent_<site>)``; NUTS draws also get ``sample_stats`` with dims
``(chain, draw, obs)``, ``observed_data`` (``x``) and ``constant_data`` (``y``, ``mask``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import arviz as az
import numpy as np
import torch
import xarray as xr
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppl_vae.errors import ContractError
from ppl_vae.importance import guide_draws

__all__ = [
    "Layout",
    "data_groups",
    "guide_idata",
    "guide_values",
    "layout_from_columns",
    "mcmc_idata",
    "model_layout",
    "posterior_dims",
]


@dataclass(frozen=True)
class Layout:
    """The model's latent sites in execution order and their columns in the flat vector."""

    event_shapes: dict[str, tuple[int, ...]]

    @property
    def sites(self) -> list[str]:
        return list(self.event_shapes)

    @property
    def columns(self) -> dict[str, tuple[int, int]]:
        columns, start = {}, 0
        for name, shape in self.event_shapes.items():
            size = math.prod(shape)
            columns[name] = (start, start + size)
            start += size
        return columns

    def dim(self, name: str) -> str:
        """The ArviZ dimension of a site's coordinates: ``latent`` alone, else per site."""
        return "latent" if len(self.event_shapes) == 1 else f"latent_{name}"


def model_layout(model: Callable, args: tuple, kwargs: dict) -> Layout:
    """Trace the model on one datapoint and check its latent sites suit NUTS."""
    try:
        with torch.no_grad():
            trace = poutine.trace(model).get_trace(*args, **kwargs)
    except (ValueError, RuntimeError, IndexError, TypeError, NotImplementedError) as error:
        raise ContractError(
            f"the model failed on a single datapoint: {str(error).splitlines()[0]}"
        ) from error
    shapes: dict[str, tuple[int, ...]] = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or site["is_observed"]:
            continue
        if site["fn"].support.is_discrete:
            raise ContractError(
                f"latent site {name!r} is discrete; NUTS samples continuous latents only. "
                "Observe it (for labels, pass y=...) or compare guides by importance sampling"
            )
        if not any(frame.name == "data" for frame in site["cond_indep_stack"]):
            raise ContractError(
                f"latent site {name!r} lies outside pyro.plate('data'); the contract puts "
                "every latent site in the data plate, one value per datapoint"
            )
        event = tuple(site["fn"].event_shape)
        if tuple(site["value"].shape) != (1, *event):
            raise ContractError(
                f"latent site {name!r} has shape {tuple(site['value'].shape)} on one datapoint;"
                f" expected (1, *event_shape) = {(1, *event)}. Move extra dimensions into the "
                "event with .to_event()"
            )
        shapes[name] = event
    if not shapes:
        raise ContractError("the model has no latent site to sample")
    if "x" not in trace.nodes:
        raise ContractError("the model has no observed site named 'x'")
    return Layout(shapes)


def layout_from_columns(
    latent_columns: Mapping[str, tuple[int, int]], posterior: xr.Dataset
) -> Layout:
    """The layout read back from a comparison's ``latent_columns`` (each site flat), checked
    against the dims of its ``posterior`` group."""
    shapes = {}
    for name in latent_columns:
        start, stop = latent_columns[name]
        shapes[name] = (stop - start,)
    layout = Layout(shapes)
    for name in layout.sites:
        if posterior[name].dims[-1] != layout.dim(name):
            raise ValueError(f"unexpected dims {posterior[name].dims} of site {name!r}")
    return layout


def guide_values(
    guide: Callable,
    layout: Layout,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    y: torch.Tensor | None,
    num_samples: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Guide draws per site, flattened to ``(num_samples, N, size)``, checked against the
    model's latent sites."""
    with torch.no_grad():
        draws = guide_draws(guide, x, mask, y, 0, num_samples, seed)
    missing = sorted(set(layout.sites) - set(draws.values))
    extra = sorted(set(draws.values) - set(layout.sites))
    if missing or extra:
        raise ContractError(
            f"the guide must sample exactly the model's latent sites {layout.sites}; "
            f"missing {missing}, unknown {extra}"
        )
    values = {}
    for name, (start, stop) in layout.columns.items():
        value = draws.values[name].detach()
        event = value.shape[value.dim() - draws.event_dims[name] :]
        if math.prod(event) != stop - start:
            raise ContractError(
                f"the guide's site {name!r} has event shape {tuple(event)}, the model's "
                f"{layout.event_shapes[name]}"
            )
        value = value.reshape(*value.shape[: value.dim() - len(event)], stop - start)
        values[name] = value.expand(num_samples, x.shape[0], stop - start)
    return values


def data_groups(
    x: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor | None
) -> dict[str, xr.Dataset]:
    """``observed_data`` (``x``) and, where given, ``constant_data`` (``y``, ``mask``)."""

    def variable(name: str, value: torch.Tensor) -> xr.DataArray:
        dims = ["obs", *(f"{name}_dim_{k}" for k in range(value.dim() - 1))]
        return xr.DataArray(value.detach().cpu().numpy(), dims=dims)

    obs = {"obs": np.arange(x.shape[0])}
    groups = {"observed_data": xr.Dataset({"x": variable("x", x)}, coords=obs)}
    constant = {}
    if y is not None:
        constant["y"] = variable("y", y)
    if mask is not None:
        constant["mask"] = variable("mask", mask.expand(x.shape[0], *mask.shape[1:]))
    if constant:
        groups["constant_data"] = xr.Dataset(constant, coords=obs)
    return groups


def posterior_dims(layout: Layout) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """ArviZ ``dims`` (``obs`` and the site's coordinate dim) and coordinate ``coords`` of the
    posterior variables."""
    dims, coords = {}, {}
    for name, (start, stop) in layout.columns.items():
        dim = layout.dim(name)
        dims[name] = ["obs", dim]
        coords[dim] = np.arange(stop - start)
    return dims, coords


def guide_idata(
    values: dict[str, torch.Tensor], layout: Layout, num_data: int, attrs: dict
) -> az.InferenceData:
    """Guide draws ``(num_samples, N, size)`` per site as a one-chain ``posterior`` group."""
    dims, coords = posterior_dims(layout)
    posterior = {
        name: value.reshape(1, value.shape[0], num_data, -1).cpu().double().numpy()
        for name, value in values.items()
    }
    coords["obs"] = np.arange(num_data)
    return az.from_dict(posterior=posterior, coords=coords, dims=dims, posterior_attrs=attrs)


def mcmc_idata(
    layout: Layout,
    draws: list[dict[str, np.ndarray]],
    stats: list[dict[str, np.ndarray]],
    attrs: dict,
    groups: dict[str, xr.Dataset],
) -> az.InferenceData:
    """NUTS draws ``(chain, draw, size)`` per site and sampler statistics ``(chain, draw)``,
    one dict of each per datapoint, stacked along ``obs`` into ``posterior`` and
    ``sample_stats`` (both with ``attrs``), with the data ``groups`` added."""
    dims, coords = posterior_dims(layout)
    coords["obs"] = np.arange(len(draws))
    # per row (chain, draw, ...) -> (chain, draw, obs, ...)
    posterior = {name: np.stack([row[name] for row in draws], axis=2) for name in layout.sites}
    sample_stats = {key: np.stack([row[key] for row in stats], axis=2) for key in stats[0]}
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats,
        coords=coords,
        dims={**dims, **{key: ["obs"] for key in sample_stats}},
        posterior_attrs=attrs,
        sample_stats_attrs=attrs,
    )
    idata.add_groups(groups)
    return idata
