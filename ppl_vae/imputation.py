r"""Missing data: draws of the missing elements from the posterior predictive
:math:`p(x_{\text{mis}} \mid x_{\text{obs}})`, by importance resampling.

For a datapoint with observed elements :math:`x_{\text{obs}}` (a per-element boolean mask,
``True`` = observed):

1. draw K particles :math:`z_k \sim q(z \mid x_{\text{obs}})` from the guide, which is
   given the mask and reads x only where it is observed (:func:`models.masking.fill_missing`);
2. weight them by :math:`w_k = p(x_{\text{obs}}, z_k) / q(z_k \mid x_{\text{obs}})`: the
   engine's log importance weights under the element mask, so the model scores
   :math:`\log p(x_{\text{obs}} \mid z)` only, and :math:`\log \frac{1}{K}\sum_k w_k` is the
   importance-sampled :math:`\log p(x_{\text{obs}})`;
3. the conditional mean is the self-normalized estimate
   :math:`\hat\mu = \sum_k \bar w_k\, \mathbb{E}[x_{\text{mis}} \mid z_k]`,
   :math:`\bar w_k = w_k / \sum_j w_j`, with the delta-method standard error
   :math:`\big(\sum_k \bar w_k^2 (\mathbb{E}[x_{\text{mis}} \mid z_k] - \hat\mu)^2\big)^{1/2}`
   [2, eq. 9.8];
4. imputations: resample S particles with probabilities :math:`\bar w` (sampling importance
   resampling [1]) and draw :math:`x_{\text{mis}} \sim p(x_{\text{mis}} \mid z)` for each,
   through Pyro's ``obs_mask`` (:func:`models.masking.impute_program`).

As :math:`K \to \infty` the weighted particles represent :math:`p(z \mid x_{\text{obs}})`,
so the draws follow :math:`p(x_{\text{mis}} \mid x_{\text{obs}}) = \int p(x_{\text{mis}}
\mid z)\, p(z \mid x_{\text{obs}})\, dz` whatever the guide (it only has to cover the
posterior); the effective sample size :math:`1 / \sum_k \bar w_k^2` says how far that is.
This is the imputation of MIWAE [3].

The model must keep the contract of DESIGN.md section 2 and its likelihood must factorize
over the elements of a datapoint given the latents (every likelihood of :mod:`models` does).

References:

1. D. B. Rubin (1987). The calculation of posterior distributions by data augmentation:
   comment. JASA 82, 543-546 (sampling importance resampling).
2. A. B. Owen (2013). Monte Carlo theory, methods and examples, chapter 9.
3. P.-A. Mattei, J. Frellsen (2019). MIWAE: Deep generative modelling and imputation of
   incomplete data sets. ICML.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine

from models.masking import element_distribution, impute_program
from ppl_vae.errors import ConfigError, ContractError, DataError
from ppl_vae.estimators import prepare_inputs
from ppl_vae.importance import (
    DEFAULT_CHUNK_SIZE,
    PARTICLE_DIM,
    GuideDraws,
    guide_draws,
    latent_sites,
    plan_chunks,
    rng_scope,
    trace_log_weights,
    trace_program,
)
from ppl_vae.seeding import derive_seed
from ppl_vae.validation import check_mask

__all__ = [
    "PATTERNS",
    "Imputation",
    "check_mask",
    "check_pattern",
    "hide",
    "impute",
    "imputation_errors",
    "mean_imputation",
]

#: Patterns of missing elements that :func:`hide` makes.
PATTERNS = ("random", "bottom-half", "patch")

# Streams of derive_seed(seed, stream, ...); the guide's draws use derive_seed(seed, row).
_RESAMPLE, _DRAWS, _REFINE = 1, 2, 3

_EMPTY_ROWS = (
    "imputing them means sampling from the model (model.generate), not conditioning; drop "
    "those rows"
)


@dataclass(frozen=True)
class Imputation:
    """Imputations of the missing elements of N datapoints (CPU tensors).

    :ivar samples: ``(S, N, *data_shape)``: S draws from :math:`p(x_{\\text{mis}} \\mid
        x_{\\text{obs}})`, equal to the input where it is observed.
    :ivar mean: ``(N, *data_shape)``: the conditional mean
        :math:`\\mathbb{E}[x_{\\text{mis}} \\mid x_{\\text{obs}}]` in the holes, the input
        elsewhere.
    :ivar mean_stderr: ``(N, *data_shape)``: delta-method Monte Carlo standard error of
        ``mean`` (0 where observed); itself a noisy estimate when ``ess`` is small.
    :ivar mask: ``(N, *data_shape)`` boolean, ``True`` where observed.
    :ivar ess: ``(N,)``: effective sample size of the K importance weights, in [1, K].
    :ivar log_likelihood: ``(N,)``: importance-sampled :math:`\\log p(x_{\\text{obs}})`.
    :ivar num_particles: K.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    mean_stderr: torch.Tensor
    mask: torch.Tensor
    ess: torch.Tensor
    log_likelihood: torch.Tensor
    num_particles: int


