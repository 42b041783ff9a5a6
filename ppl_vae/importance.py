r"""Per-datapoint log importance weights, the one computation every estimator is built on.

For a model :math:`p(x, z)` and guide :math:`q(z \mid x)` keeping the contract of DESIGN.md
section 2, the log weight of particle :math:`k` for datapoint :math:`n` is

.. math::

    \log w_{kn} = \sum_{\text{model sites}} \log p(\cdot)
                - \sum_{\text{guide sites}} \log q(\cdot),
    \qquad z_{kn} \sim q(z \mid x_n),

an array of shape ``(K, N)``. Particles live in an outer ``pyro.plate("particles", K,
dim=-2)`` so the model and guide run vectorized; the work is chunked over particles and
datapoints so memory stays bounded by ``chunk_size`` (particle, datapoint) pairs per pass.

Randomness is a function of ``(seed, n)`` only, ``n`` being the datapoint's row in ``x``:
the guide draws the K particles of row ``n`` from a generator seeded by both, and the model
then scores chunks of them in one vectorized pass. The weights are therefore the same
(up to floating-point summation order) whatever the chunk sizes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import pyro.distributions as pyro_dist
import torch
from pyro import poutine
from pyro.infer import util as infer_util
from pyro.poutine import util as poutine_util
from pyro.poutine.util import site_is_subsample

from ppl_vae.errors import ContractError
from ppl_vae.memory import TRIM_SLACK, release_free_memory
from ppl_vae.programs import program_args
from ppl_vae.seeding import derive_seed

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PARTICLE_DIM",
    "GuideDraws",
    "guide_draws",
    "iter_log_weights",
    "latent_sites",
    "log_importance_weights",
    "plan_chunks",
    "rng_scope",
    "trace_log_weights",
    "trace_program",
]

#: Default bound on (particle, datapoint) pairs evaluated in one vectorized pass. With a
#: 784-pixel likelihood this keeps each pass near 100 MB per 784-wide tensor. A pass of the
#: 784-200-200-50 Bernoulli VAE peaks while torch's Bernoulli ``log_prob`` holds three of
#: them (logits, cross-entropy, its negation) next to the draws, so the estimate's peak is
#: about ``4 B * pairs * (3 * 784 + 50)`` plus a fixed 60-100 MiB (BLAS work space,
#: allocator slack): under 400 MiB at this default (benchmarks/eval_speed.py).
DEFAULT_CHUNK_SIZE = 2**15

#: The batch dimension of ``pyro.plate("particles", K)`` when model and guide run vectorized
#: over particles: left of the ``"data"`` plate, which the contract puts rightmost.
PARTICLE_DIM = -2


@dataclass(frozen=True)
class GuideDraws:
    """Guide draws for a block of datapoints: latent values and their guide log density.

    :ivar values: site name to its draws, shape ``(K, n, *event_shape)``.
    :ivar event_dims: site name to the number of event dimensions of its distribution.
    :ivar log_q: ``(K, n)``, the guide's log density of each particle, summed over sites.
    """

    values: dict[str, torch.Tensor]
    event_dims: dict[str, int]
    log_q: torch.Tensor


def plan_chunks(num_samples: int, num_data: int, chunk_size: int) -> tuple[int, int]:
    """``(particle_chunk, data_chunk)`` with ``particle_chunk * data_chunk <= max(chunk_size,
    1)``, preferring all particles of a datapoint in one chunk."""
    if num_samples < 1 or num_data < 1 or chunk_size < 1:
        raise ValueError(
            f"num_samples, num_data and chunk_size must be positive, got {num_samples}, "
            f"{num_data}, {chunk_size}"
        )
    particle_chunk = min(num_samples, chunk_size)
    data_chunk = max(1, min(num_data, chunk_size // particle_chunk))
    return particle_chunk, data_chunk


def _seed_generators(device: torch.device, seed: int) -> None:
    """Seed torch's global generators that draws on ``device`` use: the CPU generator and,
    for a CUDA device, that device's generator."""
    if device.type == "cuda":
        torch.cuda.default_generators[device.index or 0].manual_seed(seed)
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def rng_scope(device: torch.device, seed: int | None = None) -> Iterator[None]:
    """Run the block on torch's global generators for ``device`` (the CPU generator and, for
    a CUDA device, that device's generator), seeded with ``seed`` unless it is ``None``, and
    restore the caller's generator states afterwards: estimators and diagnostics leave the
    caller's random stream as it was.

    With ``seed=None`` the block draws from the caller's stream as it stands (so
    ``torch.manual_seed`` beforehand makes it reproducible), which is still left unchanged.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            _seed_generators(device, seed)
        yield


def _site_log_prob(site: dict, num_particles: int, name_of: str) -> torch.Tensor:
    log_prob = site["log_prob"]
    if log_prob.dim() > 2:
        raise ContractError(
            f"{name_of} site {site['name']!r} has log-density batch shape "
            f"{tuple(log_prob.shape)}; the contract allows only the particles and the 'data' "
            "plate (rightmost) as batch dimensions. Move other dimensions into the event "
            "with .to_event()"
        )
    return log_prob.expand(num_particles, -1) if log_prob.dim() == 2 else log_prob


def trace_program(
    role: str,
    fn: Callable,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    y: torch.Tensor | None,
) -> poutine.Trace:
    """Run ``fn`` on ``x`` (see :func:`~ppl_vae.programs.program_args`) under a trace and
    return the trace; ``role`` (``"model"`` or ``"guide"``) names it in errors. Meant to run
    inside ``pyro.plate("particles", K, dim=PARTICLE_DIM)``: a failure inside it (typically a
    plate or shape clash with the particles plate) becomes a :class:`ContractError` naming
    the role and the cause."""
    args, kwargs = program_args(x, mask, y)
    try:
        return poutine.trace(fn).get_trace(*args, **kwargs)
    except (ValueError, RuntimeError, IndexError, TypeError, NotImplementedError) as error:
        raise ContractError(
            f"the {role} failed when run vectorized under pyro.plate('particles', K, "
            f"dim={PARTICLE_DIM}): {str(error).splitlines()[0]}. The contract (DESIGN.md "
            "section 2) puts every per-datapoint site in pyro.plate('data', N) on the "
            "rightmost batch dimension and lets shapes broadcast on the left"
        ) from error


def _sample_sites(trace: poutine.Trace) -> list[dict]:
    return [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def latent_sites(trace: poutine.Trace) -> dict[str, dict]:
    """The trace's unobserved sample sites (subsample sites excluded), by name in execution
    order."""
    return {site["name"]: site for site in _sample_sites(trace) if not site["is_observed"]}


def guide_draws(
    guide: Callable,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    y: torch.Tensor | None,
    start: int,
    num_samples: int,
    seed: int,
) -> GuideDraws:
    """Run the guide once per datapoint of ``x`` (global indices from ``start``), each with
    its own generator seeded by ``derive_seed(seed, start + offset)``, under a particles plate
    of size ``num_samples``, and stack the particles along the data dimension. The caller's
    random stream is left as it was (:func:`rng_scope`).

    :raises ContractError: when the guide fails vectorized or samples no latent site.
    """
    values: dict[str, list[torch.Tensor]] = {}
    event_dims: dict[str, int] = {}
    log_qs = []
    traces = []
    with rng_scope(x.device):
        for offset in range(x.shape[0]):
            x_n = x[offset : offset + 1]
            mask_n = None if mask is None else mask[offset : offset + 1]
            y_n = None if y is None else y[offset : offset + 1]
            _seed_generators(x.device, derive_seed(seed, start + offset))
            with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
                traces.append(trace_program("guide", guide, x_n, mask_n, y_n))
    for trace in traces:
        trace.compute_log_prob()
        sites = latent_sites(trace)
        if not sites:
            raise ContractError("the guide samples no latent site; it must sample every latent")
        log_q = torch.zeros(num_samples, 1, dtype=x.dtype, device=x.device)
        for name, site in sites.items():
            event_dims[name] = site["fn"].event_dim
            values.setdefault(name, []).append(site["value"])
            log_q = log_q + _site_log_prob(site, num_samples, "guide")
        log_qs.append(log_q)
    stacked = {name: torch.cat(vals, dim=-1 - event_dims[name]) for name, vals in values.items()}
    return GuideDraws(stacked, event_dims, torch.cat(log_qs, dim=-1))


def _model_log_joint(
    model: Callable,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    y: torch.Tensor | None,
    draws: GuideDraws,
    start: int,
    stop: int,
) -> torch.Tensor:
    """log p(x, z) for particles ``start:stop`` of ``draws``: shape ``(stop - start, n)``."""
    count = stop - start
    values = {
        name: value.narrow(PARTICLE_DIM - draws.event_dims[name], start, count)
        for name, value in draws.values.items()
    }
    with pyro.plate("particles", count, dim=PARTICLE_DIM):
        trace = trace_program("model", poutine.condition(model, data=values), x, mask, y)
    trace.compute_log_prob()
    missing = sorted(latent_sites(trace))
    if missing:
        raise ContractError(
            f"the guide does not sample the model's latent sites {missing}; a guide must "
            "sample every latent site of the model"
        )
    sample_sites = _sample_sites(trace)
    unknown = sorted(set(values) - {s["name"] for s in sample_sites})
    if unknown:
        raise ContractError(
            f"the guide samples sites {unknown} that the model does not have; rename them "
            "to the model's latent site names"
        )
    if not any(s["name"] == "x" for s in sample_sites):
        raise ContractError("the model has no observed site named 'x'")
    log_p = torch.zeros(count, x.shape[0], dtype=x.dtype, device=x.device)
    for site in sample_sites:
        log_p = log_p + _site_log_prob(site, count, "model")
    return log_p


def _validating() -> bool:
    """Whether any of Pyro's validation checks are on."""
    return (
        pyro_dist.is_validation_enabled()
        or infer_util.is_validation_enabled()
        or poutine_util.is_validation_enabled()
    )


