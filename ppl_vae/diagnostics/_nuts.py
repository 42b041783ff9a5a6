r"""NUTS chains on one datapoint's posterior, with per-draw sampler statistics, for
:mod:`ppl_vae.diagnostics.mcmc`.

The model is run on one datapoint; :func:`pyro.infer.mcmc.util.initialize_model` gives the
potential energy :math:`U(u) = -\log p_\theta(x_i, z(u)) - \log\lvert\det J\rvert` over the
unconstrained latents :math:`u` and the transforms back to :math:`z`. Each chain is one run
of :class:`pyro.infer.NUTS` [1] (step size adapted by dual averaging toward a target
acceptance probability, diagonal or dense mass matrix), started from a draw of the guide
mapped to :math:`u`, on its own generator, the chains one after the other in this process.

Per kept draw the chain records, through MCMC's ``hook_fn``:

* ``step_size`` and ``n_steps``, the number of leapfrog steps (potential-energy gradient
  evaluations since the previous draw), and ``tree_depth`` :math:`= \lceil \log_2(n_{steps}
  + 1) \rceil`, the number of tree doublings;
* ``acceptance_rate``: Pyro keeps only the running mean :math:`m_n` of the acceptance
  statistic, from which the per-draw value is :math:`a_n = n m_n - (n - 1) m_{n-1}`;
* ``lp`` :math:`= -U`, the log joint density in the unconstrained space, and ``diverging``.

References

[1] Hoffman & Gelman (2014), *The No-U-Turn sampler: adaptively setting path lengths in
    Hamiltonian Monte Carlo*, JMLR 15, 1593-1623.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model

from ppl_vae.diagnostics._mcmc_layout import Layout
from ppl_vae.importance import rng_scope
from ppl_vae.seeding import derive_seed

__all__ = ["chain_inits", "run_chain", "sample_row", "tree_depth"]


def tree_depth(n_steps: np.ndarray) -> np.ndarray:
    """Tree doublings :math:`\\lceil \\log_2(n_{steps} + 1) \\rceil` of NUTS draws that took
    ``n_steps`` leapfrog steps."""
    return np.ceil(np.log2(n_steps + 1.0)).astype(np.int64)


def run_chain(
    potential_fn: Callable,
    transforms: dict,
    init: dict[str, torch.Tensor],
    *,
    num_samples: int,
    warmup_steps: int,
    kernel_options: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """One NUTS chain from ``init`` (unconstrained); returns constrained draws per site
    ``(num_samples, 1, *event)`` and per-draw sampler statistics."""
    calls = [0]

    def counted(params: dict[str, torch.Tensor]) -> torch.Tensor:
        calls[0] += 1
        return potential_fn(params)

    records: dict[str, list] = {
        "step_size": [],
        "n_steps": [],
        "mean_accept": [],
        "lp": [],
        "diverging": [],
    }

    def hook(kernel: NUTS, params: dict, stage: str, i: int) -> None:
        count, calls[0] = calls[0], 0
        if not stage.startswith("Sample"):
            return
        records["step_size"].append(float(kernel.step_size))
        records["n_steps"].append(count)
        # Pyro keeps a running mean of the acceptance statistic and the state's potential
        # energy only as private attributes; fall back to NaN if they move.
        records["mean_accept"].append(float(getattr(kernel, "_mean_accept_prob", math.nan)))
        energy = getattr(kernel, "_potential_energy_last", None)
        records["lp"].append(math.nan if energy is None else -float(energy))
        divergences = kernel.diagnostics()["divergences"]
        records["diverging"].append(bool(divergences) and divergences[-1] == i)

    kernel = NUTS(potential_fn=counted, **kernel_options)
    mcmc = MCMC(
        kernel,
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        initial_params=init,
        hook_fn=hook,
        disable_progbar=True,
        transforms=transforms,
    )
    mcmc.run()
    samples = {name: value.detach() for name, value in mcmc.get_samples().items()}
    stats = {key: np.asarray(val) for key, val in records.items()}
    # Per-draw acceptance statistic from the running mean m_n: a_n = n m_n - (n - 1) m_{n-1}.
    running = stats.pop("mean_accept")
    n = np.arange(1, running.size + 1)
    stats["acceptance_rate"] = n * running - (n - 1) * np.concatenate([[0.0], running[:-1]])
    stats["tree_depth"] = tree_depth(stats["n_steps"])
    return samples, stats


def chain_inits(
    potential_fn: Callable,
    transforms: dict,
    fallback: dict[str, torch.Tensor],
    inits: list[dict[str, torch.Tensor]],
) -> list[dict[str, torch.Tensor]]:
    """Guide draws mapped to the unconstrained space; a draw where the model's density is
    not finite is replaced by Pyro's own valid initial point, with a warning."""
    result = []
    for chain, values in enumerate(inits):
        init = {name: transforms[name](value) for name, value in values.items()}
        with torch.no_grad():
            energy = potential_fn(init)
        if not bool(torch.isfinite(energy)):
            warnings.warn(
                f"chain {chain}: the model's density is not finite at the guide's draw; "
                "starting from Pyro's uniform initialisation instead",
                RuntimeWarning,
                # chain_inits <- sample_row <- posterior_mcmc <- its caller
                stacklevel=4,
            )
            init = fallback
        result.append(init)
    return result


def sample_row(
    model: Callable,
    program: tuple[tuple, dict],
    layout: Layout,
    starts: list[dict[str, torch.Tensor]],
    *,
    seeds: tuple[int, int],
    device: torch.device,
    num_samples: int,
    warmup_steps: int,
    kernel_options: dict[str, Any],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """NUTS chains on one datapoint (the model called with ``program = (args, kwargs)``),
    chain ``c`` started from the flat guide draws ``starts[c]`` and seeded by
    ``derive_seed(seeds[1], c)``. Returns draws per site ``(chain, draw, size)`` (float64),
    sampler statistics ``(chain, draw)`` and the seconds it took."""
    start = time.perf_counter()
    args, kwargs = program
    with rng_scope(device, seeds[0]):
        fallback, potential_fn, transforms, _ = initialize_model(
            model, model_args=args, model_kwargs=kwargs
        )
    inits = [
        {name: flat[name].reshape(1, *layout.event_shapes[name]) for name in layout.sites}
        for flat in starts
    ]
    chains = []
    for c, init in enumerate(chain_inits(potential_fn, transforms, fallback, inits)):
        with rng_scope(device, derive_seed(seeds[1], c)):
            chains.append(
                run_chain(
                    potential_fn,
                    transforms,
                    init,
                    num_samples=num_samples,
                    warmup_steps=warmup_steps,
                    kernel_options=kernel_options,
                )
            )
    draws = {
        # (num_samples, 1, *event) per chain -> (chain, draw, size)
        name: torch.stack([samples[name] for samples, _ in chains])
        .reshape(len(chains), num_samples, -1)
        .cpu()
        .double()
        .numpy()
        for name in layout.sites
    }
    stats = {key: np.stack([chain_stats[key] for _, chain_stats in chains]) for key in chains[0][1]}
    return draws, stats, time.perf_counter() - start