def _placeholder(model: Callable, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A value to put in the holes that the engine's checks accept: 0 where the model's
    likelihood supports it, else the smallest observed value (every likelihood here has the
    same support for every element)."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    check = getattr(getattr(model, "likelihood", None), "support_violation", None)
    if not callable(check) or check(zero.reshape(1, 1)) is None:
        return zero
    return x[mask].min()


@torch.no_grad()
def impute(
    model: Callable,
    guide: Callable,
    x: Any,
    mask: Any,
    *,
    num_samples: int = 1,
    num_particles: int = 1000,
    y: Any = None,
    seed: int | None = None,
    refine: int = 0,
    refine_particles: int = 100,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Imputation:
    """Impute the missing elements of ``x`` (see the module docs for the method).

    :param x: ``(N, *data_shape)``; values in the holes are never read (NaN allowed there).
    :param mask: boolean, ``x``'s shape, ``True`` where observed, at least one observed
        element per datapoint (:func:`check_mask`).
    :param num_samples: imputations S per datapoint.
    :param num_particles: importance samples K per datapoint.
    :param y: labels ``(N,)`` for conditional programs (passed as the keyword ``y``).
    :param seed: fixes every draw; with ``None`` a seed is drawn from torch's global
        generator. The particles, weights, conditional mean and resampled particles do not
        depend on ``chunk_size``; the draws given the particles do.
    :param refine: passes that improve the proposal before the final one: each imputes
        with ``refine_particles`` particles and shows the guide the observed values with
        the holes filled by the conditional mean found so far (the guide is then called
        without the mask). With 0 the guide is given the mask and fills the holes itself.
        The proposal remains a function of :math:`x_{\text{obs}}` alone, so the weights
        stay valid; it only moves the guide's input back towards the data it was trained
        on (a VAE trained on complete data has never seen holes).
    :param chunk_size: bound on (particle, datapoint) pairs per vectorized pass.
    :raises DataError: for a bad mask or bad observed values.
    :raises ConfigError: for non-positive counts.
    :raises ContractError: for a program that breaks the contract, or a likelihood that does
        not factorize over elements.
    """
    if num_samples < 1 or num_particles < 1:
        raise ConfigError(
            f"num_samples and num_particles must be positive, got {num_samples}, {num_particles}"
        )
    if refine < 0 or refine_particles < 1:
        raise ConfigError(
            f"refine must be >= 0 and refine_particles positive, got {refine}, {refine_particles}"
        )
    raw = torch.as_tensor(x)
    if not raw.is_floating_point():
        raw = raw.to(torch.get_default_dtype())
    if raw.dim() < 2:
        raise DataError(
            f"x must be a batch of shape (N, *data_shape), got shape {tuple(raw.shape)}; add a "
            "batch dimension (x[None]) for a single datapoint"
        )
    mask = check_mask(mask, raw, if_empty=_EMPTY_ROWS)
    filled = torch.where(mask, raw, _placeholder(model, raw, mask))
    filled, mask, y = prepare_inputs(model, guide, filled, mask, y)
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    seen, seen_mask = filled, mask  # what the guide is given: first the holes and the mask
    for step in range(refine):
        step_seed = derive_seed(seed, _REFINE, step)
        rough = _impute_blocks(
            model,
            guide,
            filled,
            mask,
            y,
            seen,
            seen_mask,
            0,
            refine_particles,
            step_seed,
            chunk_size,
        )
        seen, seen_mask = torch.where(mask, filled, rough["mean"].to(filled.device)), None
    out = _impute_blocks(
        model, guide, filled, mask, y, seen, seen_mask, num_samples, num_particles, seed, chunk_size
    )
    return Imputation(mask=mask.cpu(), num_particles=num_particles, **out)


def _impute_blocks(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor | None,
    seen: torch.Tensor,
    seen_mask: torch.Tensor | None,
    num_samples: int,
    num_particles: int,
    seed: int,
    chunk_size: int,
) -> dict[str, torch.Tensor]:
    """:func:`_impute_block` over blocks of datapoints, results concatenated on the CPU."""
    particle_chunk, data_chunk = plan_chunks(num_particles, x.shape[0], chunk_size)
    parts: dict[str, list[torch.Tensor]] = {}
    for begin in range(0, x.shape[0], data_chunk):
        rows = slice(begin, min(begin + data_chunk, x.shape[0]))
        block = _impute_block(
            model,
            guide,
            x[rows],
            mask[rows],
            None if y is None else y[rows],
            seen[rows],
            None if seen_mask is None else seen_mask[rows],
            begin,
            num_samples,
            num_particles,
            particle_chunk,
            seed,
        )
        for key, value in block.items():
            parts.setdefault(key, []).append(value.cpu())
    return {
        key: torch.cat(values, dim=1 if key == "samples" else 0) for key, values in parts.items()
    }


def _impute_block(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor | None,
    seen: torch.Tensor,
    seen_mask: torch.Tensor | None,
    start: int,
    num_samples: int,
    num_particles: int,
    particle_chunk: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Particles from the guide given ``(seen, seen_mask)``, weighted by the model given
    ``(x, mask)``; ``num_samples=0`` skips the draws."""
    event_dim = x.dim() - 1
    draws = guide_draws(guide, seen, seen_mask, y, start, num_particles, seed)
    log_ps, means = [], []
    for k in range(0, num_particles, particle_chunk):
        stop = min(k + particle_chunk, num_particles)
        trace = _conditioned_trace(model, x, mask, y, _narrow(draws, k, stop))
        log_ps.append(trace_log_weights(trace, poutine.Trace()).expand(stop - k, -1))
        px = _element_likelihood(trace, event_dim)
        means.append(px.mean.expand(stop - k, *x.shape))
    log_w = torch.cat(log_ps) - draws.log_q
    mean_k = torch.cat(means)  # (K, n, *data_shape)
    weights = torch.softmax(log_w, dim=0)  # (K, n), columns sum to 1
    w = weights.reshape(*weights.shape, *(1,) * event_dim)
    mean = (w * mean_k).sum(0)
    stderr = (w.square() * (mean_k - mean).square()).sum(0).sqrt()
    out = {
        "mean": torch.where(mask, x, mean),
        "mean_stderr": torch.where(mask, torch.zeros_like(stderr), stderr),
        "ess": 1.0 / weights.square().sum(0),
        "log_likelihood": torch.logsumexp(log_w, 0) - math.log(num_particles),
    }
    if num_samples:
        chosen = _resample(weights, num_samples, seed, start)  # (S, n)
        out["samples"] = _draw(model, x, mask, y, draws, chosen, seed, start, event_dim)
    return out


def _narrow(draws: GuideDraws, start: int, stop: int) -> dict[str, torch.Tensor]:
    return {
        name: value.narrow(PARTICLE_DIM - draws.event_dims[name], start, stop - start)
        for name, value in draws.values.items()
    }


def _conditioned_trace(
    model: Callable,
    x: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor | None,
    values: dict[str, torch.Tensor],
) -> poutine.Trace:
    """The model's trace with its latent sites set to ``values`` (shape ``(P, n, ...)``), run
    under the particles plate with the element mask, log densities computed."""
    count = next(iter(values.values())).shape[0]
    with pyro.plate("particles", count, dim=PARTICLE_DIM):
        trace = trace_program("model", poutine.condition(model, data=values), x, mask, y)
    trace.compute_log_prob()
    missing = sorted(latent_sites(trace))
    if missing:
        raise ContractError(
            f"the guide does not sample the model's latent sites {missing}; a guide must "
            "sample every latent site of the model"
        )
    if "x" not in trace.nodes:
        raise ContractError("the model has no observed site named 'x'")
    return trace


def _element_likelihood(trace: poutine.Trace, event_dim: int):
    """p(x | z) of the trace's ``"x"`` site as a per-element distribution ``(P, n, *ds)``."""
    try:
        return element_distribution(trace.nodes["x"]["fn"], event_dim)
    except ValueError as error:
        raise ContractError(f"cannot impute: {error}") from None


def _resample(weights: torch.Tensor, num_samples: int, seed: int, start: int) -> torch.Tensor:
    """``(S, n)`` particle indices drawn with replacement with probabilities ``weights[:, i]``,
    datapoint ``start + i`` from its own generator (chunk-invariant)."""
    columns = []
    for i in range(weights.shape[1]):
        generator = torch.Generator(device="cpu").manual_seed(
            derive_seed(seed, _RESAMPLE, start + i)
        )
        p = weights[:, i].detach().to(device="cpu", dtype=torch.float64)
        columns.append(torch.multinomial(p, num_samples, replacement=True, generator=generator))
    return torch.stack(columns, dim=1).to(weights.device)


def _draw(
    model: Callable,
    x: torch.Tensor,
    mask: torch.Tensor,
    y: torch.Tensor | None,
    draws: GuideDraws,
    chosen: torch.Tensor,
    seed: int,
    start: int,
    event_dim: int,
) -> torch.Tensor:
    """``(S, n, *ds)``: x with the holes drawn from p(x | z) at the chosen particles, through
    the ``obs_mask`` program."""
    columns = torch.arange(x.shape[0], device=x.device)
    values = {name: value[chosen, columns] for name, value in draws.values.items()}
    trace = _conditioned_trace(model, x, mask, y, values)
    px = _element_likelihood(trace, event_dim)
    px = px.expand((chosen.shape[0], *x.shape))
    with rng_scope(x.device, derive_seed(seed, _DRAWS, start)):
        return poutine.trace(impute_program).get_trace(px, x, mask).nodes["x"]["value"]


def mean_imputation(x: torch.Tensor, mask: torch.Tensor, fill: Any) -> torch.Tensor:
    """The baseline: ``x`` with its holes set to ``fill`` (e.g. the per-feature training
    mean, shape ``data_shape``)."""
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(mask, x, fill.expand_as(x))


def imputation_errors(
    truth: torch.Tensor,
    mask: torch.Tensor,
    predictions: dict[str, torch.Tensor],
    *,
    binary: bool | None = None,
) -> dict[str, dict[str, float]]:
    """Errors of each prediction on the held-out elements (``mask`` False) only.

    For every prediction: ``rmse`` and ``mae``. For binary data (``truth`` in {0, 1},
    detected unless ``binary`` is given), predictions are probabilities of a 1, and also
    ``accuracy`` of thresholding at 1/2 and ``bernoulli_log_lik``, the mean log probability
    of the true pixels (probabilities clamped to [1e-6, 1 - 1e-6]; for the VAE's conditional
    mean this is the exact per-pixel posterior predictive log probability).

    :raises DataError: when no element is held out.
    """
    held_out = ~mask.bool()
    if not bool(held_out.any()):
        raise DataError("no element is held out (the mask is True everywhere)")
    target = truth[held_out].to(torch.float64)
    if binary is None:
        binary = bool(((target == 0) | (target == 1)).all())
    errors = {}
    for name, prediction in predictions.items():
        guess = prediction.to(truth.device)[held_out].to(torch.float64)
        diff = guess - target
        entry = {"rmse": float(diff.square().mean().sqrt()), "mae": float(diff.abs().mean())}
        if binary:
            p = guess.clamp(1e-6, 1 - 1e-6)
            entry["accuracy"] = float(((guess > 0.5) == (target > 0.5)).double().mean())
            entry["bernoulli_log_lik"] = float(
                (target * p.log() + (1 - target) * (-p).log1p()).mean()
            )
        errors[name] = entry
    return errors


def check_pattern(pattern: str, fraction: float) -> None:
    """:raises ConfigError: for a pattern not in :data:`PATTERNS` or a fraction outside
    (0, 1)."""
    if pattern not in PATTERNS:
        raise ConfigError(f"unknown missing-data pattern {pattern!r}; choose one of {PATTERNS}")
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction must be in (0, 1), got {fraction!r}")


def hide(
    shape: Sequence[int],
    pattern: str,
    *,
    fraction: float = 0.5,
    image_shape: Sequence[int] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A boolean mask of ``shape`` ``(N, *data_shape)``, ``False`` on the hidden elements.

    :param pattern: ``"random"``: in every datapoint, ``round(fraction * D)`` elements chosen
        uniformly at random; ``"bottom-half"``: the bottom ``fraction`` of the image rows (all
        channels), ``fraction=0.5`` being the bottom half; ``"patch"``: a square of side
        ``round(sqrt(fraction) * min(H, W))`` at a random position in every image (about
        ``fraction`` of the pixels). Data that are not images are treated as one row of D
        pixels (``"bottom-half"`` hides the last features).
    :param fraction: in (0, 1); at least one element of every datapoint stays observed.
    :param image_shape: ``(C, H, W)`` with ``C * H * W`` elements per datapoint.
    :param seed: the random positions depend on it only.
    :raises ConfigError: for an unknown pattern, a fraction outside (0, 1) or an image
        shape that does not match.
    """
    check_pattern(pattern, fraction)
    num, *data_shape = (int(s) for s in shape)
    size = math.prod(data_shape)
    if image_shape is None:
        image_shape = (1, 1, size)
    channels, height, width = (int(s) for s in image_shape)
    if channels * height * width != size:
        raise ConfigError(f"image_shape {tuple(image_shape)} does not hold {size} elements")
    generator = torch.Generator().manual_seed(seed)
    observed = torch.ones(num, channels, height, width, dtype=torch.bool)
    if pattern == "random":
        hidden = min(size - 1, max(1, round(fraction * size)))
        order = torch.rand(num, size, generator=generator).argsort(dim=1)
        observed = observed.reshape(num, size)
        observed.scatter_(1, order[:, :hidden], False)
    elif pattern == "bottom-half":
        if height > 1:
            rows = min(height - 1, max(1, round(fraction * height)))
            observed[:, :, height - rows :, :] = False
        else:
            cols = min(width - 1, max(1, round(fraction * width)))
            observed[:, :, :, width - cols :] = False
    else:
        side_h = min(height, max(1, round(math.sqrt(fraction) * min(height, width))))
        side_w = min(width, side_h if height > 1 else max(1, round(fraction * width)))
        if side_h * side_w == height * width:  # keep one pixel observed
            side_w -= 1
        tops = torch.randint(0, height - side_h + 1, (num,), generator=generator)
        lefts = torch.randint(0, width - side_w + 1, (num,), generator=generator)
        for n in range(num):
            top, left = int(tops[n]), int(lefts[n])
            observed[n, :, top : top + side_h, left : left + side_w] = False
    return observed.reshape(num, *data_shape)
