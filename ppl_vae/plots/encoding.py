r"""Posterior means :math:`\mathbb{E}_{q}[z \mid x]` of every latent site of a guide.

The guide runs on blocks of datapoints under ``pyro.plate("particles", S, dim=-2)`` (the
contract of DESIGN.md section 2, nothing else), and for each latent site the mean is

* the family's own mean (``site["fn"].mean``) where it has a finite one: exact for a site
  whose distribution depends on x alone (a Gaussian guide of any covariance), and for a
  lower layer :math:`q(z_1 \mid x, z_2)` of a hierarchical guide the average over the S
  particles of its conditional means, :math:`\mathbb{E}_{z_2 \sim q(z_2 \mid x)}
  \mathbb{E}[z_1 \mid x, z_2]` (tower rule, a Monte Carlo estimate);
* the average of the S draws where the family has no closed-form mean (normalizing flows).

Draws are seeded, so the result is a fixed function of ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyro
import torch

from ppl_vae.errors import ContractError
from ppl_vae.importance import (
    DEFAULT_CHUNK_SIZE,
    PARTICLE_DIM,
    latent_sites,
    rng_scope,
    trace_program,
)

__all__ = ["concat_sites", "posterior_means"]


def _site_mean(site: dict) -> torch.Tensor:
    """``(n, *event_shape)``: the particle average of the family mean, else of the draws."""
    value, fn = site["value"], site["fn"]
    try:
        mean = fn.mean.expand(value.shape)
        if not bool(torch.isfinite(mean).all()):
            raise ValueError("no finite mean")
    except (NotImplementedError, AttributeError, RuntimeError, ValueError):
        mean = value
    if mean.dim() - fn.event_dim == 2:  # (S, n, ...): average the particles
        mean = mean.mean(0)
    return mean


@torch.no_grad()
def posterior_means(
    guide: Callable,
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    num_samples: int = 32,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, torch.Tensor]:
    r"""Site name -> ``(N, *event_shape)`` posterior means :math:`\mathbb{E}_q[z \mid x_n]`,
    in the guide's sampling order (see the module docs for how each is computed).

    :param guide: ``guide(x, mask=None)`` keeping the contract.
    :param x: data ``(N, *data_shape)``.
    :param y: labels ``(N,)`` for conditional programs (passed as the keyword ``y``).
    :param num_samples: particles S per datapoint (used by lower layers and flows only).
    :param seed: seeds the draws; the caller's random stream is left as it was.
    :param chunk_size: bound on (particle, datapoint) pairs per vectorized pass.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    rows = max(1, chunk_size // num_samples)
    parts: dict[str, list[torch.Tensor]] = {}
    with rng_scope(x.device, seed):
        for start in range(0, x.shape[0], rows):
            block = slice(start, start + rows)
            y_block = None if y is None else y[block]
            with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
                trace = trace_program("guide", guide, x[block], None, y_block)
            sites = latent_sites(trace)
            if not sites:
                raise ContractError("the guide samples no latent site; it must sample every latent")
            for name, site in sites.items():
                parts.setdefault(name, []).append(_site_mean(site))
    return {name: torch.cat(values) for name, values in parts.items()}


def concat_sites(latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(N, D)``: every site's event flattened and joined in the mapping's order."""
    return torch.cat([value.reshape(value.shape[0], -1) for value in latents.values()], dim=-1)
