r"""Distances between two samples of latent vectors: guide draws against posterior draws.

All functions take two samples ``a`` of shape ``(n, D)`` and ``b`` of shape ``(m, D)`` (array
likes; a 1-D array is read as ``D = 1``) and work in float64 NumPy. They are pure: the only
randomness, the projections of :func:`sliced_wasserstein`, comes from an explicit seed.

* :func:`moment_comparison`: per-coordinate means and standard deviations of both samples,
  and their differences in units of the reference sample's standard deviation,

  .. math::

      \Delta_\mu = \frac{\bar a - \bar b}{s_b}, \qquad
      \Delta_\sigma = \frac{s_a - s_b}{s_b}.

* :func:`mmd_squared`: the unbiased estimate of the squared maximum mean discrepancy with a
  Gaussian kernel :math:`k(u, v) = \exp(-\lVert u - v\rVert^2 / 2h^2)` ([1], eq. 3),

  .. math::

      \widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)} \sum_{i \ne j} k(a_i, a_j)
          + \frac{1}{m(m-1)} \sum_{i \ne j} k(b_i, b_j)
          - \frac{2}{nm} \sum_{i, j} k(a_i, b_j),

  zero in expectation when both samples come from the same distribution (it can then be
  slightly negative) and positive otherwise, since the Gaussian kernel is characteristic.
  The bandwidth :math:`h` defaults to the median heuristic ([1], section 8): the median
  Euclidean distance between points of the pooled sample (:func:`median_bandwidth`).
  Unbiasedness assumes independent draws: autocorrelated MCMC draws bias it upward by a
  little, so thin them first (:func:`ppl_vae.diagnostics.mcmc.posterior_mcmc` does).

* :func:`sliced_wasserstein`: the sliced Wasserstein-2 distance [2]

  .. math::

      \mathrm{SW}_2(a, b) = \Big(\mathbb{E}_{\theta \sim \mathcal{U}(S^{D-1})}\,
          W_2^2(\theta^\top a,\ \theta^\top b)\Big)^{1/2},

  the expectation estimated with ``num_projections`` random directions and each
  one-dimensional :math:`W_2^2 = \int_0^1 (F_a^{-1}(u) - F_b^{-1}(u))^2\,du` computed exactly
  between the two empirical distributions (sorted projections; unequal sizes handled through
  the quantile functions). For a pure shift :math:`b = a + \delta`,
  :math:`\mathrm{SW}_2 = \lVert\delta\rVert / \sqrt{D}`.

References

[1] Gretton, Borgwardt, Rasch, Schölkopf & Smola (2012), *A kernel two-sample test*, JMLR
    13, 723-773.
[2] Bonneel, Rabin, Peyré & Pfister (2015), *Sliced and Radon Wasserstein barycenters of
    measures*, Journal of Mathematical Imaging and Vision 51, 22-45.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "median_bandwidth",
    "mmd_squared",
    "moment_comparison",
    "sliced_wasserstein",
    "thin_evenly",
    "wasserstein_1d_squared",
]

#: At most this many points of each sample enter the median of pairwise distances.
_BANDWIDTH_POINTS = 1000


def _as_sample(values: Any, name: str) -> np.ndarray:
    sample = np.asarray(values, dtype=np.float64)
    if sample.ndim == 1:
        sample = sample[:, None]
    if sample.ndim != 2 or sample.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty sample of shape (n, D), got {sample.shape}")
    if not np.all(np.isfinite(sample)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return sample


def _pair(a: Any, b: Any, min_points: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_sample(a, "a"), _as_sample(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    if min(a.shape[0], b.shape[0]) < min_points:
        raise ValueError(f"each sample needs at least {min_points} points")
    return a, b


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def thin_evenly(sample: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` rows of ``sample``, evenly spaced (first and last kept): bounds the
    quadratic cost of kernel statistics and thins autocorrelated MCMC draws."""
    if sample.shape[0] <= count:
        return sample
    return sample[np.linspace(0, sample.shape[0] - 1, count).round().astype(int)]


def median_bandwidth(a: Any, b: Any) -> float:
    """Median heuristic: the median Euclidean distance between distinct points of the pooled
    sample (at most 1000 evenly spaced points of each); 1.0 when all points coincide."""
    a, b = _pair(a, b)
    pooled = np.concatenate([thin_evenly(a, _BANDWIDTH_POINTS), thin_evenly(b, _BANDWIDTH_POINTS)])
    d2 = _squared_distances(pooled, pooled)
    upper = d2[np.triu_indices(pooled.shape[0], k=1)]
    median = float(np.sqrt(np.median(upper))) if upper.size else 0.0
    return median if median > 0.0 else 1.0


