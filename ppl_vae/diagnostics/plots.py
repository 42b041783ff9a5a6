r"""Figures of the posterior diagnostics, written as PNG files.

Every function draws on its own :class:`matplotlib.figure.Figure` (never through pyplot's
global figure manager, so no window opens and nothing is left open whatever the backend),
saves it to ``path`` (parent folders are created) at exactly ``figsize * dpi`` pixels and
returns the path. Figures that ArviZ might open through pyplot during a call are closed
again.

* :func:`plot_khat`: Pareto :math:`\hat k` per datapoint (PSIS, Vehtari et al. [1]) by
  :func:`arviz.plot_khat`, with horizontal lines at 0.5, 0.7 and 1 and the bands between
  them shaded;
* :func:`plot_gap_decomposition`: per datapoint, the approximation gap
  :math:`\log p(x) - \mathrm{ELBO}(q^*)` and the amortization gap
  :math:`\mathrm{ELBO}(q^*) - \mathrm{ELBO}(q_\phi)` stacked (Cremer, Li & Duvenaud [2]);
* :func:`plot_pair_comparison`: guide draws over MCMC draws of two latent coordinates of one
  datapoint;
* :func:`plot_kl_per_dimension`: mean KL per latent coordinate, per site;
* :func:`plot_ppc`: :func:`arviz.plot_ppc` of a posterior predictive check (histograms of
  observed and replicated values where ArviZ cannot draw it).

References

[1] Vehtari, Simpson, Gelman, Yao & Gabry (2024), *Pareto smoothed importance sampling*,
    JMLR 25(72):1-58.
[2] Cremer, Li & Duvenaud (2018), *Inference suboptimality in variational autoencoders*,
    ICML.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import xarray as xr
from matplotlib import MatplotlibDeprecationWarning
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "plot_gap_decomposition",
    "plot_kl_per_dimension",
    "plot_khat",
    "plot_pair_comparison",
    "plot_ppc",
]

#: Default size of every figure, inches; at ``dpi=100`` a 640 x 400 pixel PNG.
FIGSIZE: tuple[float, float] = (6.4, 4.0)

_KHAT_BANDS = (("#fff3c4", "ok"), ("#ffd8a8", "bad"), ("#ffc9c9", "very bad"))


@contextlib.contextmanager
def _figure(
    path: str | Path, figsize: tuple[float, float], dpi: float
) -> Iterator[tuple[Figure, Path]]:
    """A detached figure saved to ``path`` on exit; pyplot figures opened meanwhile (by
    ArviZ) are closed."""
    before = set(plt.get_fignums())
    figure = Figure(figsize=figsize, dpi=dpi)
    out = Path(path)
    try:
        yield figure, out
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=dpi, format="png")
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
        figure.clear()


@contextlib.contextmanager
def _quiet_arviz() -> Iterator[None]:
    """ArviZ 0.23 calls matplotlib APIs that matplotlib 3.11 deprecates; those warnings are
    about ArviZ's code, not the caller's, so they are silenced around ArviZ calls."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MatplotlibDeprecationWarning)
        yield


def _array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def _field(report: Any, key: str) -> Any:
    """``report[key]`` for mappings, else ``report.key`` (dataclass reports)."""
    if isinstance(report, Mapping):
        if key not in report:
            raise KeyError(f"the report has no {key!r}; it needs per-datapoint lists {key!r}")
        return report[key]
    return getattr(report, key)


