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

__all__ = ["LogLikelihoodEstimate", "elbo", "log_likelihood", "summarize_log_weights"]


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


def _prepare(
    model: Callable, guide: Callable, x: Any, mask: Any, y: Any
) -> tuple[torch.Tensor, Any, Any]:
    claim_param_names(model, guide)
    dtype, device = module_dtype_device(model, guide)
    x = validate_data(x, model, dtype=dtype, device=device)
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool, device=device)
    if y is not None:
        y = validate_labels(y, x.shape[0], model, device=device)
    return x, mask, y


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
    x, mask, y = _prepare(model, guide, x, mask, y)
    parts: dict[str, list[torch.Tensor]] = {}
    for _, log_w in iter_log_weights(
        model, guide, x, num_samples=num_samples, mask=mask, y=y, seed=seed, chunk_size=chunk_size
    ):
        for key, value in summarize_log_weights(log_w).items():
            parts.setdefault(key, []).append(value.cpu())
    merged = {key: torch.cat(values) for key, values in parts.items()}
    return LogLikelihoodEstimate(num_samples=num_samples, **merged)


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
    x, mask, y = _prepare(model, guide, x, mask, y)
    blocks = iter_log_weights(
        model, guide, x, num_samples=num_samples, mask=mask, y=y, seed=seed, chunk_size=chunk_size
    )
    return torch.cat([log_w.to(torch.float64).mean(dim=0).cpu() for _, log_w in blocks])
