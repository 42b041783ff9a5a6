"""Posterior diagnostics: can the log-likelihood be trusted, and where does the ELBO lose its
nats? Per datapoint, for any model/guide pair that keeps the contract.

- :func:`psis_diagnostics`: Pareto k-hat of the importance weights, ESS, MCSE, PSIS estimate;
- :func:`gap_decomposition`: approximation and amortization gaps (Cremer et al. 2018);
- :func:`posterior_mcmc`: NUTS on p(z | x) against the guide, as ArviZ ``InferenceData``;
- :func:`posterior_predictive_check`: replicated data against the observed;
- :func:`latent_report`: active units, KL per dimension, aggregate posterior vs prior;
- :func:`diagnose_run`: all of it for a run directory (``ppl-vae diagnose``).
"""

from ppl_vae.diagnostics.gaps import GapReport, gap_decomposition
from ppl_vae.diagnostics.latents import (
    LatentReport,
    active_units,
    aggregate_posterior_vs_prior,
    kl_per_dimension,
    latent_report,
)
from ppl_vae.diagnostics.mcmc import PosteriorComparison, compare_guide, posterior_mcmc
from ppl_vae.diagnostics.predictive import PosteriorPredictiveCheck, posterior_predictive_check
from ppl_vae.diagnostics.psis import PSISReport, khat_from_log_weights, psis_diagnostics
from ppl_vae.diagnostics.report import DiagnoseSettings, diagnose_run

__all__ = [
    "DiagnoseSettings",
    "GapReport",
    "LatentReport",
    "PSISReport",
    "PosteriorComparison",
    "PosteriorPredictiveCheck",
    "active_units",
    "aggregate_posterior_vs_prior",
    "compare_guide",
    "diagnose_run",
    "gap_decomposition",
    "khat_from_log_weights",
    "kl_per_dimension",
    "latent_report",
    "posterior_mcmc",
    "posterior_predictive_check",
    "psis_diagnostics",
]