def _block_log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    y: torch.Tensor | None,
    rows: slice,
    num_samples: int,
    particle_chunk: int,
    seed: int,
) -> torch.Tensor:
    """Log weights ``(num_samples, n)`` of the datapoints ``x[rows]``: the guide's draws of
    each row, scored by the model ``particle_chunk`` particles at a time."""
    x_rows = x[rows]
    mask_rows = None if mask is None else mask[rows]
    y_rows = None if y is None else y[rows]
    draws = guide_draws(guide, x_rows, mask_rows, y_rows, rows.start, num_samples, seed)
    log_p = torch.cat(
        [
            _model_log_joint(
                model, x_rows, mask_rows, y_rows, draws, k, min(k + particle_chunk, num_samples)
            )
            for k in range(0, num_samples, particle_chunk)
        ]
    )
    return log_p - draws.log_q


@torch.no_grad()
def iter_log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int,
    mask: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, log_w)`` with ``log_w`` of shape ``(num_samples, rows.stop -
    rows.start)`` for consecutive blocks of datapoints, so reductions can stream.

    ``x`` must already be validated (see :func:`ppl_vae.validation.validate_data`). With
    ``seed=None`` a seed is drawn from torch's global generator, so ``torch.manual_seed``
    makes the call reproducible.

    Pyro's validation (argument and support checks of every distribution; on unless
    disabled) runs, as the caller set it, on the first and the last block of rows, where
    contract and shape mistakes show. The blocks between, the same program on the same
    shapes, run without it: checking the parameters of a ``(K, n, 784)`` likelihood costs
    about a tenth of the estimate. A block whose weights hold NaN or +inf is then computed
    again, from the same draws, under the caller's settings, so an invalid parameter still
    raises Pyro's error. Validation only raises or warns, so the weights are the same.

    :param y: labels of shape ``(N,)`` for conditional programs, passed to model and guide
        as the keyword ``y`` (log weights are then those of p(x, z | y) / q(z | x, y)).
    """
    if y is not None:
        y = torch.as_tensor(y, device=x.device)
        if y.shape[:1] != x.shape[:1]:
            raise ValueError(
                f"y must hold one label per datapoint ({x.shape[0]}), got shape {tuple(y.shape)}"
            )
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    particle_chunk, data_chunk = plan_chunks(num_samples, x.shape[0], chunk_size)
    for begin in range(0, x.shape[0], data_chunk):
        rows = slice(begin, min(begin + data_chunk, x.shape[0]))
        block = (model, guide, x, mask, y, rows, num_samples, particle_chunk, seed)
        if begin == 0 or rows.stop == x.shape[0]:
            log_w = _block_log_weights(*block)  # under the caller's validation settings
        else:
            with pyro.validation_enabled(False):
                log_w = _block_log_weights(*block)
            if not bool((log_w < math.inf).all()) and _validating():
                # NaN or +inf: recompute (the same draws) with the caller's validation, so
                # an invalid parameter raises or warns as it would have.
                log_w = _block_log_weights(*block)
        release_free_memory(TRIM_SLACK)  # keeps resident memory bounded over many blocks
        yield rows, log_w


def log_importance_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    num_samples: int,
    mask: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """The full ``(num_samples, N)`` array of log importance weights (see module docs).

    Holds ``num_samples * N`` numbers in memory; estimators that only need per-datapoint
    reductions stream over :func:`iter_log_weights` instead.
    """
    blocks = iter_log_weights(
        model,
        guide,
        x,
        num_samples=num_samples,
        mask=mask,
        y=y,
        seed=seed,
        chunk_size=chunk_size,
    )
    return torch.cat([log_w for _, log_w in blocks], dim=1)


def trace_log_weights(model_trace: poutine.Trace, guide_trace: poutine.Trace) -> torch.Tensor:
    """Log weights ``(K, N)`` from a guide trace and the model trace replayed on it, both
    run under a particles plate of size K at dim -2 (as Pyro's vectorized ELBOs do):
    the sum of every model sample site's log density minus the guide's latent sites', each
    with batch shape ``(K, N)`` or ``(N,)``. The same sum as :func:`iter_log_weights`, for
    traces made elsewhere, e.g. to check an objective on the draws it used.
    """
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    model_sites = _sample_sites(model_trace)
    guide_sites = list(latent_sites(guide_trace).values())
    shapes = [s["log_prob"].shape for s in model_sites + guide_sites]
    num_particles = max((shape[0] for shape in shapes if len(shape) == 2), default=1)
    log_w = 0.0
    for site in model_sites:
        log_w = log_w + _site_log_prob(site, num_particles, "model")
    for site in guide_sites:
        log_w = log_w - _site_log_prob(site, num_particles, "guide")
    return log_w
