r"""The model's :math:`p(x \mid z)` at chosen latents, and ancestral draws from :math:`p(x)`.

Both run the model through the contract only (DESIGN.md section 2): its latent sites are
fixed by an effect handler and its observed site ``"x"`` is read from the trace, so they work
for :class:`~models.VAE`, :class:`~models.HierarchicalVAE` (sites ``z2``, ``z1``),
:class:`~models.ConditionalVAE` (labels as the keyword ``y``) and plain Pyro functions alike.
The data tensor passed to the model only sizes the ``"data"`` plate (its first row, repeated,
stands in for the observation, which is never scored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ppl_vae.errors import ContractError
from ppl_vae.importance import rng_scope
from ppl_vae.programs import program_args

__all__ = [
    "Decoding",
    "PriorDraws",
    "ancestral_trace",
    "decode",
    "latent_values",
    "placeholder",
    "prior_draws",
]


def placeholder(x: torch.Tensor, num: int) -> torch.Tensor:
    """``(num, *data_shape)``: the first row of ``x`` repeated, to size a model's data plate."""
    if x.shape[0] < 1:
        raise ValueError("need at least one datapoint to size the model's data plate")
    return x[:1].expand(num, *x.shape[1:])


def _mean_or_draw(fn: Any) -> torch.Tensor:
    try:
        mean = fn.mean
        if bool(torch.isfinite(mean).all()):
            return mean.expand(fn.batch_shape + fn.event_shape)
    except (NotImplementedError, AttributeError, RuntimeError):
        pass
    return fn.sample()


class _SetLatents(Messenger):
    """Latent sites named in ``values`` take those values; every other latent site takes its
    (conditional) distribution's mean, or a draw where it has none. Observed sites are left
    alone."""

    def __init__(self, values: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = dict(values)

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or site_is_subsample(msg):
            return
        name = msg["name"]
        msg["value"] = self.values[name] if name in self.values else _mean_or_draw(msg["fn"])
        msg["done"] = True


def latent_values(trace: poutine.Trace) -> dict[str, torch.Tensor]:
    """Site name -> value of the trace's latent sites, in execution order (observed sites,
    unconditioned ones included, left out)."""
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and not site["is_observed"]
        and not site["infer"].get("was_observed", False)
    }


def _observed(trace: poutine.Trace) -> dict:
    if "x" not in trace.nodes:
        raise ContractError("the model has no observed site named 'x'")
    return trace.nodes["x"]


class Decoding(NamedTuple):
    r"""The result of :func:`decode`: every latent site's value (the given ones and those
    filled in with conditional means), and :math:`p(x \mid z)` with batch shape ``(N,)``."""

    latents: dict[str, torch.Tensor]
    px: Any


@torch.no_grad()
def decode(
    model: Callable,
    latents: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    seed: int = 0,
) -> Decoding:
    r""":math:`p(x \mid z)` at the given latents, one datapoint per row.

    :param latents: site name -> ``(N, *event_shape)``. Latent sites of the model not named
        here take the mean of their distribution given the sites before them (e.g. ``z1 =
        E[z1 | z2]`` when only ``z2`` of a hierarchical model is given), or a seeded draw
        where that distribution has no closed-form mean.
    :param x: data whose first row sizes the data plate (never scored).
    :param y: labels ``(N,)`` for conditional programs.
    :returns: a :class:`Decoding`; ``.px.mean`` is the decoder mean, ``.px.sample()`` a
        draw of x.
    :raises ContractError: when a name is not a latent site of the model, or the model has
        no site ``"x"``.
    """
    sizes = {int(value.shape[0]) for value in latents.values()}
    if len(sizes) != 1:
        raise ValueError(f"every site needs the same number of rows, got {sorted(sizes)}")
    args, kwargs = program_args(placeholder(x, sizes.pop()), None, y)
    with rng_scope(x.device, seed):
        trace = poutine.trace(_SetLatents(latents)(model)).get_trace(*args, **kwargs)
    found = latent_values(trace)
    unknown = sorted(set(latents) - set(found))
    if unknown:
        raise ContractError(
            f"{unknown} are not latent sites of the model; its latent sites are {list(found)}"
        )
    return Decoding(found, _observed(trace)["fn"])


class PriorDraws(NamedTuple):
    r"""Ancestral draws: latents :math:`z \sim p(z)` (site -> ``(num, *event_shape)``), the
    decoder mean :math:`\mathbb{E}[x \mid z]` and a draw :math:`x \sim p(x \mid z)` of the
    same z, both ``(num, *data_shape)``."""

    latents: dict[str, torch.Tensor]
    mean: torch.Tensor
    draw: torch.Tensor


@torch.no_grad()
def prior_draws(
    model: Callable,
    x: torch.Tensor,
    num: int,
    *,
    y: torch.Tensor | None = None,
    seed: int = 0,
) -> PriorDraws:
    r"""``num`` ancestral draws of the model (``x`` only sizes the data plate; for
    conditional programs ``y`` gives each draw's label, shape ``(num,)``): the model runs
    with its observed site unconditioned, so ``"x"`` is drawn from :math:`p(x \mid z)`."""
    trace = ancestral_trace(model, x, num, y=y, seed=seed)
    site = _observed(trace)
    return PriorDraws(latent_values(trace), site["fn"].mean, site["value"])


@torch.no_grad()
def ancestral_trace(
    model: Callable,
    x: torch.Tensor,
    num: int,
    *,
    y: torch.Tensor | None = None,
    seed: int = 0,
) -> poutine.Trace:
    """The model's trace with every site drawn from the model, ``"x"`` included (it is
    unconditioned): ``num`` rows, ``x`` only sizing the data plate (see
    :func:`prior_draws`)."""
    if num < 1:
        raise ValueError(f"num must be positive, got {num}")
    args, kwargs = program_args(placeholder(x, num), None, y)
    with rng_scope(x.device, seed):
        return poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
