"""Guide draws and model replays under a particles plate: the traces the latent and
predictive diagnostics read, taken through the contract of DESIGN.md section 2 only.

The guide runs under ``pyro.plate("particles", S, dim=-2)`` on a block of datapoints, so
every latent site has values of shape ``(S, n, *event_shape)``; the model is then replayed on
those values (:func:`pyro.poutine.replay`), optionally with its observed site turned into a
sampled one (:func:`pyro.poutine.uncondition`), or run alone to draw from its prior.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyro
import torch
from pyro import poutine

from ppl_vae.errors import ContractError
from ppl_vae.importance import PARTICLE_DIM, latent_sites, trace_program

__all__ = [
    "data_blocks",
    "flatten_coordinates",
    "guide_latents",
    "iter_blocks",
    "replay_model",
    "trace_guide",
    "trace_model",
]


def data_blocks(num_data: int, num_samples: int, chunk_size: int) -> list[slice]:
    """Consecutive row blocks holding at most ``max(chunk_size, num_samples)`` (particle,
    datapoint) pairs each."""
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(
            f"num_samples and chunk_size must be positive, got {num_samples}, {chunk_size}"
        )
    rows = max(1, chunk_size // num_samples)
    return [slice(i, min(i + rows, num_data)) for i in range(0, num_data, rows)]


def iter_blocks(
    x: torch.Tensor, y: torch.Tensor | None, num_samples: int, chunk_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(x[rows], y[rows])`` (``y`` possibly ``None``) for the row blocks of
    :func:`data_blocks`."""
    for rows in data_blocks(x.shape[0], num_samples, chunk_size):
        yield x[rows], None if y is None else y[rows]


def trace_guide(
    guide: Callable, x: torch.Tensor, y: torch.Tensor | None, num_samples: int
) -> poutine.Trace:
    """The guide's trace on ``x`` under ``pyro.plate("particles", num_samples, dim=-2)``."""
    with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
        return trace_program("guide", guide, x, None, y)


def guide_latents(trace: poutine.Trace) -> dict[str, dict]:
    """The guide's latent sites in sampling order; raises if there are none."""
    sites = latent_sites(trace)
    if not sites:
        raise ContractError("the guide samples no latent site; it must sample every latent")
    return sites


def replay_model(
    model: Callable,
    guide_trace: poutine.Trace,
    x: torch.Tensor,
    y: torch.Tensor | None,
    num_samples: int,
    *,
    uncondition: bool = False,
) -> poutine.Trace:
    """The model's trace with its latent sites replayed from ``guide_trace``; with
    ``uncondition=True`` observed sites are sampled from the model instead (the value given
    as ``obs`` is kept in ``site["infer"]["obs"]``). Checks that the guide covers exactly the
    model's latent sites."""
    program = poutine.uncondition(model) if uncondition else model
    with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
        trace = trace_program("model", poutine.replay(program, trace=guide_trace), x, None, y)
    guide_names = set(latent_sites(guide_trace))
    model_latents = {
        name
        for name, site in latent_sites(trace).items()
        if not site["infer"].get("was_observed", False)
    }
    missing = sorted(model_latents - guide_names)
    if missing:
        raise ContractError(
            f"the guide does not sample the model's latent sites {missing}; a guide must "
            "sample every latent site of the model"
        )
    unknown = sorted(guide_names - set(trace.nodes))
    if unknown:
        raise ContractError(
            f"the guide samples sites {unknown} that the model does not have; rename them "
            "to the model's latent site names"
        )
    if "x" not in trace.nodes:
        raise ContractError("the model has no observed site named 'x'")
    return trace


def trace_model(
    model: Callable, x: torch.Tensor, y: torch.Tensor | None, num_samples: int
) -> poutine.Trace:
    """The model's trace on ``x`` with every latent drawn from the model itself (ancestral
    draws from the prior p(z), or p(z | y) for conditional programs)."""
    with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
        return trace_program("model", model, x, None, y)


def flatten_coordinates(value: torch.Tensor, event_dim: int, num_samples: int) -> torch.Tensor:
    """``(S, n, *event_shape)`` (or ``(n, *event_shape)``, broadcast over particles) to
    ``(S, n, D)`` with ``D`` the number of coordinates of the event (1 for a scalar site)."""
    batch = value.shape[: value.dim() - event_dim]
    flat = value.reshape(*batch, -1) if event_dim else value.unsqueeze(-1)
    if flat.dim() == 2:
        flat = flat.unsqueeze(0)
    return flat.expand(num_samples, *flat.shape[1:])
