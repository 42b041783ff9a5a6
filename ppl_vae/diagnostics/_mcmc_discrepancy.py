r"""Per-datapoint discrepancy between the guide's draws and the NUTS draws of the exact
posterior, for :mod:`ppl_vae.diagnostics.mcmc`.

For datapoint :math:`x_i` the MCMC draws of all chains are pooled, and both samples are read
as vectors :math:`z \in \mathbb{R}^D`, all latent sites concatenated in the order of the
:class:`~ppl_vae.diagnostics._mcmc_layout.Layout`. Then, with the functions of
:mod:`ppl_vae.diagnostics.discrepancy`:

* per coordinate, mean and sd under MCMC and under :math:`q`, and their differences in units
  of the MCMC sd, :math:`(\bar z_q - \bar z_{\text{mcmc}}) / s_{\text{mcmc}}` and
  :math:`(s_q - s_{\text{mcmc}}) / s_{\text{mcmc}}`;
* the unbiased squared maximum mean discrepancy with a Gaussian kernel and the median
  heuristic bandwidth (Gretton et al. 2012, *A kernel two-sample test*, JMLR 13), on at
  most :data:`MMD_MAX_POINTS` evenly spaced draws of each sample (memory is quadratic in
  it; the thinning also reduces the autocorrelation of the MCMC draws, which would bias the
  estimate upward);
* the sliced Wasserstein-2 distance (Bonneel et al. 2015, *Sliced and Radon Wasserstein
  barycenters of measures*, J. Math. Imaging Vis. 51) over random directions from an
  explicit seed per datapoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import arviz as az
import numpy as np
import xarray as xr

from ppl_vae.diagnostics._mcmc_layout import Layout
from ppl_vae.diagnostics.discrepancy import (
    mmd_squared,
    moment_comparison,
    sliced_wasserstein,
    thin_evenly,
)

__all__ = ["MMD_MAX_POINTS", "guide_discrepancy"]

#: At most this many evenly spaced draws of each sample enter the MMD (memory is quadratic).
MMD_MAX_POINTS = 2000


def guide_discrepancy(
    mcmc: az.InferenceData,
    guide: az.InferenceData,
    layout: Layout,
    projection_seeds: Sequence[int],
    num_projections: int,
) -> xr.Dataset:
    """Per-datapoint moments, MMD² and sliced W2 between guide and MCMC draws; datapoint
    ``i`` draws its sliced-Wasserstein directions from ``projection_seeds[i]``.

    :returns: dims ``(obs, latent)``: ``mcmc_mean``, ``mcmc_sd``, ``guide_mean``,
        ``guide_sd``, ``mean_diff``, ``sd_diff``; dims ``(obs,)``: ``mmd2``, ``sliced_w2``;
        coordinates ``site`` and ``site_index`` along ``latent``.
    """
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
        sw2.append(sliced_wasserstein(draws, target, num_projections, projection_seeds[i]))
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
