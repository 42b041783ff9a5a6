r"""Latent-space health: active units, KL per latent coordinate, aggregate posterior vs prior.

Three questions about how a trained VAE uses its latent space, answered for any model/guide
pair keeping the contract of DESIGN.md section 2 (one or several latent sites; labels ``y``
for conditional programs). The guide runs under ``pyro.plate("particles", S, dim=-2)``, the
model is replayed on its draws, and every latent site's event is flattened to coordinates
:math:`u = 1, \dots, D_s`.

**Active units** [1]. A coordinate is *active* when its posterior mean moves with the data,

.. math::

    A_u = \mathrm{Var}_{x}\big(\mathbb{E}_{q(z \mid x)}[z_u]\big) > \delta
    \qquad (\delta = 0.01 \text{ in [1]}),

with the variance taken over the datapoints given (unbiased, so at least two are needed).
An inactive coordinate has collapsed to the prior: :math:`q(z_u \mid x)` is the same for
every x, and the decoder ignores it. :math:`\mathbb{E}_q[z_u \mid x]` is the family's mean
(``site["fn"].mean``) averaged over the S particles, which is exact for a site whose
distribution depends on x alone and, for a lower layer :math:`q(z_1 \mid x, z_2)` of a
hierarchical guide, the Monte Carlo average of the conditional means over
:math:`z_2 \sim q(z_2 \mid x)` (tower rule); where the family has no closed-form mean (a
normalizing flow) it is the average of the S draws.

**KL per coordinate.** For each latent site, coordinate and datapoint,

.. math::

    \mathrm{KL}_u(x) = \mathbb{E}_{q}\Big[\mathrm{KL}\big(q(z_u \mid x, \mathrm{pa})
        \,\big\|\, p(z_u \mid \mathrm{pa})\big)\Big],

the divergence between the *coordinate marginals* of the guide's and the model's
distribution at that site, given the site's parents :math:`\mathrm{pa}` (the latents sampled
before it, e.g. :math:`z_2` for :math:`z_1`), averaged over the S particles. The site
totals :math:`\mathrm{KL}(x)` (below) are conditional on the parents in the same way, so by
the chain rule their sum over sites is :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))` for
the joint latent z. Coordinate marginals are available for

* factorized distributions (``Independent`` of a univariate family: Normal, Laplace, ...),
  whose marginals are the base distribution's entries;
* Gaussians with full or low-rank covariance: :math:`\mathcal{N}(\mu_u, \Sigma_{uu})`;
* mixtures of factorized Normals (the mixture-of-Gaussians prior, the VampPrior): the
  marginal is the 1-D mixture :math:`\sum_k \pi_k \mathcal{N}(\mu_{ku}, \sigma_{ku}^2)`.

When both marginals are available the divergence is analytic where torch registers it
(``torch.distributions.kl_divergence``: Normal vs Normal, Normal vs Laplace, ...) and
otherwise the Monte Carlo estimate
:math:`\frac{1}{S}\sum_s \log q(z_{u,s} \mid x) - \log p(z_{u,s})` from the same draws
(unbiased, so it can come out slightly negative for a coordinate close to the prior).
For a correlated guide (full or low-rank covariance) against a factorized prior the
coordinate values are the KLs of the marginals, and

.. math::

    \mathrm{KL}(q \,\|\, p) - \sum_u \mathrm{KL}(q_u \,\|\, p_u)
    = \mathrm{KL}\Big(q \,\Big\|\, \prod_u q_u\Big) \ge 0

is the guide's total correlation, reported as the difference. **For a normalizing-flow
guide the per-coordinate values are reported as unavailable (NaN)**: the marginals of a flow
have no closed form, and the per-coordinate KL of the flow's base Normal would describe the
variable *before* the flow, whose coordinates the flow mixes, so it could not be attributed
to the coordinates of z. The total :math:`\mathrm{KL}(x)` per site is still given: analytic
where registered (Gaussian vs Gaussian, any covariance), otherwise the Monte Carlo estimate
:math:`\frac{1}{S}\sum_s \log q(z_s \mid x) - \log p(z_s)`.

**Aggregate posterior vs prior** [2]. The average KL term of the ELBO splits as

.. math::

    \frac{1}{N}\sum_n \mathrm{KL}(q(z \mid x_n) \,\|\, p(z))
    = I_q(x; z) + \mathrm{KL}(q(z) \,\|\, p(z)), \qquad
    q(z) = \frac{1}{N}\sum_n q(z \mid x_n),

and a prior the aggregate posterior :math:`q(z)` does not fill (or that puts mass where
:math:`q(z)` has none) generates poor samples. The check draws S latents per datapoint from
q (so :math:`N S` draws of :math:`q(z)`) and as many ancestral draws from the model's prior,
and compares per-coordinate means and variances and the kernel two-sample statistic [3]

.. math::

    \mathrm{MMD}^2 = \mathbb{E}\,k(z, z') + \mathbb{E}\,k(\tilde z, \tilde z')
        - 2\,\mathbb{E}\,k(z, \tilde z), \qquad
    k(a, b) = \exp\!\big(-\lVert a - b \rVert^2 / (2 h^2)\big),

the unbiased U-statistic on at most ``max_mmd_samples`` draws of each, with the bandwidth
:math:`h` the median pairwise distance of the pooled draws
(:func:`ppl_vae.diagnostics.discrepancy.mmd_squared`).

References

[1] Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR,
    section 5.2 (active units).
[2] Hoffman & Johnson (2016), *ELBO surgery: yet another way to carve up the variational
    evidence lower bound*, NIPS Workshop on Advances in Approximate Bayesian Inference.
[3] Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), *A kernel two-sample test*, JMLR
    13:723-773.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributions as td
from pyro.distributions.torch_distribution import ExpandedDistribution

from ppl_vae.diagnostics._draws import (
    flatten_coordinates,
    guide_latents,
    iter_blocks,
    replay_model,
    trace_guide,
    trace_model,
)
from ppl_vae.diagnostics._json import json_float, json_floats
from ppl_vae.diagnostics.discrepancy import median_bandwidth, mmd_squared
from ppl_vae.errors import ContractError
from ppl_vae.estimators import prepare_inputs
from ppl_vae.importance import DEFAULT_CHUNK_SIZE, latent_sites, rng_scope

__all__ = [
    "ActiveUnits",
    "AggregatePosterior",
    "KLPerDimension",
    "LatentReport",
    "active_units",
    "aggregate_posterior_vs_prior",
    "kl_per_dimension",
    "latent_report",
]


def _floats(tensor: torch.Tensor) -> list[float | None]:
    """A ``(D,)`` tensor as a JSON-ready list, NaN as ``None`` (infinities kept)."""
    return json_floats(tensor.flatten(), keep_infinite=True)


def _float(value: float) -> float | None:
    """A float for JSON, NaN as ``None`` (infinities kept)."""
    return json_float(value, keep_infinite=True)


def _merge_method(methods: dict[str, str], name: str, method: str) -> None:
    """Record ``method`` for site ``name``: ``"mixed"`` once blocks disagree."""
    methods[name] = method if methods.get(name, method) == method else "mixed"


# --------------------------------------------------------------------------- active units


@dataclass(frozen=True)
class ActiveUnits:
    """Result of :func:`active_units`; tensors are float64 on the CPU.

    :param activity: site -> ``(D_s,)`` values :math:`A_u = \\mathrm{Var}_x
        \\mathbb{E}_q[z_u \\mid x]`.
    :param posterior_mean: site -> ``(N, D_s)`` posterior means :math:`\\mathbb{E}_q[z_u
        \\mid x_n]`.
    :param mean_method: site -> ``"family mean"`` or ``"monte carlo"`` (how the means were
        computed).
    :param threshold: the activity threshold :math:`\\delta`.
    :param num_samples: particles S per datapoint.
    """

    activity: dict[str, torch.Tensor]
    posterior_mean: dict[str, torch.Tensor]
    mean_method: dict[str, str]
    threshold: float
    num_samples: int

    @property
    def active(self) -> dict[str, torch.Tensor]:
        """site -> boolean ``(D_s,)``: ``activity > threshold``."""
        return {name: value > self.threshold for name, value in self.activity.items()}

    @property
    def num_active(self) -> int:
        """Active coordinates over all latent sites."""
        return int(sum(int(a.sum()) for a in self.active.values()))

    @property
    def num_units(self) -> int:
        """Latent coordinates over all latent sites."""
        return int(sum(a.numel() for a in self.activity.values()))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: counts and per-site activity values."""
        active = self.active
        return {
            "threshold": self.threshold,
            "num_samples": self.num_samples,
            "num_active": self.num_active,
            "num_units": self.num_units,
            "sites": {
                name: {
                    "activity": _floats(value),
                    "active": [bool(a) for a in active[name].tolist()],
                    "num_active": int(active[name].sum()),
                    "mean_method": self.mean_method[name],
                }
                for name, value in self.activity.items()
            },
        }


