r"""Pareto-smoothed importance sampling (PSIS): how far to trust the IS estimate of log p(x).

For a datapoint :math:`x` with draws :math:`z_1, \dots, z_S \sim q(z \mid x)` and importance
weights :math:`w_s = p(x, z_s) / q(z_s \mid x)` (see :mod:`ppl_vae.importance`), the
importance-sampled log-likelihood [2]

.. math::

    \widehat{\log p}(x) = \log \frac{1}{S} \sum_{s=1}^S w_s

is consistent, but how fast it converges depends on the right tail of the distribution of
the weights. PSIS [1] fits a generalized Pareto distribution to the :math:`M =
\lceil\min(S/5,\ 3\sqrt{S})\rceil` largest weights; its estimated shape :math:`\hat k` is

* a diagnostic: the weights have finite moments of order :math:`< 1/k`, so :math:`k < 1/2`
  means finite variance (the usual central limit theorem), :math:`k \ge 1` no finite mean;
  since :math:`w = p(z \mid x)\, p(x) / q(z \mid x)`, a large :math:`\hat k` says the guide
  misses mass of the posterior, which makes :math:`\hat k` a diagnostic of the variational
  approximation itself [3];
* a repair: the :math:`M` largest weights are replaced by the expected order statistics of
  the fitted distribution (truncated at the largest raw weight), which lowers the variance
  of the estimate and makes it usable up to :math:`k \approx 0.7`.

Bands of :math:`\hat k` used by :meth:`PSISReport.bands` ([1], section 3 and 6; the bands of
ArviZ and of the R package ``loo``):

=================  ======================  ====================================================
band               :math:`\hat k`          meaning
=================  ======================  ====================================================
``"good"``         :math:`< 0.5`           finite variance: IS and PSIS estimates reliable
``"ok"``           :math:`[0.5, 0.7)`      infinite variance, but PSIS still reliable
``"bad"``          :math:`[0.7, 1)`        too slow to converge for practical :math:`S`
``"very bad"``     :math:`\ge 1` (or NaN)  no finite mean: the estimate can be far off
=================  ======================  ====================================================

The 0.7 boundary is the large-sample limit of a sample-size dependent one: PSIS needs about
:math:`S > 10^{1/(1-k)}` draws, so with :math:`S` draws it is reliable for

.. math::

    \hat k < \min\left(1 - \frac{1}{\log_{10} S},\ 0.7\right)

([1], section 3.2.4): 0.5 for :math:`S = 100`, 0.67 for :math:`S = 1000`, 0.7 from
:math:`S \approx 2154`. :func:`sample_size_threshold` computes it, and
:meth:`PSISReport.summary` reports it and how many datapoints lie above it.

The draws of importance sampling are independent, so the relative efficiency ``reff`` that
ArviZ uses to size the tail for MCMC draws is 1.

References

[1] Vehtari, Simpson, Gelman, Yao & Gabry (2024), *Pareto smoothed importance sampling*,
    Journal of Machine Learning Research 25(72):1-58.
[2] Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
[3] Yao, Vehtari, Simpson & Gelman (2018), *Yes, but did it work?: Evaluating variational
    inference*, ICML.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ppl_vae.diagnostics._json import json_float
from ppl_vae.estimators import reduce_log_weights, summarize_log_weights
from ppl_vae.importance import DEFAULT_CHUNK_SIZE

__all__ = [
    "BAND_EXPLANATIONS",
    "BAND_UPPER_BOUNDS",
    "MIN_NUM_SAMPLES",
    "PSISReport",
    "khat_from_log_weights",
    "psis_diagnostics",
    "sample_size_threshold",
]

#: Fewest draws for which a tail can be fitted: ArviZ fits the generalized Pareto
#: distribution to the ``ceil(S / 5)`` largest weights (for ``S <= 225``) and needs at least
#: 5 of them (with fewer it returns ``k = inf``; with ``S = 1`` it fails).
MIN_NUM_SAMPLES = 21

#: Upper bound (exclusive) of :math:`\hat k` for each band but the last, from [1].
BAND_UPPER_BOUNDS: dict[str, float] = {"good": 0.5, "ok": 0.7, "bad": 1.0, "very bad": math.inf}

#: What each band of :math:`\hat k` means for the importance-sampled estimate of log p(x).
BAND_EXPLANATIONS: dict[str, str] = {
    "good": (
        "k < 0.5: the importance weights have finite variance; the IS and PSIS estimates "
        "of log p(x) converge at the usual 1/sqrt(S) rate and their standard errors hold."
    ),
    "ok": (
        "0.5 <= k < 0.7: the raw weights have infinite variance, so the plain IS estimate "
        "and its standard error are unreliable, but the PSIS estimate is still reliable "
        "(if k is also below the sample-size threshold min(1 - 1/log10(S), 0.7))."
    ),
    "bad": (
        "0.7 <= k < 1: the weights have a finite mean but converge too slowly for any "
        "practical number of samples; neither estimate is reliable. The guide misses posterior "
        "mass for this datapoint (Yao et al. 2018): improve it or refine it per datapoint."
    ),
    "very bad": (
        "k >= 1 (or k not estimable): the weights have no finite mean; the estimate of "
        "log p(x) can be far off (IS is then biased low) and more samples will not fix it."
    ),
}

_BAND_NAMES = tuple(BAND_UPPER_BOUNDS)


def sample_size_threshold(num_samples: int) -> float:
    r"""The largest :math:`\hat k` for which PSIS with ``num_samples`` draws is reliable,
    :math:`\min(1 - 1/\log_{10} S, 0.7)` ([1], section 3.2.4); ``-inf`` for :math:`S \le 1`
    and at most 0 for :math:`S \le 10`."""
    if num_samples <= 1:
        return -math.inf
    return min(1.0 - 1.0 / math.log10(num_samples), BAND_UPPER_BOUNDS["ok"])


def _check_num_samples(num_samples: int) -> None:
    if num_samples < MIN_NUM_SAMPLES:
        raise ValueError(
            f"PSIS needs at least {MIN_NUM_SAMPLES} importance samples per datapoint to fit "
            f"the tail of the weights (got {num_samples}); use a few hundred or more: with "
            "S samples k-hat is only trusted below min(1 - 1/log10(S), 0.7)"
        )


def _constant_columns(log_w: torch.Tensor) -> torch.Tensor:
    """Datapoints whose log weights agree to about half the working precision: their spread
    is below ``sqrt(eps) * max(1, max |log w|)`` for the dtype of ``log_w``."""
    dtype = log_w.dtype if log_w.is_floating_point() else torch.float64
    tolerance = math.sqrt(torch.finfo(dtype).eps)
    spread = log_w.amax(dim=0) - log_w.amin(dim=0)
    scale = log_w.abs().amax(dim=0).clamp_min(1.0)
    return spread.isfinite() & (spread <= tolerance * scale)  # False if any entry is not finite


@torch.no_grad()
def khat_from_log_weights(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Pareto-smooth log importance weights ``(S, N)`` (draws first, as
    :func:`~ppl_vae.importance.iter_log_weights` yields them), one datapoint per column.

    Calls ArviZ's ``az.psislw(log_w.T, reff=1.0, normalize=False)`` (ArviZ wants draws on
    the last axis). Returns float64 tensors on ``log_w``'s device:

    * the smoothed log weights ``(S, N)``, *unnormalized*, i.e. on the scale of
      :math:`\log w`: ArviZ subtracts the column maximum, replaces the tail by the fitted
      order statistics, truncates at 0 (the largest raw weight) and, with
      ``normalize=False``, adds the maximum back instead of subtracting the log-sum-exp.
      So ``logsumexp(smoothed, 0) - log S`` is the PSIS estimate of :math:`\log p(x)`, and
      ``smoothed - logsumexp(smoothed, 0)`` is what ``az.psislw(..., normalize=True)``
      returns. (From the normalized output alone one could recover the same estimate as
      :math:`\log w_s - \log \tilde w_s^{\text{norm}} - \log S` for any draw :math:`s`
      outside the smoothed tail, whose weight smoothing leaves unchanged.)
    * :math:`\hat k` per datapoint ``(N,)``.

    Weights that are constant to floating-point precision (an exact posterior as guide:
    every :math:`w_s = p(x)`) have no tail to fit. ArviZ returns ``k = inf`` when they are
    exactly constant (no draw lies strictly above the tail cutoff) and otherwise fits the
    rounding noise,
    giving arbitrary values with ``RuntimeWarning``\ s. Such datapoints (spread of the log
    weights below :math:`\sqrt{\epsilon}\max(1, |\log w|)` for the dtype's
    :math:`\epsilon`) get :math:`\hat k = -\infty` (bounded weights, the best case; band
    ``"good"``) and their log weights unsmoothed. Otherwise ArviZ returns ``inf`` when
    fewer than 5 draws lie strictly above the cutoff (many ties, or NaN weights) and
    would return NaN if the fit failed; both count as ``"very bad"``. Log weights of
    ``-inf`` (draws of zero weight) are handled like any other.

    :raises ValueError: if ``log_w`` is not 2-D or has fewer than :data:`MIN_NUM_SAMPLES`
        draws.
    """
    if log_w.dim() != 2:
        raise ValueError(f"log_w must have shape (S, N), got {tuple(log_w.shape)}")
    _check_num_samples(log_w.shape[0])
    import arviz as az  # deferred: a heavy import that only this function needs

    constant = _constant_columns(log_w).cpu().numpy()
    log_w64 = log_w.detach().to(device="cpu", dtype=torch.float64).numpy()
    smoothed = log_w64.copy()
    khat = np.full(log_w64.shape[1], -np.inf)
    fitted = ~constant
    if fitted.any():
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            tail_smoothed, tail_khat = az.psislw(log_w64[:, fitted].T, reff=1.0, normalize=False)
        smoothed[:, fitted] = np.asarray(tail_smoothed).T
        khat[fitted] = np.asarray(tail_khat)
    device = log_w.device
    return (
        torch.from_numpy(smoothed).to(device),
        torch.from_numpy(khat).to(device),
    )


