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

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import torch
import xarray as xr
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import site_is_subsample

from ppl_vae.diagnostics._frozen import freeze_parameters, frozen_parameters
from ppl_vae.diagnostics._json import json_float
from ppl_vae.diagnostics.discrepancy import (
    mmd_squared,
    moment_comparison,
    sliced_wasserstein,
    thin_evenly,
)
from ppl_vae.errors import ContractError
from ppl_vae.estimators import prepare_inputs
from ppl_vae.importance import _guide_draws, rng_scope
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
#: At most this many evenly spaced draws of each sample enter the MMD (memory is quadratic).
MMD_MAX_POINTS = 2000

# Streams of derive_seed(seed, stream, ...): independent randomness for each use.
_INIT, _CHAIN, _GUIDE, _PROJECTIONS, _SETUP, _LAYOUT = range(6)


@dataclass(frozen=True)
class _Layout:
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


# --------------------------------------------------------------------------- layout & draws


def _model_layout(model: Callable, args: tuple, kwargs: dict) -> _Layout:
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
    return _Layout(shapes)


def _guide_values(
    guide: Callable,
    layout: _Layout,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    y: torch.Tensor | None,
    num_samples: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Guide draws per site, flattened to ``(num_samples, N, size)``, checked against the
    model's latent sites."""
    with torch.no_grad():
        draws = _guide_draws(guide, x, mask, y, 0, num_samples, seed)
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


# --------------------------------------------------------------------------- NUTS


def _tree_depth(n_steps: np.ndarray) -> np.ndarray:
    return np.ceil(np.log2(n_steps + 1.0)).astype(np.int64)


def _run_chain(
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
    stats["tree_depth"] = _tree_depth(stats["n_steps"])
    return samples, stats


def _chain_inits(
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
                stacklevel=4,
            )
            init = fallback
        result.append(init)
    return result


def _sample_row(
    model: Callable,
    program: tuple[tuple, dict],
    layout: _Layout,
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
    for c, init in enumerate(_chain_inits(potential_fn, transforms, fallback, inits)):
        with rng_scope(device, derive_seed(seeds[1], c)):
            chains.append(
                _run_chain(
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


# --------------------------------------------------------------------------- API


def _check_counts(**counts: int | None) -> None:
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _row(tensor: torch.Tensor | None, i: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[i : i + 1]


def _data_groups(
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


def _posterior_dims(layout: _Layout) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    dims, coords = {}, {}
    for name, (start, stop) in layout.columns.items():
        dim = layout.dim(name)
        dims[name] = ["obs", dim]
        coords[dim] = np.arange(stop - start)
    return dims, coords


def _guide_idata(
    values: dict[str, torch.Tensor], layout: _Layout, num_data: int, attrs: dict
) -> az.InferenceData:
    dims, coords = _posterior_dims(layout)
    posterior = {
        name: value.reshape(1, value.shape[0], num_data, -1).cpu().double().numpy()
        for name, value in values.items()
    }
    coords["obs"] = np.arange(num_data)
    return az.from_dict(posterior=posterior, coords=coords, dims=dims, posterior_attrs=attrs)


def _discrepancy(
    mcmc: az.InferenceData,
    guide: az.InferenceData,
    layout: _Layout,
    seed: int,
    num_projections: int,
) -> xr.Dataset:
    """Per-datapoint moments, MMD² and sliced W2 between guide and MCMC draws."""
    num_data = int(mcmc.posterior.sizes["obs"])

    def pooled(idata: az.InferenceData) -> np.ndarray:
        # (chain * draw, obs, D) with every site's columns concatenated
        parts = []
        for name in layout.sites:
            array = idata.posterior[name].transpose("chain", "draw", "obs", ...).values
            parts.append(array.reshape(-1, num_data, array.shape[-1]))
        return np.concatenate(parts, axis=-1)

    mcmc_draws, guide_draws = pooled(mcmc), pooled(guide)
    moments: dict[str, list[np.ndarray]] = {}
    mmd2, sw2 = [], []
    for i in range(num_data):
        target, draws = mcmc_draws[:, i], guide_draws[:, i]
        for key, value in moment_comparison(draws, target).items():
            moments.setdefault(key, []).append(value)
        mmd2.append(
            mmd_squared(thin_evenly(draws, MMD_MAX_POINTS), thin_evenly(target, MMD_MAX_POINTS))
        )
        sw2.append(
            sliced_wasserstein(draws, target, num_projections, derive_seed(seed, _PROJECTIONS, i))
        )
    names = {
        "reference_mean": "mcmc_mean",
        "reference_sd": "mcmc_sd",
        "mean": "guide_mean",
        "sd": "guide_sd",
        "mean_diff": "mean_diff",
        "sd_diff": "sd_diff",
    }
    data_vars = {new: (("obs", "latent"), np.stack(moments[old])) for old, new in names.items()}
    data_vars["mmd2"] = (("obs",), np.asarray(mmd2))
    data_vars["sliced_w2"] = (("obs",), np.asarray(sw2))
    site = [name for name in layout.sites for _ in range(math.prod(layout.event_shapes[name]))]
    site_index = [k for name in layout.sites for k in range(math.prod(layout.event_shapes[name]))]
    coords = {
        "obs": np.arange(num_data),
        "latent": np.arange(len(site)),
        "site": ("latent", np.asarray(site)),
        "site_index": ("latent", np.asarray(site_index)),
    }
    attrs = {"num_projections": num_projections, "mmd_max_points": MMD_MAX_POINTS}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


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
            layout = _model_layout(model, args, kwargs)
        init_values = _guide_values(guide, layout, x, mask, y, num_chains, derive_seed(seed, _INIT))
        guide_values = _guide_values(
            guide, layout, x, mask, y, guide_samples, derive_seed(seed, _GUIDE)
        )
        freeze_parameters(model, guide)
        rows = []
        for i in range(num_data):
            starts = [
                {name: init_values[name][c, i] for name in layout.sites} for c in range(num_chains)
            ]
            rows.append(
                _sample_row(
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
        guide_idata_attrs = {"source": "guide", "seed": seed}
        guide_idata = _guide_idata(guide_values, layout, num_data, guide_idata_attrs)
        data_groups = _data_groups(x, mask, y)

    dims, coords = _posterior_dims(layout)
    coords["obs"] = np.arange(num_data)
    # per row (chain, draw, ...) -> (chain, draw, obs, ...)
    posterior = {name: np.stack([row[0][name] for row in rows], axis=2) for name in layout.sites}
    sample_stats = {key: np.stack([row[1][key] for row in rows], axis=2) for key in rows[0][1]}
    seconds = np.asarray([row[2] for row in rows])
    attrs = {
        "inference_library": "pyro",
        "sampler": "NUTS",
        "num_warmup": warmup_steps,
        "target_accept_prob": target_accept_prob,
        "max_tree_depth": max_tree_depth,
        "full_mass": int(full_mass),
        "seed": seed,
    }
    mcmc_idata = az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats,
        coords=coords,
        dims={**dims, **{key: ["obs"] for key in sample_stats}},
        posterior_attrs=attrs,
        sample_stats_attrs=attrs,
    )
    mcmc_idata.add_groups(data_groups)
    return _assemble(mcmc_idata, guide_idata, layout, seed, num_projections, seconds)


def _assemble(
    mcmc: az.InferenceData,
    guide: az.InferenceData,
    layout: _Layout,
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


def _layout_of(comparison: PosteriorComparison) -> _Layout:
    posterior = comparison.mcmc.posterior
    shapes = {}
    for name in comparison.latent_columns:
        start, stop = comparison.latent_columns[name]
        shapes[name] = (stop - start,)
    layout = _Layout(shapes)
    for name in layout.sites:
        if posterior[name].dims[-1] != layout.dim(name):
            raise ValueError(f"unexpected dims {posterior[name].dims} of site {name!r}")
    return layout


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
    layout = _layout_of(comparison)
    posterior = mcmc.posterior
    guide_samples = guide_samples or int(posterior.sizes["chain"] * posterior.sizes["draw"])
    constant = mcmc["constant_data"] if "constant_data" in mcmc.groups() else None
    y = None if constant is None or "y" not in constant else constant["y"].values
    mask = None if constant is None or "mask" not in constant else constant["mask"].values
    with frozen_parameters(None, guide, eval_mode=True):
        x, mask, y = prepare_inputs(None, guide, mcmc.observed_data["x"].values, mask, y)
        values = _guide_values(guide, layout, x, mask, y, guide_samples, derive_seed(seed, _GUIDE))
        guide_idata = _guide_idata(values, layout, x.shape[0], {"source": "guide", "seed": seed})
    return replace(
        comparison,
        guide=guide_idata,
        discrepancy=_discrepancy(mcmc, guide_idata, layout, seed, num_projections),
    )