def mmd_squared(a: Any, b: Any, *, bandwidth: float | None = None) -> float:
    r"""Unbiased :math:`\widehat{\mathrm{MMD}}^2_u` between samples ``a`` and ``b`` with a
    Gaussian kernel of bandwidth ``bandwidth`` (default: :func:`median_bandwidth`); see the
    module docs. Costs :math:`O((n + m)^2 D)` time and :math:`O((n + m)^2)` memory, so thin
    large samples first. Each sample needs at least two points."""
    a, b = _pair(a, b, min_points=2)
    if bandwidth is None:
        bandwidth = median_bandwidth(a, b)
    if not bandwidth > 0.0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    scale = -0.5 / bandwidth**2
    n, m = a.shape[0], b.shape[0]
    k_aa = np.exp(scale * _squared_distances(a, a))
    k_bb = np.exp(scale * _squared_distances(b, b))
    k_ab = np.exp(scale * _squared_distances(a, b))
    # The diagonals are exactly exp(0) = 1: drop them for the U-statistic.
    term_aa = (k_aa.sum() - n) / (n * (n - 1))
    term_bb = (k_bb.sum() - m) / (m * (m - 1))
    return float(term_aa + term_bb - 2.0 * k_ab.mean())


def wasserstein_1d_squared(a: Any, b: Any) -> np.ndarray:
    r""":math:`W_2^2` between the empirical distributions of the columns of ``a`` ``(n, L)``
    and ``b`` ``(m, L)``, column by column: shape ``(L,)``. Exact: the integral of the
    squared difference of the two (piecewise constant) quantile functions over the union of
    their breakpoints :math:`\{i/n\} \cup \{j/m\}`."""
    a, b = _pair(a, b)
    n, m = a.shape[0], b.shape[0]
    a, b = np.sort(a, axis=0), np.sort(b, axis=0)
    if n == m:
        return ((a - b) ** 2).mean(axis=0)
    levels = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    levels[-1] = 1.0
    widths = np.diff(levels, prepend=0.0)
    middle = levels - widths / 2.0  # inside each interval, away from the breakpoints
    index_a = np.minimum((middle * n).astype(int), n - 1)
    index_b = np.minimum((middle * m).astype(int), m - 1)
    return (widths[:, None] * (a[index_a] - b[index_b]) ** 2).sum(axis=0)


def sliced_wasserstein(a: Any, b: Any, num_projections: int = 128, seed: int = 0) -> float:
    r"""Sliced Wasserstein-2 distance :math:`\mathrm{SW}_2(a, b)` (module docs) estimated with
    ``num_projections`` directions drawn uniformly on the unit sphere from a NumPy generator
    seeded with ``seed``. In one dimension the single direction is exact."""
    a, b = _pair(a, b)
    if num_projections < 1:
        raise ValueError(f"num_projections must be positive, got {num_projections}")
    dim = a.shape[1]
    if dim == 1:
        directions = np.ones((1, 1))
    else:
        directions = np.random.default_rng(seed).standard_normal((num_projections, dim))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return float(np.sqrt(wasserstein_1d_squared(a @ directions.T, b @ directions.T).mean()))


def moment_comparison(draws: Any, reference: Any) -> dict[str, np.ndarray]:
    r"""Per-coordinate moments of ``draws`` (e.g. the guide's) against ``reference`` (e.g.
    MCMC draws from the posterior), each ``(D,)``:

    * ``reference_mean``, ``reference_sd``, ``mean``, ``sd`` (sample standard deviations);
    * ``mean_diff`` :math:`= (\bar a - \bar b) / s_b`, the mean error in reference sds;
    * ``sd_diff`` :math:`= (s_a - s_b) / s_b`, the sd error in reference sds (``-0.5``: the
      draws are half as wide as the reference).

    Coordinates where the reference does not vary give ``inf`` or ``nan`` differences.
    """
    draws, reference = _pair(draws, reference, min_points=2)
    ref_mean, ref_sd = reference.mean(0), reference.std(0, ddof=1)
    mean, sd = draws.mean(0), draws.std(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_diff = (mean - ref_mean) / ref_sd
        sd_diff = (sd - ref_sd) / ref_sd
    return {
        "reference_mean": ref_mean,
        "reference_sd": ref_sd,
        "mean": mean,
        "sd": sd,
        "mean_diff": mean_diff,
        "sd_diff": sd_diff,
    }