def _site_mean(site: dict, num_samples: int) -> tuple[torch.Tensor, str]:
    """``(n, D)`` average over particles of the family mean, else of the draws."""
    value, fn = site["value"], site["fn"]
    try:
        mean = fn.mean.expand(value.shape)
        method = "family mean"
        if not bool(torch.isfinite(mean).all()):
            raise ValueError("no finite mean")
    except (NotImplementedError, AttributeError, RuntimeError, ValueError):
        mean, method = value, "monte carlo"
    return flatten_coordinates(mean, fn.event_dim, num_samples).mean(0), method


@torch.no_grad()
def active_units(
    guide: Callable,
    x: Any,
    *,
    threshold: float = 0.01,
    num_samples: int = 16,
    y: Any = None,
    seed: int | None = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ActiveUnits:
    """Active latent coordinates of ``guide`` on the data ``x`` (Burda et al. 2016; see the
    module docs): coordinate u of a latent site is active when
    :math:`\\mathrm{Var}_x(\\mathbb{E}_q[z_u \\mid x]) > \\delta`.

    :param guide: ``guide(x, mask=None)`` keeping the contract; only the guide is run.
    :param x: data ``(N, *data_shape)`` with ``N >= 2``.
    :param threshold: :math:`\\delta`, 0.01 as in [1].
    :param num_samples: particles S per datapoint, for the means of lower layers and of
        families without a closed-form mean.
    :param y: labels ``(N,)`` for conditional programs (passed as the keyword ``y``).
    :param seed: seeds the draws (the caller's generator state is restored); ``None`` uses
        the global generator as it is.
    :param chunk_size: bound on (particle, datapoint) pairs per vectorized pass.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    x, _, y = prepare_inputs(None, guide, x, None, y)
    if x.shape[0] < 2:
        raise ValueError("active units need at least two datapoints (a variance over x)")
    means: dict[str, list[torch.Tensor]] = {}
    methods: dict[str, str] = {}
    with rng_scope(x.device, seed):
        for x_rows, y_rows in iter_blocks(x, y, num_samples, chunk_size):
            trace = trace_guide(guide, x_rows, y_rows, num_samples)
            for name, site in guide_latents(trace).items():
                mean, method = _site_mean(site, num_samples)
                means.setdefault(name, []).append(mean.to(torch.float64).cpu())
                _merge_method(methods, name, method)
    posterior_mean = {name: torch.cat(parts) for name, parts in means.items()}
    activity = {name: m.var(dim=0, correction=1) for name, m in posterior_mean.items()}
    return ActiveUnits(activity, posterior_mean, methods, float(threshold), num_samples)


# --------------------------------------------------------------------------- KL per dimension


@dataclass(frozen=True)
class KLPerDimension:
    """Result of :func:`kl_per_dimension`; tensors are float64 on the CPU.

    :param values: site -> ``(N, D_s)`` KL of each coordinate marginal per datapoint (NaN
        where the marginals are unavailable, e.g. flow guides).
    :param total: site -> ``(N,)`` KL of the whole site per datapoint (conditional on the
        site's parents, averaged over the particles).
    :param method: site -> ``"analytic"``, ``"monte carlo"`` or ``"unavailable"`` for
        :attr:`values`.
    :param total_method: site -> ``"analytic"`` or ``"monte carlo"`` for :attr:`total`.
    :param num_samples: particles S per datapoint.
    """

    values: dict[str, torch.Tensor]
    total: dict[str, torch.Tensor]
    method: dict[str, str]
    total_method: dict[str, str]
    num_samples: int

    @property
    def per_dimension(self) -> dict[str, torch.Tensor]:
        """site -> ``(D_s,)``: mean over datapoints of :attr:`values`."""
        return {name: value.mean(dim=0) for name, value in self.values.items()}

    @property
    def total_mean(self) -> dict[str, float]:
        """site -> mean over datapoints of :attr:`total`."""
        return {name: float(value.mean()) for name, value in self.total.items()}

    @property
    def total_correlation(self) -> dict[str, float]:
        """site -> mean of :math:`\\mathrm{KL}(q\\|p) - \\sum_u \\mathrm{KL}(q_u\\|p_u)`:
        the guide's total correlation when the prior factorizes (NaN when unavailable)."""
        per = self.per_dimension
        return {name: self.total_mean[name] - float(per[name].sum()) for name in self.total}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per site the mean KL per coordinate, the total and the methods."""
        per = self.per_dimension
        correlation = self.total_correlation
        return {
            "num_samples": self.num_samples,
            "total": _float(sum(self.total_mean.values())),
            "sites": {
                name: {
                    "per_dimension": _floats(per[name]),
                    "total": _float(self.total_mean[name]),
                    "total_correlation": _float(correlation[name]),
                    "method": self.method[name],
                    "total_method": self.total_method[name],
                }
                for name in self.values
            },
        }


def _coordinate_marginals(fn: td.Distribution) -> td.Distribution | None:
    """A univariate distribution with batch shape ``(..., *event_shape)`` holding the
    marginals of ``fn``'s coordinates, or ``None`` when they have no closed form."""
    if not fn.event_shape:
        return fn
    if isinstance(fn, ExpandedDistribution):
        return _coordinate_marginals(fn.base_dist)  # broadcasts to the expanded shape
    if isinstance(fn, td.Independent):
        return _coordinate_marginals(fn.base_dist)
    if isinstance(fn, (td.MultivariateNormal, td.LowRankMultivariateNormal)):
        return td.Normal(fn.loc, fn.variance.sqrt())
    if isinstance(fn, td.MixtureSameFamily) and len(fn.event_shape) == 1:
        component = _coordinate_marginals(fn.component_distribution)
        if not isinstance(component, td.Normal):
            return None
        batch = component.batch_shape  # (..., K, d)
        loc = component.loc.expand(batch).movedim(-2, -1)  # (..., d, K)
        scale = component.scale.expand(batch).movedim(-2, -1)
        logits = fn.mixture_distribution.logits.unsqueeze(-2)  # (..., 1, K)
        shape = torch.broadcast_shapes(logits.shape, loc.shape)
        return td.MixtureSameFamily(
            td.Categorical(logits=logits.expand(shape)),
            td.Normal(loc.expand(shape), scale.expand(shape)),
        )
    return None


def _as_gaussian(fn: td.Distribution) -> td.MultivariateNormal | None:
    """``fn`` as a multivariate Normal when it is one (diagonal, low-rank, full), else None."""
    if isinstance(fn, td.MultivariateNormal):
        return fn
    if isinstance(fn, td.LowRankMultivariateNormal):
        return td.MultivariateNormal(fn.loc, covariance_matrix=fn.covariance_matrix)
    if (
        isinstance(fn, td.Independent)
        and isinstance(fn.base_dist, td.Normal)
        and len(fn.event_shape) == 1
    ):
        base = fn.base_dist
        scale = base.scale.expand(base.batch_shape)
        return td.MultivariateNormal(
            base.loc.expand(base.batch_shape), scale_tril=scale.diag_embed()
        )
    return None


def _analytic_total(q: td.Distribution, p: td.Distribution) -> torch.Tensor | None:
    try:
        return td.kl_divergence(q, p)
    except NotImplementedError:
        pass
    q_gauss, p_gauss = _as_gaussian(q), _as_gaussian(p)
    if q_gauss is None or p_gauss is None:
        return None
    shape = torch.broadcast_shapes(q_gauss.batch_shape, p_gauss.batch_shape)
    return td.kl_divergence(q_gauss.expand(shape), p_gauss.expand(shape))


def _site_kl(
    q_site: dict, p_site: dict, num_samples: int
) -> tuple[torch.Tensor, str, torch.Tensor, str]:
    """``(per-coordinate (n, D), method, total (n,), total method)`` for one latent site."""
    q_fn, p_fn, value = q_site["fn"], p_site["fn"], q_site["value"]
    event_dim = q_fn.event_dim
    n = value.shape[value.dim() - event_dim - 1]
    q_marginal, p_marginal = _coordinate_marginals(q_fn), _coordinate_marginals(p_fn)
    if q_marginal is not None and p_marginal is not None:
        try:
            per_coordinate, method = td.kl_divergence(q_marginal, p_marginal), "analytic"
        except NotImplementedError:
            per_coordinate = q_marginal.log_prob(value) - p_marginal.log_prob(value)
            method = "monte carlo"
        per = flatten_coordinates(per_coordinate, event_dim, num_samples).mean(0)
    else:
        coordinates = flatten_coordinates(value, event_dim, num_samples).shape[-1]
        per = value.new_full((n, coordinates), math.nan)
        method = "unavailable"
    total = _analytic_total(q_fn, p_fn)
    total_method = "analytic"
    if total is None:
        total, total_method = q_fn.log_prob(value) - p_fn.log_prob(value), "monte carlo"
    total = total.expand(num_samples, n) if total.dim() < 2 else total
    return per, method, total.mean(0), total_method


@torch.no_grad()
def kl_per_dimension(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    num_samples: int = 64,
    y: Any = None,
    seed: int | None = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> KLPerDimension:
    """Per latent site, coordinate and datapoint, the KL between the coordinate marginals
    of :math:`q(z \\mid x)` and of the prior, plus each site's total KL (see the module
    docs for what is computed for correlated, mixture and flow distributions).

    :param num_samples: particles S per datapoint (for parents of lower layers and for the
        Monte Carlo estimates).
    :param y: labels ``(N,)`` for conditional programs (passed as the keyword ``y``).
    :param seed: seeds the draws (the caller's generator state is restored).
    :param chunk_size: bound on (particle, datapoint) pairs per vectorized pass.
    """
    x, _, y = prepare_inputs(model, guide, x, None, y)
    values: dict[str, list[torch.Tensor]] = {}
    totals: dict[str, list[torch.Tensor]] = {}
    methods: dict[str, str] = {}
    total_methods: dict[str, str] = {}
    with rng_scope(x.device, seed):
        for x_rows, y_rows in iter_blocks(x, y, num_samples, chunk_size):
            guide_trace = trace_guide(guide, x_rows, y_rows, num_samples)
            model_trace = replay_model(model, guide_trace, x_rows, y_rows, num_samples)
            for name, q_site in guide_latents(guide_trace).items():
                per, method, total, total_method = _site_kl(
                    q_site, model_trace.nodes[name], num_samples
                )
                values.setdefault(name, []).append(per.to(torch.float64).cpu())
                totals.setdefault(name, []).append(total.to(torch.float64).cpu())
                _merge_method(methods, name, method)
                _merge_method(total_methods, name, total_method)
    return KLPerDimension(
        values={name: torch.cat(parts) for name, parts in values.items()},
        total={name: torch.cat(parts) for name, parts in totals.items()},
        method=methods,
        total_method=total_methods,
        num_samples=num_samples,
    )


# --------------------------------------------------------------------------- aggregate posterior


@dataclass(frozen=True)
class AggregatePosterior:
    """Result of :func:`aggregate_posterior_vs_prior`; per site, float64 on the CPU.

    :param q_mean: site -> ``(D_s,)`` mean of the draws of :math:`q(z)`.
    :param q_var: site -> ``(D_s,)`` variance of the draws of :math:`q(z)`.
    :param p_mean: site -> ``(D_s,)`` mean of the draws of :math:`p(z)`.
    :param p_var: site -> ``(D_s,)`` variance of the draws of :math:`p(z)`.
    :param mmd_squared: site -> unbiased :math:`\\mathrm{MMD}^2` between the two sets.
    :param bandwidth: site -> the Gaussian kernel's bandwidth :math:`h`.
    :param num_samples: draws S per datapoint (each set holds ``N * S`` draws).
    :param num_draws: draws in each set.
    """

    q_mean: dict[str, torch.Tensor]
    q_var: dict[str, torch.Tensor]
    p_mean: dict[str, torch.Tensor]
    p_var: dict[str, torch.Tensor]
    mmd_squared: dict[str, float]
    bandwidth: dict[str, float]
    num_samples: int
    num_draws: int

    def summary(self) -> dict[str, Any]:
        """JSON-ready per-site moments and MMD^2."""
        return {
            "num_samples": self.num_samples,
            "num_draws": self.num_draws,
            "sites": {
                name: {
                    "q_mean": _floats(self.q_mean[name]),
                    "q_var": _floats(self.q_var[name]),
                    "p_mean": _floats(self.p_mean[name]),
                    "p_var": _floats(self.p_var[name]),
                    "mmd_squared": _float(self.mmd_squared[name]),
                    "bandwidth": _float(self.bandwidth[name]),
                }
                for name in self.q_mean
            },
        }


def _subsample(draws: torch.Tensor, limit: int, generator: torch.Generator) -> torch.Tensor:
    if draws.shape[0] <= limit:
        return draws
    index = torch.randperm(draws.shape[0], generator=generator)[:limit]
    return draws[index]


@torch.no_grad()
def aggregate_posterior_vs_prior(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    num_samples: int = 8,
    y: Any = None,
    seed: int | None = 0,
    max_mmd_samples: int = 1000,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> AggregatePosterior:
    """Compare the aggregate posterior :math:`q(z) = \\frac{1}{N}\\sum_n q(z \\mid x_n)`
    with the model's prior (Hoffman & Johnson 2016; see the module docs): per-coordinate
    means and variances of ``N * num_samples`` draws of each, and a kernel MMD^2.

    Prior draws are ancestral draws of the model's latent sites (the model run on ``x`` with
    nothing but ``"x"`` observed), so for a hierarchical model the joint prior
    :math:`p(z_2)\\,p(z_1 \\mid z_2)` is compared with the joint aggregate posterior.

    :param num_samples: draws S per datapoint from q and per datapoint-sized slot from p.
    :param max_mmd_samples: the MMD uses at most this many draws of each set (random subset);
        its cost grows with the square.
    :param seed: seeds the draws and the subsets (the caller's generator state is restored).
    """
    if max_mmd_samples < 2:
        raise ValueError(f"max_mmd_samples must be at least 2, got {max_mmd_samples}")
    x, _, y = prepare_inputs(model, guide, x, None, y)
    q_draws: dict[str, list[torch.Tensor]] = {}
    p_draws: dict[str, list[torch.Tensor]] = {}
    with rng_scope(x.device, seed):
        for x_rows, y_rows in iter_blocks(x, y, num_samples, chunk_size):
            guide_sites = guide_latents(trace_guide(guide, x_rows, y_rows, num_samples))
            model_sites = latent_sites(trace_model(model, x_rows, y_rows, num_samples))
            missing = sorted(set(guide_sites) - set(model_sites))
            if missing:
                raise ContractError(
                    f"the guide samples sites {missing} that the model does not sample; "
                    "rename them to the model's latent site names"
                )
            for name, q_site in guide_sites.items():
                for draws, site in ((q_draws, q_site), (p_draws, model_sites[name])):
                    flat = flatten_coordinates(site["value"], site["fn"].event_dim, num_samples)
                    flat = flat.reshape(-1, flat.shape[-1])
                    draws.setdefault(name, []).append(flat.double().cpu())
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    fields: dict[str, dict[str, Any]] = {
        key: {} for key in ("q_mean", "q_var", "p_mean", "p_var", "mmd_squared", "bandwidth")
    }
    num_draws = 0
    for name in q_draws:
        q, p = torch.cat(q_draws[name]), torch.cat(p_draws[name])
        num_draws = q.shape[0]
        for prefix, draws in (("q", q), ("p", p)):
            fields[f"{prefix}_mean"][name] = draws.mean(0)
            fields[f"{prefix}_var"][name] = draws.var(0, correction=1)
        q_sub = _subsample(q, max_mmd_samples, generator).numpy()
        p_sub = _subsample(p, max_mmd_samples, generator).numpy()
        bandwidth = median_bandwidth(q_sub, p_sub)
        fields["mmd_squared"][name] = mmd_squared(q_sub, p_sub, bandwidth=bandwidth)
        fields["bandwidth"][name] = bandwidth
    return AggregatePosterior(**fields, num_samples=num_samples, num_draws=num_draws)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class LatentReport:
    """The three latent diagnostics of one model/guide pair on one data set."""

    active_units: ActiveUnits
    kl: KLPerDimension
    aggregate: AggregatePosterior

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary of all three parts."""
        return {
            "active_units": self.active_units.summary(),
            "kl_per_dimension": self.kl.summary(),
            "aggregate_posterior": self.aggregate.summary(),
        }


def latent_report(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    threshold: float = 0.01,
    num_samples: int = 16,
    y: Any = None,
    seed: int | None = 0,
    max_mmd_samples: int = 1000,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> LatentReport:
    """Run :func:`active_units`, :func:`kl_per_dimension` and
    :func:`aggregate_posterior_vs_prior` with the same settings."""
    common = {"num_samples": num_samples, "y": y, "seed": seed, "chunk_size": chunk_size}
    return LatentReport(
        active_units=active_units(guide, x, threshold=threshold, **common),
        kl=kl_per_dimension(model, guide, x, **common),
        aggregate=aggregate_posterior_vs_prior(
            model, guide, x, max_mmd_samples=max_mmd_samples, **common
        ),
    )