def plot_khat(
    khat: Any,
    path: str | Path,
    *,
    thresholds: Sequence[float] = (0.5, 0.7, 1.0),
    num_samples: int | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = FIGSIZE,
    dpi: float = 100,
) -> Path:
    r"""Pareto :math:`\hat k` per datapoint by :func:`arviz.plot_khat`, lines at
    ``thresholds`` and the bands above 0.5 shaded (ok, bad, very bad).

    :param khat: values ``(N,)`` (array, tensor) or a report with a ``khat`` attribute
        (:class:`ppl_vae.diagnostics.psis.PSISReport`). ``-inf`` (constant weights, an exact
        guide) and NaN are not drawn.
    :param thresholds: the three band boundaries, 0.5 / 0.7 / 1 [1].
    :param num_samples: importance samples S; when given, the sample-size threshold
        :math:`\min(1 - 1/\log_{10} S, 0.7)` is also drawn, and ArviZ colours points above it.
    """
    values = _array(getattr(khat, "khat", khat)).reshape(-1)
    lines = [float(t) for t in thresholds]
    if len(lines) != 3 or sorted(lines) != lines:
        raise ValueError(f"thresholds must be three increasing values, got {thresholds}")
    good_k = lines[1]
    if num_samples is not None and num_samples > 10:
        good_k = min(1.0 - 1.0 / math.log10(num_samples), lines[1])
    shown = np.where(np.isfinite(values), values, np.nan)
    pareto_k = xr.DataArray(shown, dims=["obs"], coords={"obs": np.arange(values.size)})
    elpd = az.ELPDData(data=[pareto_k, good_k], index=["pareto_k", "good_k"])
    with _figure(path, figsize, dpi) as (figure, out):
        ax = figure.add_subplot()
        with _quiet_arviz():
            az.plot_khat(
                elpd,
                ax=ax,
                show_hlines=True,
                hlines_kwargs={
                    "hlines": lines,
                    "linestyle": [":", "-.", "--"],
                    "color": "0.35",
                    "alpha": 0.8,
                },
                show=False,
            )
        top = max(lines[2] + 0.1, float(np.nanmax(shown)) + 0.05 if np.isfinite(shown).any() else 0)
        bounds = [lines[0], lines[1], lines[2], top]
        for (color, label), low, high in zip(_KHAT_BANDS, bounds[:-1], bounds[1:], strict=True):
            ax.axhspan(low, high, color=color, alpha=0.6, zorder=-2, lw=0, label=label)
        if num_samples is not None and good_k < lines[1]:
            ax.axhline(good_k, color="C3", lw=1, ls="--", label=f"S = {num_samples} limit")
        ax.set_ylim(top=top)
        ax.set_xlabel("datapoint")
        ax.set_ylabel(r"Pareto $\hat k$")
        hidden = int((~np.isfinite(values)).sum())
        note = f" ({hidden} not finite, not drawn)" if hidden else ""
        ax.set_title((title or r"PSIS $\hat k$ per datapoint") + note)
        ax.legend(loc="upper right", fontsize="small")
        figure.tight_layout()
    return out


def plot_gap_decomposition(
    report_dict: Any,
    path: str | Path,
    *,
    title: str | None = None,
    figsize: tuple[float, float] = FIGSIZE,
    dpi: float = 100,
) -> Path:
    r"""Stacked bars per datapoint: the approximation gap (bottom) and the amortization gap
    (top), whose sum is the inference gap :math:`\log p(x) - \mathrm{ELBO}(q_\phi)`; dashed
    lines at the means.

    :param report_dict: a mapping (or an object with attributes) holding equal-length
        per-datapoint sequences ``approximation_gap`` and ``amortization_gap``.
    """
    approximation = _array(_field(report_dict, "approximation_gap")).reshape(-1)
    amortization = _array(_field(report_dict, "amortization_gap")).reshape(-1)
    if approximation.shape != amortization.shape:
        raise ValueError(
            f"approximation_gap and amortization_gap must have the same length, got "
            f"{approximation.size} and {amortization.size}"
        )
    index = np.arange(approximation.size)
    with _figure(path, figsize, dpi) as (figure, out):
        ax = figure.add_subplot()
        width = 0.8 if approximation.size < 200 else 1.0
        mean_ap, mean_am = float(np.nanmean(approximation)), float(np.nanmean(amortization))
        ax.bar(index, approximation, width, color="C0", label=f"approximation (mean {mean_ap:.3g})")
        ax.bar(
            index,
            amortization,
            width,
            bottom=approximation,
            color="C1",
            label=f"amortization (mean {mean_am:.3g})",
        )
        ax.axhline(mean_ap, color="C0", ls="--", lw=1)
        ax.axhline(mean_ap + mean_am, color="C1", ls="--", lw=1)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xlabel("datapoint")
        ax.set_ylabel("gap (nats)")
        ax.set_title(title or f"Inference gap (mean {mean_ap + mean_am:.3g} nats)")
        ax.legend(loc="upper right", fontsize="small")
        figure.tight_layout()
    return out