def _band_masks(khat: torch.Tensor) -> dict[str, torch.Tensor]:
    masks = {}
    lower = -math.inf
    for name in _BAND_NAMES[:-1]:
        upper = BAND_UPPER_BOUNDS[name]
        masks[name] = (khat >= lower) & (khat < upper)
        lower = upper
    masks["very bad"] = (khat >= lower) | khat.isnan()
    return masks


def _band_of(k: float) -> str:
    for name in _BAND_NAMES[:-1]:
        if k < BAND_UPPER_BOUNDS[name]:
            return name
    return "very bad"  # also NaN: every comparison above is False


@dataclass(frozen=True)
class PSISReport:
    r"""Per-datapoint results of :func:`psis_diagnostics` (float64 tensors of shape ``(N,)``).

    :ivar khat: Pareto shape estimate :math:`\hat k` [1] (``-inf`` for constant weights,
        ``inf``/NaN where the tail could not be fitted; see :func:`khat_from_log_weights`).
    :ivar log_likelihood: plain IS estimate :math:`\log \frac1S \sum_s w_s` [2].
    :ivar psis_log_likelihood: :math:`\log \frac1S \sum_s \tilde w_s` with
        :math:`\tilde w_s` the Pareto-smoothed, unnormalized weights.
    :ivar ess: IS effective sample size :math:`(\sum_s w_s)^2 / \sum_s w_s^2` of the raw
        weights.
    :ivar stderr: Monte Carlo standard error of ``log_likelihood`` by the delta method,
        :math:`\hat\sigma_w / (\sqrt S\, \bar w)` (meaningful only for :math:`\hat k < 0.5`).
    :ivar elbo: :math:`\frac1S \sum_s \log w_s` from the same draws.
    :ivar num_samples: draws :math:`S` per datapoint.
    """

    khat: torch.Tensor
    log_likelihood: torch.Tensor
    psis_log_likelihood: torch.Tensor
    ess: torch.Tensor
    stderr: torch.Tensor
    elbo: torch.Tensor
    num_samples: int

    @property
    def num_data(self) -> int:
        return self.khat.numel()

    @property
    def sample_size_threshold(self) -> float:
        """:math:`\\min(1 - 1/\\log_{10} S, 0.7)`: PSIS is reliable below it."""
        return sample_size_threshold(self.num_samples)

    @property
    def reliable(self) -> torch.Tensor:
        """Boolean ``(N,)``: :math:`\\hat k` below :attr:`sample_size_threshold`."""
        return self.khat < self.sample_size_threshold

    @property
    def mean_stderr(self) -> float:
        """Standard error of the mean IS log-likelihood over datapoints."""
        return float(self.stderr.pow(2).sum().sqrt() / self.num_data)

    def bands(self) -> dict[str, int]:
        """Number of datapoints per band of :math:`\\hat k`: ``"good"`` (k < 0.5), ``"ok"``
        (0.5 <= k < 0.7), ``"bad"`` (0.7 <= k < 1), ``"very bad"`` (k >= 1 or NaN); see
        :data:`BAND_EXPLANATIONS`. The counts add up to ``N``."""
        return {name: int(mask.sum()) for name, mask in _band_masks(self.khat).items()}

    def worst(self, n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """The (at most) ``n`` datapoints with the largest :math:`\\hat k`: their indices
        (int64) and :math:`\\hat k` values, largest first, NaN ranked above everything and
        ties in index order."""
        key = torch.where(self.khat.isnan(), math.inf, self.khat)
        order = torch.sort(key, descending=True, stable=True).indices
        nan_first = torch.sort(
            self.khat[order].isnan().to(torch.int8), descending=True, stable=True
        )
        order = order[nan_first.indices][: max(n, 0)]
        return order, self.khat[order]

    def summary(self, worst: int = 10) -> dict[str, Any]:
        """Averages over datapoints (nats per datapoint), band counts, the ``worst``
        datapoints, the thresholds and what each band means; JSON-ready (non-finite numbers
        become ``None``)."""
        indices, values = self.worst(worst)
        key = torch.where(self.khat.isnan(), math.inf, self.khat)
        return {
            "num_data": self.num_data,
            "num_samples": self.num_samples,
            "log_likelihood": json_float(self.log_likelihood.mean()),
            "log_likelihood_stderr": json_float(self.mean_stderr),
            "psis_log_likelihood": json_float(self.psis_log_likelihood.mean()),
            "elbo": json_float(self.elbo.mean()),
            "ess_mean": json_float(self.ess.mean()),
            "ess_min": json_float(self.ess.min()),
            "khat_median": json_float(key.median()),
            "khat_max": json_float(key.max()),
            "bands": self.bands(),
            "thresholds": {
                "good": BAND_UPPER_BOUNDS["good"],
                "ok": BAND_UPPER_BOUNDS["ok"],
                "bad": BAND_UPPER_BOUNDS["bad"],
                "sample_size": json_float(self.sample_size_threshold),
            },
            "num_above_sample_size_threshold": int((~self.reliable).sum()),
            "worst": [
                {"index": int(i), "khat": json_float(k), "band": _band_of(float(k))}
                for i, k in zip(indices, values, strict=True)
            ],
            "explanations": {
                **BAND_EXPLANATIONS,
                "sample_size": (
                    f"with S = {self.num_samples} samples PSIS is reliable only for k < "
                    "min(1 - 1/log10(S), 0.7) (Vehtari et al. 2024, section 3.2.4); more "
                    "samples raise this threshold toward 0.7, a better guide lowers k."
                ),
            },
        }


def _psis_block(log_w: torch.Tensor) -> dict[str, torch.Tensor]:
    stats = summarize_log_weights(log_w)
    smoothed, khat = khat_from_log_weights(log_w)
    stats["khat"] = khat
    stats["psis_log_likelihood"] = torch.logsumexp(smoothed, dim=0) - math.log(log_w.shape[0])
    return stats


def psis_diagnostics(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    num_samples: int = 1000,
    mask: Any = None,
    y: Any = None,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PSISReport:
    """PSIS diagnostics of the importance-sampled :math:`\\log p(x)` for every datapoint.

    Streams over the blocks of :func:`~ppl_vae.importance.iter_log_weights`, holding at
    most one block of ``num_samples x n`` log weights at a time. Inputs are validated as in
    :func:`ppl_vae.estimators.log_likelihood` (a :class:`~ppl_vae.errors.DataError` for bad
    data), and with the same ``seed`` the draws, hence ``log_likelihood``, ``ess``,
    ``stderr`` and ``elbo``, are those of :func:`~ppl_vae.estimators.log_likelihood`.

    :param num_samples: importance samples :math:`S` per datapoint, at least
        :data:`MIN_NUM_SAMPLES`; :math:`\\hat k` is trusted below
        :func:`sample_size_threshold` of it (0.67 for the default 1000).
    :param mask: optional boolean mask passed to model and guide.
    :param y: class labels ``(N,)`` for conditional programs, passed as the keyword ``y``.
    :param seed: fixes the draws; results do not depend on ``chunk_size`` or on which other
        datapoints are in ``x``.
    :param chunk_size: bound on (particle, datapoint) pairs per vectorized pass (memory).
    """
    _check_num_samples(num_samples)
    stats = reduce_log_weights(
        model,
        guide,
        x,
        _psis_block,
        num_samples=num_samples,
        mask=mask,
        y=y,
        seed=seed,
        chunk_size=chunk_size,
    )
    return PSISReport(num_samples=num_samples, **stats)
