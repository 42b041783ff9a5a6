"""ppl_vae: variational autoencoders as Pyro programs, with importance-sampled log p(x).

The top floor of the house (see DESIGN.md): the engine that trains and evaluates any
model/guide pair keeping the contract ``model(x, mask=None)``, ``guide(x, mask=None)``,
per-datapoint sites in ``pyro.plate("data", N)``, observed site ``"x"``.
"""

from ppl_vae.build import ARCHITECTURES, ModelSpec, build_vae
from ppl_vae.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from ppl_vae.data import DATASETS, Dataset, load_dataset
from ppl_vae.errors import (
    CheckpointError,
    ConfigError,
    ContractError,
    DataError,
    DatasetNotFoundError,
    PplVaeError,
    TrainingDivergedError,
    UnknownNameError,
)
from ppl_vae.estimators import LogLikelihoodEstimate, elbo, log_likelihood
from ppl_vae.importance import iter_log_weights, log_importance_weights, trace_log_weights
from ppl_vae.kl_scaling import ScaleLatents, kl_warmup, scale_latents
from ppl_vae.objectives import OBJECTIVES, build_objective
from ppl_vae.training import EpochRecord, FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "DATASETS",
    "OBJECTIVES",
    "ScaleLatents",
    "CheckpointError",
    "ConfigError",
    "ContractError",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "EpochRecord",
    "FitResult",
    "LogLikelihoodEstimate",
    "ModelSpec",
    "PplVaeError",
    "TrainingDivergedError",
    "UnknownNameError",
    "build_objective",
    "build_vae",
    "elbo",
    "fit",
    "iter_log_weights",
    "kl_warmup",
    "load_checkpoint",
    "load_dataset",
    "log_importance_weights",
    "log_likelihood",
    "restore_checkpoint",
    "save_checkpoint",
    "scale_latents",
    "trace_log_weights",
]