def _latent_draws(idata: Any, var_name: str, obs: int, coords: tuple[int, int]) -> np.ndarray:
    """``(draws, 2)``: the two coordinates of datapoint ``obs`` from a posterior variable of
    dims ``(chain, draw, obs, latent)`` (read by position)."""
    posterior = idata.posterior
    if var_name not in posterior:
        raise KeyError(f"no posterior variable {var_name!r}; have {list(posterior.data_vars)}")
    values = np.asarray(posterior[var_name].values, dtype=np.float64)
    if values.ndim == 3:  # one scalar coordinate per datapoint
        values = values[..., None]
    if values.ndim != 4:
        raise ValueError(
            f"posterior variable {var_name!r} must have dims (chain, draw, obs, latent), got "
            f"shape {values.shape}"
        )
    if not 0 <= obs < values.shape[2]:
        raise IndexError(f"obs={obs} is outside 0..{values.shape[2] - 1}")
    for c in coords:
        if not 0 <= c < values.shape[3]:
            raise IndexError(f"latent coordinate {c} is outside 0..{values.shape[3] - 1}")
    draws = values[:, :, obs, :].reshape(-1, values.shape[3])
    return draws[:, list(coords)]


def plot_pair_comparison(
    mcmc_idata: Any,
    guide_idata: Any,
    path: str | Path,
    *,
    obs: int = 0,
    coords: tuple[int, int] = (0, 1),
    var_name: str | None = None,
    max_points: int = 2000,
    figsize: tuple[float, float] = (6.0, 6.0),
    dpi: float = 100,
) -> Path:
    """Guide draws over MCMC draws of two latent coordinates of datapoint ``obs``: a scatter
    overlay with marginal histograms.

    :param mcmc_idata: InferenceData whose ``posterior`` has one variable per latent site,
        dims ``(chain, draw, obs, latent)``; the reference.
    :param guide_idata: the same layout for draws of the guide.
    :param coords: the two latent coordinates (positions along the last dim); they may be the
        same coordinate only if ``D == 1``.
    :param var_name: the latent site; by default the first variable both posteriors share.
    :param max_points: at most this many draws of each are drawn (evenly thinned).
    """
    if var_name is None:
        shared = [v for v in guide_idata.posterior.data_vars if v in mcmc_idata.posterior]
        if not shared:
            raise KeyError("the two InferenceData objects share no posterior variable")
        var_name = str(shared[0])
    reference = _latent_draws(mcmc_idata, var_name, obs, coords)
    approximate = _latent_draws(guide_idata, var_name, obs, coords)

    def thin(draws: np.ndarray) -> np.ndarray:
        if draws.shape[0] <= max_points:
            return draws
        return draws[np.linspace(0, draws.shape[0] - 1, max_points).round().astype(int)]

    reference, approximate = thin(reference), thin(approximate)
    with _figure(path, figsize, dpi) as (figure, out):
        grid = figure.add_gridspec(
            2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05
        )
        ax = figure.add_subplot(grid[1, 0])
        top = figure.add_subplot(grid[0, 0], sharex=ax)
        right = figure.add_subplot(grid[1, 1], sharey=ax)
        styles = (("MCMC", reference, "C0"), ("guide q", approximate, "C1"))
        for label, draws, color in styles:
            ax.scatter(draws[:, 0], draws[:, 1], s=6, alpha=0.35, color=color, label=label, lw=0)
            ax.scatter(*draws.mean(0), marker="X", s=80, color=color, edgecolor="k", zorder=3)
            top.hist(draws[:, 0], bins=40, density=True, alpha=0.5, color=color)
            right.hist(
                draws[:, 1], bins=40, density=True, alpha=0.5, color=color, orientation="horizontal"
            )
        top.tick_params(labelbottom=False, labelleft=False)
        right.tick_params(labelleft=False, labelbottom=False)
        ax.set_xlabel(f"{var_name}[{coords[0]}]")
        ax.set_ylabel(f"{var_name}[{coords[1]}]")
        ax.legend(loc="best", fontsize="small", markerscale=3)
        top.set_title(f"posterior of datapoint {obs}: MCMC vs guide")
    return out


def _kl_mapping(kl_values: Any) -> dict[str, np.ndarray]:
    if hasattr(kl_values, "per_dimension") and not isinstance(kl_values, Mapping):
        kl_values = kl_values.per_dimension  # a KLPerDimension
    if isinstance(kl_values, Mapping):
        return {str(name): _array(v).reshape(-1) for name, v in kl_values.items()}
    return {"z": _array(kl_values).reshape(-1)}


