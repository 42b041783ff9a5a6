"""``ppl-vae diagnose RUN_DIR``: every posterior diagnostic of a trained run, written as a
JSON report, ArviZ netCDF files and pictures.

The pieces, each usable alone from Python:

1. reliability of the importance-sampled log p(x) per datapoint: Pareto k-hat, ESS, MCSE and
   the PSIS-smoothed estimate (:mod:`ppl_vae.diagnostics.psis`);
2. the gap log p(x) - ELBO split into approximation and amortization gaps
   (:mod:`ppl_vae.diagnostics.gaps`);
3. the true posterior p(z | x) by NUTS against the guide, in ArviZ ``InferenceData``
   (:mod:`ppl_vae.diagnostics.mcmc`);
4. posterior predictive checks (:mod:`ppl_vae.diagnostics.predictive`);
5. latent health: active units, KL per dimension, aggregate posterior against the prior
   (:mod:`ppl_vae.diagnostics.latents`).

Datapoints are evenly spaced rows of the split (:func:`ppl_vae.run.run_split`); the gap
decomposition runs on evenly spaced rows of those, and NUTS on the datapoints with the
largest k-hat, where the guide is least trustworthy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import arviz as az
import numpy as np
import torch

from ppl_vae.atomic import write_json
from ppl_vae.device import resolve_device
from ppl_vae.diagnostics.gaps import gap_decomposition
from ppl_vae.diagnostics.latents import latent_report
from ppl_vae.diagnostics.mcmc import PosteriorComparison, posterior_mcmc
from ppl_vae.diagnostics.plots import (
    plot_gap_decomposition,
    plot_khat,
    plot_kl_per_dimension,
    plot_pair_comparison,
    plot_ppc,
)
from ppl_vae.diagnostics.predictive import posterior_predictive_check
from ppl_vae.diagnostics.psis import psis_diagnostics
from ppl_vae.errors import ConfigError
from ppl_vae.run import evenly_spaced_rows, load_run, run_split

__all__ = ["REPORT", "DiagnoseSettings", "diagnose_run"]

REPORT = "report.json"

_T = TypeVar("_T")


@dataclass(frozen=True)
class DiagnoseSettings:
    """How much work ``diagnose`` does; the defaults take minutes on 2 CPU cores for a
    784-200-200-50 MNIST model.

    :param num_data: datapoints (evenly spaced through the split) for PSIS, latent health
        and the posterior predictive check.
    :param num_samples: importance samples K per datapoint for PSIS.
    :param gap_points: datapoints for the gap decomposition (0 skips it).
    :param gap_steps: optimisation steps of the per-datapoint guides.
    :param gap_family: their family (default: the run's guide family).
    :param gap_samples: importance samples for log p(x) in the gap decomposition.
    :param mcmc_points: datapoints for NUTS (0 skips it), those with the largest k-hat.
    :param mcmc_chains: NUTS chains per datapoint.
    :param mcmc_samples: draws per chain after warm-up.
    :param mcmc_warmup: warm-up steps per chain.
    :param ppc_replicates: replicated datasets for the posterior predictive check.
    :param seed: seeds every random draw.
    """

    split: str = "test"
    num_data: int = 200
    num_samples: int = 1000
    gap_points: int = 10
    gap_steps: int = 1000
    gap_family: str | None = None
    gap_samples: int = 5000
    mcmc_points: int = 2
    mcmc_chains: int = 4
    mcmc_samples: int = 500
    mcmc_warmup: int = 500
    ppc_replicates: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("num_data", "num_samples", "mcmc_chains", "mcmc_samples", "ppc_replicates")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("gap_points", "gap_steps", "mcmc_points", "mcmc_warmup"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.num_samples < 21:
            raise ConfigError(
                f"num_samples must be at least 21 for Pareto smoothing, got {self.num_samples}"
            )


@dataclass
class _Runner:
    """Runs each diagnostic on the pair and the data (or some rows of them) with the
    settings' seed, and times it."""

    model: Callable
    guide: Callable
    x: torch.Tensor
    y: torch.Tensor | None
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(
        self,
        name: str,
        diagnostic: Callable[..., _T],
        rows: torch.Tensor | None = None,
        **options: Any,
    ) -> _T:
        """``diagnostic(model, guide, x[rows], y=y[rows], seed=seed, **options)``, its
        wall-clock seconds recorded under ``name``."""
        start = time.perf_counter()
        x, y = (self.x, self.y) if rows is None else (self.x[rows], _subset(self.y, rows))
        result = diagnostic(self.model, self.guide, x, y=y, seed=self.seed, **options)
        self.seconds[name] = time.perf_counter() - start
        return result


def _subset(tensor: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor[rows]


def _write_netcdf(idata: az.InferenceData, path: Path) -> str:
    idata.to_netcdf(str(path))
    return str(path)


def _most_different_coordinates(
    comparison: PosteriorComparison, obs: int
) -> tuple[str, tuple[int, int]]:
    """The first latent site and its two coordinates where the guide's mean is furthest from
    the MCMC mean (in MCMC sds) for datapoint ``obs``: the pair plot worth looking at."""
    site, (start, stop) = next(iter(comparison.latent_columns.items()))
    distance = comparison.discrepancy["mean_diff"].values[obs, start:stop]
    if stop - start < 2:
        return site, (0, 0)
    order = np.argsort(-np.nan_to_num(np.abs(distance), nan=-1.0))
    return site, (int(order[0]), int(order[1]))


def diagnose_run(
    run_dir: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    settings: DiagnoseSettings | None = None,
    data_dir: str | None = None,
    download: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Diagnose a ``ppl-vae train`` run; returns the report also written to
    ``out_dir/report.json`` (default ``RUN_DIR/diagnostics``), next to ``posterior_mcmc.nc``,
    ``posterior_guide.nc``, ``posterior_predictive.nc`` and PNG pictures.

    :param device: where model, guide and data go (see :func:`ppl_vae.run.train_run`),
        whichever device the run was trained on; recorded in the report. The results are
        moved to the CPU for NumPy, ArviZ and the pictures.
    """
    settings = settings or DiagnoseSettings()
    device = resolve_device(device)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "diagnostics"
    config, model, guide, payload = load_run(run_dir, device=device)
    name, x, y, rows = run_split(
        config,
        settings.split,
        data_dir=data_dir,
        download=download,
        seed=settings.seed,
        num_data=settings.num_data,
    )
    x, y = x.to(device), None if y is None else y.to(device)  # moved once, not per diagnostic
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    run = _Runner(model, guide, x, y, settings.seed)
    report: dict[str, Any] = {
        "run": str(Path(run_dir).resolve()),
        "epoch": int(payload["epoch"]),
        "dataset": name,
        "split": settings.split,
        "device": str(device),
        "settings": asdict(settings),
    }

    psis = run("psis", psis_diagnostics, num_samples=settings.num_samples)
    report["psis"] = psis.summary()
    files["khat"] = str(plot_khat(psis.khat, out / "khat.png", num_samples=settings.num_samples))

    if settings.gap_points:
        chosen = evenly_spaced_rows(settings.gap_points, x.shape[0])
        gaps = run(
            "gaps",
            gap_decomposition,
            chosen,
            family=settings.gap_family,
            steps=settings.gap_steps,
            num_samples=settings.gap_samples,
        )
        report["gaps"] = {**gaps.summary(), "split_rows": rows[chosen].tolist()}
        files["gaps"] = str(plot_gap_decomposition(gaps, out / "gaps.png"))

    if settings.mcmc_points:
        # k-hat lives on the model's device; `rows` (split rows) on the CPU
        worst = psis.worst(settings.mcmc_points)[0].to("cpu", torch.long)
        comparison = run(
            "mcmc",
            posterior_mcmc,
            worst,
            num_chains=settings.mcmc_chains,
            num_samples=settings.mcmc_samples,
            warmup_steps=settings.mcmc_warmup,
        )
        report["mcmc"] = comparison.summary()
        report["mcmc"]["split_rows"] = rows[worst].tolist()
        for group, idata in (("mcmc", comparison.mcmc), ("guide", comparison.guide)):
            files[f"posterior_{group}"] = _write_netcdf(idata, out / f"posterior_{group}.nc")
        for obs in range(worst.numel()):
            site, coords = _most_different_coordinates(comparison, obs)
            path = out / f"pair_{obs}.png"
            files[f"pair_{obs}"] = str(
                plot_pair_comparison(
                    comparison.mcmc, comparison.guide, path, obs=obs, coords=coords, var_name=site
                )
            )

    ppc = run("ppc", posterior_predictive_check, num_replicates=settings.ppc_replicates)
    report["ppc"] = ppc.summary()
    files["posterior_predictive"] = _write_netcdf(
        ppc.inference_data, out / "posterior_predictive.nc"
    )
    files["ppc"] = str(plot_ppc(ppc.inference_data, out / "ppc.png"))

    latents = run("latents", latent_report)
    report["latents"] = latents.summary()
    files["kl_per_dimension"] = str(
        plot_kl_per_dimension(latents.kl.per_dimension, out / "kl_per_dimension.png")
    )

    report["split_rows"] = rows.tolist()
    report["seconds"] = run.seconds
    report["files"] = files
    write_json(out / REPORT, report)
    return report
