r"""Importance-sampled log-likelihood and the ELBO, per datapoint.

With :math:`K` draws :math:`z_k \sim q(z \mid x)` and weights
:math:`w_k = p(x, z_k) / q(z_k \mid x)`:

* importance-sampled log-likelihood [1]:
  :math:`\widehat{\log p}(x) = \log \frac{1}{K} \sum_k w_k`, a lower bound in expectation
  that tightens to :math:`\log p(x)` as :math:`K \to \infty`;
* its Monte Carlo standard error by the delta method,
  :math:`\mathrm{se} = \hat\sigma_w / (\sqrt{K}\, \bar w)` with :math:`\hat\sigma_w` the sample
  standard deviation of the weights;
* the importance-sampling effective sample size [2]
  :math:`\mathrm{ESS} = (\sum_k w_k)^2 / \sum_k w_k^2 \in [1, K]`;
* the ELBO estimate :math:`\frac{1}{K}\sum_k \log w_k` from the same draws, and the gap
  :math:`\widehat{\log p}(x) - \mathrm{ELBO}`.

References

[1] Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
[2] Kong (1992), *A note on importance sampling using standardized weights*; see also
    Owen (2013), *Monte Carlo theory, methods and examples*, ch. 9.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ppl_vae.importance import DEFAULT_CHUNK_SIZE, iter_log_weights
from ppl_vae.params import claim_param_names
from ppl_vae.validation import module_dtype_device, validate_data, validate_labels

__all__ = [
    "LogLikelihoodEstimate",
    "elbo",
    "log_likelihood",
    "prepare_inputs",
    "reduce_log_weights",
    "summarize_log_weights",
]


@dataclass(frozen=True)
class LogLikelihoodEstimate:
    """Per-datapoint results of :func:`log_likelihood` (float64 tensors of shape ``(N,)``)."""

    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    elbo: torch.Tensor
    num_samples: int

    @property
    def gap(self) -> torch.Tensor:
        """Per-datapoint ``log p(x) - ELBO`` (both estimated from the same draws)."""
        return self.log_likelihood - self.elbo

    @property
    def mean_stderr(self) -> float:
        """Standard error of the mean log-likelihood over datapoints."""
        n = self.log_likelihood.numel()
        return float(self.stderr.pow(2).sum().sqrt() / n)

    def summary(self) -> dict[str, Any]:
        """Averages over datapoints, in nats per datapoint, ready for JSON."""
        return {
            "num_data": self.log_likelihood.numel(),
            "num_samples": self.num_samples,
            "log_likelihood": float(self.log_likelihood.mean()),
            "log_likelihood_stderr": self.mean_stderr,
            "elbo": float(self.elbo.mean()),
            "gap": float(self.gap.mean()),
            "ess_mean": float(self.ess.mean()),
            "ess_min": float(self.ess.min()),
        }


def summarize_log_weights(log_w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reduce ``(K, N)`` log weights to per-datapoint float64 statistics (see module docs)."""
    log_w = log_w.to(torch.float64)
    num_samples = log_w.shape[0]
    peak = log_w.max(dim=0).values
    weights = (log_w - peak).exp()  # in (0, 1], the largest equals 1
    mean_w = weights.mean(dim=0)
    if num_samples > 1:
        std_w = weights.std(dim=0, correction=1)
        stderr = std_w / (math.sqrt(num_samples) * mean_w)
    else:
        stderr = torch.full_like(mean_w, math.nan)
    return {
        "log_likelihood": peak + mean_w.log(),
        "stderr": stderr,
        "ess": weights.sum(dim=0).pow(2) / weights.pow(2).sum(dim=0),
        "elbo": log_w.mean(dim=0),
    }


def prepare_inputs(
    model: Callable | None, guide: Callable, x: Any, mask: Any, y: Any
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Validate the inputs of an estimator or diagnostic built on
    :func:`~ppl_vae.importance.iter_log_weights`, the same way for all of them.

    Claims the parameter names of ``model`` and ``guide``, checks ``x`` against the model
    (shape, finiteness, the likelihood's support; :class:`~ppl_vae.errors.DataError`) and
    moves it to their dtype and device, turns ``mask`` into a boolean tensor and checks
    the labels ``y``. Returns ``(x, mask, y)``. ``model`` may be ``None`` for a diagnostic
    that runs the guide alone: ``x`` is then checked for shape and finiteness only.
    """
    claim_param_names(model, guide)
    dtype, device = module_dtype_device(model, guide)
    x = validate_data(x, model, dtype=dtype, device=device)
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool, device=device)
    if y is not None:
        y = validate_labels(y, x.shape[0], model, device=device)
    return x, mask, y


def reduce_log_weights(
    model: Callable,
    guide: Callable,
    x: Any,
    reduce: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    *,
    num_samples: int,
    mask: Any = None,
    y: Any = None,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> dict[str, torch.Tensor]:
    """Per-datapoint statistics of the log importance weights, streamed: validates the
    inputs (:func:`prepare_inputs`), applies ``reduce`` to each ``(num_samples, n)`` block
    of :func:`~ppl_vae.importance.iter_log_weights` and concatenates each statistic it
    returns (shape ``(n,)``) over the blocks, on the CPU. Holds one block of log weights
    at a time; the options are those of :func:`log_likelihood`.
    """
    x, mask, y = prepare_inputs(model, guide, x, mask, y)
    parts: dict[str, list[torch.Tensor]] = {}
    for _, log_w in iter_log_weights(
        model, guide, x, num_samples=num_samples, mask=mask, y=y, seed=seed, chunk_size=chunk_size
    ):
        for key, value in reduce(log_w).items():
            parts.setdefault(key, []).append(value.cpu())
        del log_w
    return {key: torch.cat(values) for key, values in parts.items()}


def _mean_log_weight(log_w: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ELBO estimate of each datapoint of a block, in float64."""
    return {"elbo": log_w.to(torch.float64).mean(dim=0)}


def log_likelihood(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    num_samples: int = 1000,
    mask: Any = None,
    y: Any = None,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> LogLikelihoodEstimate:
    """Importance-sampled :math:`\\log p(x)` for every datapoint of ``x``.

    :param num_samples: importance samples K per datapoint.
    :param mask: optional boolean mask passed to model and guide (see :class:`models.VAE`).
    :param y: class labels ``(N,)`` for conditional programs, passed as the keyword ``y``;
        the estimate is then of :math:`\\log p(x \\mid y)`.
    :param seed: fixes the draws; results do not depend on ``chunk_size`` or on which other
        datapoints are in ``x``.
    :param chunk_size: bound on (particle, datapoint) pairs per vectorized pass (memory).
    """
    stats = reduce_log_weights(
        model,
        guide,
        x,
        summarize_log_weights,
        num_samples=num_samples,
        mask=mask,
        y=y,
        seed=seed,
        chunk_size=chunk_size,
    )
    return LogLikelihoodEstimate(num_samples=num_samples, **stats)


def elbo(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    num_samples: int = 1,
    mask: Any = None,
    y: Any = None,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Per-datapoint ELBO :math:`\\mathbb{E}_q[\\log p(x, z) - \\log q(z \\mid x)]`, estimated
    with ``num_samples`` draws each; a float64 tensor of shape ``(N,)``."""
    stats = reduce_log_weights(
        model,
        guide,
        x,
        _mean_log_weight,
        num_samples=num_samples,
        mask=mask,
        y=y,
        seed=seed,
        chunk_size=chunk_size,
    )
    return stats["elbo"]
