r"""The true posterior by MCMC, compared with the guide.

For each datapoint :math:`x_i` of a small batch, :func:`posterior_mcmc` samples the exact
posterior of the trained model,

.. math::

    p_\theta(z \mid x_i) \propto p_\theta(z)\, p_\theta(x_i \mid z),

with the No-U-Turn Sampler [1] (:class:`pyro.infer.NUTS`), the decoder's parameters
:math:`\theta` held fixed, and sets it beside the guide :math:`q_\phi(z \mid x_i)`. The model
is run on the batch ``x[i:i+1]`` (a ``"data"`` plate of size one), so any program keeping the
contract of DESIGN.md section 2 works, with any number of continuous latent sites; for
conditional programs the label ``y[i]`` is passed as the keyword ``y``. Constrained latent
sites are sampled in unconstrained space (:func:`torch.distributions.biject_to`).

Chains run one after the other in this process (no multiprocessing), each from its own draw
of the guide and with its own generator seeded by ``(seed, i, chain)``, so results are
reproducible and, since the chains start apart, the rank-normalized split-:math:`\hat R` of
Vehtari et al. [2] can reveal chains that have not mixed. Their effective sample sizes
(bulk and tail) and Monte Carlo standard errors come from :func:`arviz.summary`; a reliable
run has :math:`\hat R < 1.01`, bulk and tail ESS above about 100 per chain, and no divergent
transitions.

The comparison (:mod:`ppl_vae.diagnostics.discrepancy`), per datapoint, between the pooled
MCMC draws and draws of the guide, all latent sites concatenated into one vector:

* per coordinate, posterior mean and sd under MCMC and under :math:`q`, and their
  differences in units of the MCMC sd (``mean_diff``, ``sd_diff``);
* the unbiased squared maximum mean discrepancy with a Gaussian kernel and the median
  heuristic bandwidth [3] (at most 2000 evenly spaced draws of each sample enter it, which
  also thins the autocorrelated MCMC draws);
* the sliced Wasserstein-2 distance [4] over seeded random directions.

Cost: NUTS evaluates the model's log density and its gradient about :math:`2^d` times per
draw for a tree of depth :math:`d`, one datapoint at a time. Keep the batch small (1-20
points); ``summary()["seconds_per_datapoint"]`` reports what it took.

The work is split by concept: :mod:`ppl_vae.diagnostics._mcmc_layout` (the model's latent
layout, the guide's draws in it, the ``InferenceData``), :mod:`ppl_vae.diagnostics._nuts`
(the chains and their sampler statistics) and :mod:`ppl_vae.diagnostics._mcmc_discrepancy`
(the comparison); this module holds the record and the two entry points.

References

[1] Hoffman & Gelman (2014), *The No-U-Turn sampler: adaptively setting path lengths in
    Hamiltonian Monte Carlo*, JMLR 15, 1593-1623.
[2] Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), *Rank-normalization, folding, and
    localization: an improved R-hat for assessing convergence of MCMC*, Bayesian Analysis 16.
[3] Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), *A kernel two-sample test*, JMLR 13.
[4] Bonneel, Rabin, Peyré & Pfister (2015), *Sliced and Radon Wasserstein barycenters of
    measures*, Journal of Mathematical Imaging and Vision 51.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import torch
import xarray as xr

from ppl_vae.diagnostics._frozen import freeze_parameters, frozen_parameters
from ppl_vae.diagnostics._json import json_float
from ppl_vae.diagnostics._mcmc_discrepancy import MMD_MAX_POINTS, guide_discrepancy
from ppl_vae.diagnostics._mcmc_layout import (
    Layout,
    data_groups,
    guide_idata,
    guide_values,
    layout_from_columns,
    mcmc_idata,
    model_layout,
)
from ppl_vae.diagnostics._nuts import sample_row
from ppl_vae.estimators import prepare_inputs
from ppl_vae.importance import rng_scope
from ppl_vae.programs import program_args
from ppl_vae.seeding import derive_seed

__all__ = [
    "DEFAULT_NUM_PROJECTIONS",
    "MMD_MAX_POINTS",
    "PosteriorComparison",
    "compare_guide",
    "posterior_mcmc",
]

#: Random directions of the sliced Wasserstein distance.
DEFAULT_NUM_PROJECTIONS = 128

# Streams of derive_seed(seed, stream, ...): independent randomness for each use.
_INIT, _CHAIN, _GUIDE, _PROJECTIONS, _SETUP, _LAYOUT = range(6)


@dataclass(frozen=True)
class PosteriorComparison:
    """MCMC draws from the exact posterior beside guide draws, for a batch of datapoints.

    :ivar mcmc: :class:`arviz.InferenceData` with groups ``posterior`` (one variable per
        latent site, dims ``(chain, draw, obs, latent)``, or ``latent_<site>`` when the model
        has several latent sites; coordinates flattened in C order), ``sample_stats`` (dims
        ``(chain, draw, obs)``: ``diverging``, ``step_size``, ``n_steps`` (leapfrog steps),
        ``tree_depth`` (:math:`\\lceil\\log_2(n_{steps} + 1)\\rceil`, the number of tree
        doublings), ``acceptance_rate``, ``lp`` (log joint density in the unconstrained
        space)), ``observed_data`` (``x``) and, where given, ``constant_data`` (``y``,
        ``mask``).
    :ivar guide: :class:`arviz.InferenceData` whose ``posterior`` group holds draws of
        :math:`q(z \\mid x_i)` in the same layout, with one chain; overlay the two with
        :func:`arviz.plot_pair` or :func:`arviz.plot_posterior`.
    :ivar mcmc_summary: :func:`arviz.summary` of ``mcmc``: mean, sd, HDI, MCSE of mean and
        sd, bulk and tail ESS and R-hat per (site, datapoint, coordinate).
    :ivar discrepancy: :class:`xarray.Dataset` with dims ``(obs, latent)`` over all sites
        concatenated (coordinates ``site`` and ``site_index`` say which column is which):
        ``mcmc_mean``, ``mcmc_sd``, ``guide_mean``, ``guide_sd``, ``mean_diff`` and
        ``sd_diff`` (guide minus MCMC, in MCMC sds); and per datapoint ``mmd2`` and
        ``sliced_w2``.
    :ivar latent_columns: site name to its ``(start, stop)`` columns along ``latent`` of
        ``discrepancy``.
    :ivar seconds: wall-clock seconds of MCMC per datapoint, all chains.
    """

    mcmc: az.InferenceData
    guide: az.InferenceData
    mcmc_summary: pd.DataFrame
    discrepancy: xr.Dataset
    latent_columns: dict[str, tuple[int, int]]
    seconds: np.ndarray

    @property
    def num_data(self) -> int:
        return int(self.mcmc.posterior.sizes["obs"])

    def summary(self) -> dict[str, Any]:
        """Convergence of the chains and the guide's discrepancy, ready for JSON: max R-hat,
        min bulk/tail ESS, divergences, seconds per datapoint, and per datapoint the same
        with the MMD², sliced W2 and largest absolute mean and sd differences (NaN becomes
        ``None``)."""
        posterior = self.mcmc.posterior
        rhat = _per_obs(az.rhat(posterior), np.max)
        ess_bulk = _per_obs(az.ess(posterior, method="bulk"), np.min)
        ess_tail = _per_obs(az.ess(posterior, method="tail"), np.min)
        diverging = self.mcmc.sample_stats["diverging"].sum(("chain", "draw")).values
        disc = self.discrepancy
        mean_diff = np.abs(disc["mean_diff"].values).max(axis=1)
        sd_diff = np.abs(disc["sd_diff"].values).max(axis=1)
        datapoints = [
            {
                "obs": i,
                "max_r_hat": json_float(rhat[i]),
                "min_ess_bulk": json_float(ess_bulk[i]),
                "min_ess_tail": json_float(ess_tail[i]),
                "divergences": int(diverging[i]),
                "seconds": json_float(self.seconds[i]),
                "mmd2": json_float(disc["mmd2"].values[i]),
                "sliced_w2": json_float(disc["sliced_w2"].values[i]),
                "max_abs_mean_diff": json_float(mean_diff[i]),
                "max_abs_sd_diff": json_float(sd_diff[i]),
            }
            for i in range(self.num_data)
        ]
        return {
            "num_data": self.num_data,
            "num_chains": int(posterior.sizes["chain"]),
            "num_samples": int(posterior.sizes["draw"]),
            "warmup_steps": int(self.mcmc.posterior.attrs.get("num_warmup", -1)),
            "guide_samples": int(self.guide.posterior.sizes["draw"]),
            "latent_columns": {k: list(v) for k, v in self.latent_columns.items()},
            "max_r_hat": json_float(_nan_reduce(np.nanmax, rhat)),
            "min_ess_bulk": json_float(_nan_reduce(np.nanmin, ess_bulk)),
            "min_ess_tail": json_float(_nan_reduce(np.nanmin, ess_tail)),
            "divergences": int(diverging.sum()),
            "seconds_per_datapoint": json_float(float(np.mean(self.seconds))),
            "mmd2_max": json_float(_nan_reduce(np.nanmax, disc["mmd2"].values)),
            "sliced_w2_max": json_float(_nan_reduce(np.nanmax, disc["sliced_w2"].values)),
            "max_abs_mean_diff": json_float(_nan_reduce(np.nanmax, mean_diff)),
            "max_abs_sd_diff": json_float(_nan_reduce(np.nanmax, sd_diff)),
            "datapoints": datapoints,
        }


def _nan_reduce(fn: Callable, values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float("nan") if np.all(np.isnan(values)) else float(fn(values))


def _per_obs(stats: xr.Dataset, reduce: Callable) -> np.ndarray:
    """Reduce every variable over all dims but ``obs``, then across variables: ``(obs,)``."""
    parts = []
    for var in stats.data_vars.values():
        values = var.transpose("obs", ...).values.reshape(var.sizes["obs"], -1)
        parts.append(values)
    return reduce(np.concatenate(parts, axis=1), axis=1)


def _check_counts(**counts: int | None) -> None:
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _row(tensor: torch.Tensor | None, i: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[i : i + 1]


def posterior_mcmc(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    num_chains: int = 4,
    num_samples: int = 500,
    warmup_steps: int = 500,
    seed: int = 0,
    y: Any = None,
    mask: Any = None,
    guide_samples: int | None = None,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    full_mass: bool = False,
    num_projections: int = DEFAULT_NUM_PROJECTIONS,
) -> PosteriorComparison:
    r"""Sample :math:`p(z \mid x_i)` by NUTS for every datapoint of ``x`` and compare the
    guide with it (see the module docs).

    The model's and guide's parameters are frozen while sampling and afterwards left as they
    were: values, ``requires_grad``, ``.grad``, the modules' train/eval modes (the programs
    run in eval mode) and Pyro's parameter store, entries and all.

    :param x: a small batch ``(N, *data_shape)``; MCMC runs on each row alone.
    :param num_chains: chains per datapoint, run one after another, each started from its
        own guide draw (mapped to the unconstrained space).
    :param num_samples: draws kept per chain, after ``warmup_steps`` adaptation steps (step
        size by dual averaging toward ``target_accept_prob``; diagonal mass matrix, or dense
        with ``full_mass=True``).
    :param seed: fixes every draw: chain ``c`` of row ``i`` uses the seed derived from
        ``(seed, i, c)``, so a row's result depends on its position in ``x``, not on the
        other rows.
    :param y: labels ``(N,)`` for conditional programs, passed as the keyword ``y``.
    :param mask: optional mask passed to model and guide, as for the estimators.
    :param guide_samples: draws of :math:`q(z \mid x_i)` (default ``num_chains *
        num_samples``, as many as MCMC keeps).
    :param max_tree_depth: NUTS's bound on tree doublings (at most :math:`2^d - 1` leapfrog
        steps per draw).
    :param num_projections: directions of the sliced Wasserstein distance.
    :raises ContractError: when a latent site is discrete or outside the ``"data"`` plate,
        or the guide does not sample exactly the model's latent sites.
    """
    _check_counts(
        num_chains=num_chains,
        num_samples=num_samples,
        guide_samples=guide_samples,
        num_projections=num_projections,
        max_tree_depth=max_tree_depth,
    )
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}")
    guide_samples = guide_samples or num_chains * num_samples
    kernel_options = {
        "target_accept_prob": target_accept_prob,
        "max_tree_depth": max_tree_depth,
        "full_mass": full_mass,
    }
    with frozen_parameters(model, guide, eval_mode=True):
        x, mask, y = prepare_inputs(model, guide, x, mask, y)
        device, num_data = x.device, x.shape[0]
        args, kwargs = program_args(x[:1], _row(mask, 0), _row(y, 0))
        with rng_scope(device, derive_seed(seed, _LAYOUT)):
            layout = model_layout(model, args, kwargs)
        init_values = guide_values(guide, layout, x, mask, y, num_chains, derive_seed(seed, _INIT))
        q_values = guide_values(guide, layout, x, mask, y, guide_samples, derive_seed(seed, _GUIDE))
        freeze_parameters(model, guide)
        rows = []
        for i in range(num_data):
            starts = [
                {name: init_values[name][c, i] for name in layout.sites} for c in range(num_chains)
            ]
            rows.append(
                sample_row(
                    model,
                    program_args(x[i : i + 1], _row(mask, i), _row(y, i)),
                    layout,
                    starts,
                    seeds=(derive_seed(seed, _SETUP, i), derive_seed(seed, _CHAIN, i)),
                    device=device,
                    num_samples=num_samples,
                    warmup_steps=warmup_steps,
                    kernel_options=kernel_options,
                )
            )
        q_idata = guide_idata(q_values, layout, num_data, {"source": "guide", "seed": seed})
        groups = data_groups(x, mask, y)

    attrs = {
        "inference_library": "pyro",
        "sampler": "NUTS",
        "num_warmup": warmup_steps,
        "target_accept_prob": target_accept_prob,
        "max_tree_depth": max_tree_depth,
        "full_mass": int(full_mass),
        "seed": seed,
    }
    mcmc = mcmc_idata(layout, [row[0] for row in rows], [row[1] for row in rows], attrs, groups)
    seconds = np.asarray([row[2] for row in rows])
    return _assemble(mcmc, q_idata, layout, seed, num_projections, seconds)


def _assemble(
    mcmc: az.InferenceData,
    guide: az.InferenceData,
    layout: Layout,
    seed: int,
    num_projections: int,
    seconds: np.ndarray,
) -> PosteriorComparison:
    return PosteriorComparison(
        mcmc=mcmc,
        guide=guide,
        mcmc_summary=az.summary(mcmc, round_to="none"),
        discrepancy=_discrepancy(mcmc, guide, layout, seed, num_projections),
        latent_columns=layout.columns,
        seconds=seconds,
    )


def _discrepancy(
    mcmc: az.InferenceData,
    guide: az.InferenceData,
    layout: Layout,
    seed: int,
    num_projections: int,
) -> xr.Dataset:
    """The guide's discrepancy from the MCMC draws, datapoint ``i`` projected with the seed
    derived from ``(seed, i)``."""
    num_data = int(mcmc.posterior.sizes["obs"])
    seeds = [derive_seed(seed, _PROJECTIONS, i) for i in range(num_data)]
    return guide_discrepancy(mcmc, guide, layout, seeds, num_projections)


def compare_guide(
    comparison: PosteriorComparison,
    guide: Callable,
    *,
    guide_samples: int | None = None,
    seed: int = 0,
    num_projections: int = DEFAULT_NUM_PROJECTIONS,
) -> PosteriorComparison:
    """Compare another guide with the MCMC draws of ``comparison`` (no new MCMC): the same
    datapoints (read back from ``comparison.mcmc.observed_data``, labels and mask from
    ``constant_data``), the guide's draws and the discrepancy recomputed.

    :param guide_samples: draws of the guide per datapoint (default: as many as the MCMC
        draws).
    """
    _check_counts(guide_samples=guide_samples, num_projections=num_projections)
    mcmc = comparison.mcmc
    posterior = mcmc.posterior
    layout = layout_from_columns(comparison.latent_columns, posterior)
    guide_samples = guide_samples or int(posterior.sizes["chain"] * posterior.sizes["draw"])
    constant = mcmc["constant_data"] if "constant_data" in mcmc.groups() else None
    y = None if constant is None or "y" not in constant else constant["y"].values
    mask = None if constant is None or "mask" not in constant else constant["mask"].values
    with frozen_parameters(None, guide, eval_mode=True):
        x, mask, y = prepare_inputs(None, guide, mcmc.observed_data["x"].values, mask, y)
        values = guide_values(guide, layout, x, mask, y, guide_samples, derive_seed(seed, _GUIDE))
        q_idata = guide_idata(values, layout, x.shape[0], {"source": "guide", "seed": seed})
    return replace(
        comparison,
        guide=q_idata,
        discrepancy=_discrepancy(mcmc, q_idata, layout, seed, num_projections),
    )