def plot_kl_per_dimension(
    kl_values: Any,
    path: str | Path,
    *,
    title: str | None = None,
    sort: bool = False,
    figsize: tuple[float, float] = FIGSIZE,
    dpi: float = 100,
) -> Path:
    """Bars of the mean KL per latent coordinate, coloured by site; unavailable values (NaN,
    e.g. flow guides) are marked "n/a".

    :param kl_values: a :class:`~ppl_vae.diagnostics.latents.KLPerDimension`, a mapping
        site -> values ``(D_s,)``, or one array of values.
    :param sort: order each site's coordinates by decreasing KL.
    """
    sites = _kl_mapping(kl_values)
    with _figure(path, figsize, dpi) as (figure, out):
        ax = figure.add_subplot()
        position, ticks, labels = 0, [], []
        for color_index, (name, values) in enumerate(sites.items()):
            order = (
                np.argsort(-np.nan_to_num(values, nan=-np.inf)) if sort else np.arange(values.size)
            )
            color = f"C{color_index % 10}"
            xs = position + np.arange(values.size)
            shown = values[order]
            ax.bar(xs, np.nan_to_num(shown, nan=0.0), 0.8, color=color, label=name)
            for x_pos, value in zip(xs, shown, strict=True):
                if np.isnan(value):
                    ax.text(x_pos, 0, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
            ticks.extend(xs.tolist())
            labels.extend(f"{name}[{i}]" for i in order)
            position += values.size + 1
        if len(ticks) <= 40:
            ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
        ax.set_xlabel("latent coordinate")
        ax.set_ylabel("KL (nats)")
        ax.set_title(title or "KL(q(z_u | x) || p(z_u)) per coordinate, mean over x")
        ax.legend(loc="upper right", fontsize="small")
        figure.tight_layout()
    return out


def _whole_numbers(idata: Any, var_name: str) -> bool:
    values = [np.asarray(idata.observed_data[var_name].values)]
    values.append(np.asarray(idata.posterior_predictive[var_name].values))
    return all(np.all(v == np.round(v)) for v in values)


def _ppc_histograms(ax: Axes, idata: Any, var_name: str, num_pp_samples: int) -> None:
    observed = np.asarray(idata.observed_data[var_name].values, dtype=np.float64).reshape(-1)
    replicated = np.asarray(idata.posterior_predictive[var_name].values, dtype=np.float64)
    replicated = replicated.reshape(-1, observed.size)
    bins = np.histogram_bin_edges(np.concatenate([observed, replicated.reshape(-1)]), bins=30)
    for row in replicated[:num_pp_samples]:
        ax.hist(row, bins=bins, density=True, histtype="step", color="C0", alpha=0.2)
    ax.hist(observed, bins=bins, density=True, histtype="step", color="k", lw=2, label="observed")
    ax.plot([], [], color="C0", alpha=0.5, label="replicated")
    ax.set_xlabel(var_name)
    ax.legend(loc="upper right", fontsize="small")


def plot_ppc(
    idata: Any,
    path: str | Path,
    *,
    var_name: str = "x",
    num_pp_samples: int | None = None,
    kind: str = "kde",
    title: str | None = None,
    figsize: tuple[float, float] = FIGSIZE,
    dpi: float = 100,
) -> Path:
    """Observed against replicated values of ``var_name`` by :func:`arviz.plot_ppc`, every
    dimension flattened (the ``inference_data`` of
    :func:`~ppl_vae.diagnostics.predictive.posterior_predictive_check`). Whole-number data
    (binary pixels, counts) are passed to ArviZ as integers, so it draws histograms instead of
    densities. Where ArviZ cannot draw the data, overlaid histograms are drawn instead.

    :param num_pp_samples: replicates drawn (default: all, at most 50).
    :param kind: ArviZ's ``kind``: ``"kde"``, ``"cumulative"`` or ``"scatter"``.
    """
    draws = int(idata.posterior_predictive.sizes.get("draw", 1))
    chains = int(idata.posterior_predictive.sizes.get("chain", 1))
    count = min(num_pp_samples or 50, draws * chains)
    data = idata
    if _whole_numbers(idata, var_name):
        data = az.InferenceData(
            observed_data=idata.observed_data[[var_name]].astype(np.int64),
            posterior_predictive=idata.posterior_predictive[[var_name]].astype(np.int64),
        )
    with _figure(path, figsize, dpi) as (figure, out):
        ax = figure.add_subplot()
        try:
            with _quiet_arviz():
                az.plot_ppc(
                    data,
                    var_names=[var_name],
                    kind=kind,
                    num_pp_samples=count,
                    random_seed=0,
                    ax=ax,
                    show=False,
                )
        except (ValueError, TypeError, KeyError, IndexError):
            ax.clear()
            _ppc_histograms(ax, idata, var_name, count)
        ax.set_title(title or f"posterior predictive check of {var_name!r}")
        figure.tight_layout()
    return out
