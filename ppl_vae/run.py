"""A training run on disk: ``config.json``, ``checkpoint.pt`` and ``metrics.json``.

:func:`train_run` is what ``ppl-vae train`` does; :func:`evaluate_run` is ``ppl-vae
evaluate``. The config records everything needed to rebuild model and guide, so a run
directory is self-contained.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import pyro
import pyro.optim
import torch
from torch.distributions import constraints

from models import LIKELIHOODS
from ppl_vae.atomic import write_json
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from ppl_vae.data import Dataset, grey_levels_dataset, load_dataset, load_user_data
from ppl_vae.device import move_to_device, resolve_device
from ppl_vae.distributed import is_main_process
from ppl_vae.errors import CheckpointError, ConfigError
from ppl_vae.estimators import log_likelihood
from ppl_vae.importance import DEFAULT_CHUNK_SIZE, rng_scope
from ppl_vae.imputation import PATTERNS, check_pattern, hide
from ppl_vae.kl_scaling import Beta, beta_at, check_betas_supported, kl_warmup
from ppl_vae.objectives import build_objective
from ppl_vae.optim import TorchOptim, adam
from ppl_vae.registry import lookup
from ppl_vae.seeding import derive_seed
from ppl_vae.semi_supervised_run import (
    check_semi_supervised,
    evaluate_semi_supervised,
    semi_supervised_metrics,
    semi_supervised_trainer,
)
from ppl_vae.training import fit
from ppl_vae.validation import validate_data, validate_labels

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "RunConfig",
    "SplitData",
    "check_missing",
    "evenly_spaced_rows",
    "evaluate_run",
    "load_run",
    "missing_mask",
    "model_spec_for",
    "resume_run",
    "run_split",
    "train_run",
]

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
RUN_FORMAT = "ppl_vae.run"


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run; ``model`` is filled in from the data by :func:`model_spec_for`."""

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    data: str | None = None  # your own data file or image folder; replaces `dataset`
    channels: str = "grey"  # for image folders: "grey" or "rgb"
    label_column: str | int | None = None  # for .csv tables
    binarize: str | None = None  # None, "static" or "dynamic"
    likelihood: str | None = None  # None: the dataset's default likelihood
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    prior: str = "normal"
    prior_options: dict[str, Any] = field(default_factory=dict)
    architecture: str = "vae"  # "vae", "hierarchical", "conditional" or "m2"
    latent_dim: int = 16
    top_latent_dim: int | None = None  # z2 of the hierarchical VAE (default: latent_dim)
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    encoder: str = "mlp"
    decoder: str = "mlp"
    guide: str = "normal"
    guide_options: dict[str, Any] = field(default_factory=dict)
    objective: str = "trace_elbo"
    objective_options: dict[str, Any] = field(default_factory=dict)
    beta: float = 1.0  # scale of the latent sites' log densities (beta-VAE); 1 is the ELBO
    warmup_epochs: int = 0  # KL warm-up: beta rises linearly from warmup_start over these
    warmup_start: float = 0.0
    epochs: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    num_samples: int = 1000
    chunk_size: int = DEFAULT_CHUNK_SIZE
    missing_pattern: str | None = None  # train and test with holes (see missing_mask)
    missing_fraction: float | None = None  # hidden per datapoint; 0.5 with a pattern
    num_labelled: int | None = None  # M2: training datapoints that keep their labels
    alpha: float | None = None  # M2: weight of log q(y|x); None: 0.1 N / num_labelled
    model: ModelSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["model"] = None if self.model is None else self.model.to_dict()
        return {"format": RUN_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a run config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        if data.pop("format", None) != RUN_FORMAT:
            raise ConfigError("not a ppl_vae run config (missing 'format': 'ppl_vae.run')")
        return cls.from_settings(data)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RunConfig:
        """Build from a mapping of field names (a TOML config file or ``config.json``);
        unknown names are an error that lists the known ones."""
        data = dict(settings)
        known = sorted(f.name for f in fields(cls))
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"unknown run settings {unknown}; known settings: {known}")
        for key, value in data.items():
            if key in _SETTING_CHECKS and (key not in _OPTIONAL or value is not None):
                accepts, what = _SETTING_CHECKS[key]
                if not accepts(value):
                    raise ConfigError(f"setting {key} must be {what}, got {value!r}")
        if data.get("model") is not None:
            data["model"] = ModelSpec.from_dict(data["model"])
        if "hidden" in data:
            data["hidden"] = tuple(data["hidden"])
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _at_least(minimum: int):
    return lambda value: _is_int(value) and value >= minimum


#: Checks of settings read from config files (flags are checked by argparse), so a bad
#: value fails before training, never with a traceback or after hours of work.
_SETTING_CHECKS: dict[str, tuple[Any, str]] = {
    "dataset": (lambda v: isinstance(v, str), "a dataset name"),
    "data_dir": (lambda v: isinstance(v, str), "a path"),
    "download": (lambda v: isinstance(v, bool), "true or false"),
    "data": (lambda v: isinstance(v, str), "a path"),
    "channels": (lambda v: isinstance(v, str), '"grey" or "rgb"'),
    "label_column": (lambda v: isinstance(v, str) or _is_int(v), "a column name or index"),
    "binarize": (lambda v: isinstance(v, str), '"static" or "dynamic"'),
    "likelihood": (lambda v: isinstance(v, str), "a likelihood name"),
    "likelihood_options": (lambda v: isinstance(v, dict), "a table of option = value"),
    "prior": (lambda v: isinstance(v, str), "a prior name"),
    "prior_options": (lambda v: isinstance(v, dict), "a table of option = value"),
    "architecture": (lambda v: isinstance(v, str), "an architecture name"),
    "latent_dim": (_at_least(1), "a positive integer"),
    "top_latent_dim": (_at_least(1), "a positive integer"),
    "hidden": (
        lambda v: isinstance(v, list | tuple) and len(v) > 0 and all(_at_least(1)(h) for h in v),
        "a non-empty list of positive integers, e.g. [256, 256]",
    ),
    "activation": (lambda v: isinstance(v, str), "an activation name"),
    "encoder": (lambda v: isinstance(v, str), "an encoder name"),
    "decoder": (lambda v: isinstance(v, str), "a decoder name"),
    "guide": (lambda v: isinstance(v, str), "a guide name"),
    "guide_options": (lambda v: isinstance(v, dict), "a table of option = value"),
    "objective": (lambda v: isinstance(v, str), "an objective name"),
    "objective_options": (lambda v: isinstance(v, dict), "a table of option = value"),
    "beta": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "warmup_epochs": (_at_least(0), "an integer >= 0"),
    "warmup_start": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "epochs": (_at_least(0), "an integer >= 0"),
    "batch_size": (_at_least(1), "a positive integer"),
    "lr": (lambda v: _is_number(v) and v > 0, "> 0"),
    "seed": (_is_int, "an integer"),
    "num_samples": (_at_least(1), "a positive integer"),
    "chunk_size": (_at_least(1), "a positive integer"),
    "missing_pattern": (lambda v: v in PATTERNS, f"one of {', '.join(PATTERNS)}"),
    "missing_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "num_labelled": (_at_least(1), "a positive integer"),
    "alpha": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "model": (lambda v: isinstance(v, dict), "the model table of a run's config.json"),
}
_OPTIONAL = {
    "data_dir",
    "data",
    "label_column",
    "binarize",
    "likelihood",
    "model",
    "top_latent_dim",
    "missing_pattern",
    "missing_fraction",
    "num_labelled",
    "alpha",
}


def model_spec_for(config: RunConfig, dataset: Dataset) -> ModelSpec:
    """The run's model settings completed from the data (see :meth:`ModelSpec.for_dataset`)."""
    return ModelSpec.for_dataset(
        dataset,
        likelihood=config.likelihood,
        likelihood_options=config.likelihood_options,
        prior=config.prior,
        prior_options=config.prior_options,
        architecture=config.architecture,
        latent_dim=config.latent_dim,
        top_latent_dim=config.top_latent_dim,
        hidden=tuple(config.hidden),
        activation=config.activation,
        encoder=config.encoder,
        decoder=config.decoder,
        guide=config.guide,
        guide_options=config.guide_options,
    )


def kl_scale_for(config: RunConfig) -> float | Callable[[int], float]:
    """The scale of the latent sites per epoch: ``beta``, reached by a linear warm-up from
    ``warmup_start`` over ``warmup_epochs`` epochs when those are given."""
    if config.warmup_epochs == 0:
        return config.beta
    return kl_warmup(config.warmup_epochs, start=config.warmup_start, final=config.beta)


#: Architectures trained by another loop than :func:`ppl_vae.training.fit`, which takes no
#: masks (the semi-supervised M2 model).
_NO_MISSING = {"m2": "semi-supervised training (M2) does not take masks"}

#: ``derive_seed(seed, _MISSING_STREAM, split)`` seeds a split's mask.
_MISSING_STREAM = 7
_SPLITS = ("train", "valid", "test")


def check_missing(config: RunConfig) -> RunConfig:
    """The config with ``missing_fraction`` filled in (0.5) when a ``missing_pattern`` is
    set, after checking the missing-data settings make sense together.

    :raises ConfigError: for an unknown pattern, a fraction outside (0, 1), a fraction
        without a pattern, or an architecture whose training takes no masks.
    """
    pattern, fraction = config.missing_pattern, config.missing_fraction
    if pattern is None:
        if fraction is not None:
            raise ConfigError(
                f"missing_fraction {fraction} needs missing_pattern (--missing-pattern "
                f"{'|'.join(PATTERNS)}): it is the fraction of each datapoint hidden in "
                "that pattern"
            )
        return config
    fraction = 0.5 if fraction is None else fraction
    if isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ConfigError(
            "missing_fraction (--missing-fraction), the fraction of each datapoint hidden, "
            f"must be in (0, 1) (at least one element stays observed), got {fraction!r}"
        )
    check_pattern(pattern, fraction)
    if config.architecture in _NO_MISSING:
        raise ConfigError(
            f"missing_pattern cannot go with architecture {config.architecture}: "
            f"{_NO_MISSING[config.architecture]}"
        )
    return replace(config, missing_fraction=fraction)


def missing_mask(config: RunConfig, data: torch.Tensor, split: str) -> torch.Tensor | None:
    """The run's mask of ``split`` (``True`` where observed), or ``None`` without a
    ``missing_pattern``: :func:`ppl_vae.imputation.hide` of the data's shape in the run's
    pattern and fraction, seeded by the run's seed and the split alone, so a resumed run
    and a re-evaluation hide the same elements."""
    if config.missing_pattern is None:
        return None
    return hide(
        data.shape,
        config.missing_pattern,
        fraction=config.missing_fraction,
        image_shape=config.model.image_shape,
        seed=derive_seed(config.seed, _MISSING_STREAM, _SPLITS.index(split)),
    )


def _split_mask(config: RunConfig, dataset: Dataset, split: str) -> torch.Tensor | None:
    """:func:`missing_mask` of the dataset's ``split`` (``None`` for a split it lacks)."""
    data = dataset.split(split)
    return None if data is None else missing_mask(config, data, split)


def _missing_summary(masks: dict[str, torch.Tensor | None], config: RunConfig) -> dict[str, Any]:
    """What ``metrics.json`` records of the missing-data setting."""
    observed = {split: float(m.float().mean()) for split, m in masks.items() if m is not None}
    return {
        "pattern": config.missing_pattern,
        "fraction": config.missing_fraction,
        "observed_fraction": observed,
    }


def _labels(config: RunConfig, dataset: Dataset, split: str) -> torch.Tensor | None:
    """The split's labels for conditional models (which read them as ``y``), else None."""
    if config.model is None or config.model.architecture != "conditional":
        return None
    return getattr(dataset, f"{split}_labels")


def _classes(config: RunConfig, dataset: Dataset, split: str) -> torch.Tensor | None:
    """The split's labels for M2 runs, which score q(y | x) against them and never read
    them (their log p(x) marginalizes y by importance sampling), else None."""
    if config.model is None or config.model.architecture != "m2":
        return None
    return getattr(dataset, f"{split}_labels")


def _trainer(config: RunConfig, dataset: Dataset) -> Callable[..., Any]:
    """What trains the run's pair: :func:`ppl_vae.training.fit`, or for M2 runs a trainer
    with its keyword interface (:func:`~ppl_vae.semi_supervised_run.semi_supervised_trainer`)."""
    if config.model.architecture == "m2":
        return semi_supervised_trainer(config, dataset)
    return fit


def _needs_grey_levels(likelihood: str, dataset: Dataset) -> bool:
    """Counts such as 8-bit pixels given to a likelihood of the unit interval
    (``continuous_bernoulli``, ``beta``) are rescaled to ``x / max_value`` (data-aware
    default; a run's dataset name then ends in ``[0,1]``)."""
    support = getattr(lookup(LIKELIHOODS, likelihood, "likelihood"), "support", None)
    return support is constraints.unit_interval and dataset.max_value not in (None, 1.0)


def _load_data(config: RunConfig) -> Dataset:
    if config.data is not None:
        return load_user_data(
            config.data,
            channels=config.channels,
            label_column=config.label_column,
            binarize=config.binarize,
        )
    return load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        download=config.download,
        binarize=config.binarize,
    )


def _evaluate(
    model,
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None,
    num_samples: int,
    seed: int,
    chunk_size: int,
    mask: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The summary of :func:`log_likelihood`; with a ``mask``, of log p(x_obs). With the
    ``classes`` of an M2 run: the accuracy of q(y | x) and log p(x), y drawn from q(y | x)
    with z (:func:`~ppl_vae.semi_supervised_run.evaluate_semi_supervised`)."""
    if classes is not None:
        return evaluate_semi_supervised(
            model, guide, x, classes, num_samples=num_samples, seed=seed, chunk_size=chunk_size
        )
    estimate = log_likelihood(
        model, guide, x, y=y, mask=mask, num_samples=num_samples, seed=seed, chunk_size=chunk_size
    )
    summary = estimate.summary()
    if mask is not None:
        summary["estimand"] = "log p(x_obs)"
        summary["observed_fraction"] = float(mask.float().mean())
    return summary


def _resolve_paths(config: RunConfig) -> RunConfig:
    """Absolute data paths: a run directory must work from any working directory."""
    return replace(
        config,
        data=None if config.data is None else str(Path(config.data).resolve()),
        data_dir=None if config.data_dir is None else str(Path(config.data_dir).resolve()),
    )


def _run_dataset(config: RunConfig) -> Dataset:
    """The data of a run whose model is known, rescaled as in training."""
    loaded = _load_data(config)
    if _needs_grey_levels(config.model.likelihood, loaded):
        loaded = grey_levels_dataset(loaded)
    return loaded


def _build_checked(
    config: RunConfig,
    dataset: Dataset,
    objective: Any,
    kl_scale: Beta,
    epochs: range,
    device: torch.device,
) -> tuple[Any, Any]:
    """Check the objective's betas over ``epochs`` and every split against a freshly built
    (seeded) model and guide, before anything is written; returns ``(model, guide)`` on
    ``device`` (built on the CPU, so the seed gives the same weights on every device)."""
    check_betas_supported(objective, [beta_at(kl_scale, epoch) for epoch in epochs])
    pyro.clear_param_store()
    torch.manual_seed(config.seed)
    model, guide = build_vae(config.model)
    for split in ("train", "valid", "test"):
        data = dataset.split(split)
        if split == "train" and dataset.train_transform is not None:
            data = dataset.train_transform(data)
        validate_data(data, model, name=f"{dataset.name} {split} data")
        labels = _labels(config, dataset, split)
        if labels is not None:
            validate_labels(labels, data.shape[0], model, name=f"{dataset.name} {split} labels")
    move_to_device(device, model, guide)
    return model, guide


def _train_and_test(
    config: RunConfig,
    dataset: Dataset,
    out: Path,
    model: Any,
    guide: Any,
    objective: Any,
    kl_scale: Beta,
    *,
    start_epoch: int = 0,
    optimizer: TorchOptim | None = None,
    metrics: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train epochs ``start_epoch + 1 .. config.epochs``, after each one writing the history
    so far to ``metrics.json`` and then the checkpoint (both atomically), evaluate on the
    test split and write the final metrics.

    :param metrics: the run's earlier metrics when continuing it: their ``history`` (up to
        ``start_epoch``) and ``seconds`` are carried on, other entries kept; the test
        summary is replaced.

    In data-parallel training (torchrun) only rank 0 writes and evaluates; the other ranks
    return the training metrics alone.
    """
    writer = is_main_process()
    metrics = dict(metrics or {})
    metrics.pop("test", None)
    earlier = dict(metrics.get("training") or {})
    history = [r for r in earlier.get("history", []) if r.get("epoch", 0) <= start_epoch]
    seconds = float(earlier.get("seconds", 0.0))
    metrics["dataset"] = dataset.name
    masks = {split: _split_mask(config, dataset, split) for split in _SPLITS}
    if config.missing_pattern is not None:
        metrics["missing_data"] = _missing_summary(masks, config)
    started = time.perf_counter()
    done: list[dict[str, Any]] = []

    def training(elapsed: float) -> dict[str, Any]:
        return {"seconds": seconds + elapsed, "history": history + done}

    def checkpoint(record, optimizer) -> None:
        done.append(asdict(record))  # metrics first: a checkpoint never lacks its record
        if not writer:
            return
        write_json(out / METRICS, {**metrics, "training": training(time.perf_counter() - started)})
        save_checkpoint(
            out / CHECKPOINT, model=model, guide=guide, optimizer=optimizer, epoch=record.epoch
        )

    result = _trainer(config, dataset)(
        model,
        guide,
        dataset.train,
        valid_data=dataset.valid,
        train_labels=_labels(config, dataset, "train"),
        valid_labels=_labels(config, dataset, "valid"),
        elbo=objective,
        beta=kl_scale,
        epochs=config.epochs - start_epoch,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        optimizer=optimizer,
        start_epoch=start_epoch,
        progress=progress,
        on_epoch_end=checkpoint,
        batch_transform=dataset.train_transform,
        train_mask=masks["train"],
        valid_mask=masks["valid"],
    )
    if config.epochs == 0 and writer:  # still leave a loadable (untrained) run behind
        save_checkpoint(out / CHECKPOINT, model=model, guide=guide, epoch=0)
    metrics["training"] = training(result.seconds)
    if not writer:
        return metrics
    metrics["test"] = _evaluate(
        model,
        guide,
        dataset.test,
        _labels(config, dataset, "test"),
        config.num_samples,
        config.seed,
        config.chunk_size,
        masks["test"],
        classes=_classes(config, dataset, "test"),
    )
    write_json(out / METRICS, metrics)
    return metrics


def train_run(
    config: RunConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Train, checkpoint after every epoch, evaluate on the test split; returns the metrics
    also written to ``out_dir/metrics.json`` (whose ``training`` history is also written
    after every epoch, so an interrupted run keeps it; see :func:`resume_run`).

    :param device: where to train and evaluate: ``"cpu"`` (default), ``"cuda"``,
        ``"cuda:N"`` or ``"auto"`` (see :func:`ppl_vae.device.resolve_device`).
        Not stored in the run: checkpoints load on any device.
    """
    out = Path(out_dir)
    if config.epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {config.epochs}")
    device = resolve_device(device)
    config = check_missing(_resolve_paths(config))
    dataset = _load_data(config)
    config = replace(config, model=model_spec_for(config, dataset))
    if _needs_grey_levels(config.model.likelihood, dataset):
        dataset = grey_levels_dataset(dataset)
        config = replace(config, model=model_spec_for(config, dataset))
    check_semi_supervised(config, dataset)
    objective = build_objective(config.objective, **config.objective_options)
    kl_scale = kl_scale_for(config)
    model, guide = _build_checked(
        config, dataset, objective, kl_scale, range(1, config.epochs + 1), device
    )
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / CONFIG, config.to_dict())
    return _train_and_test(
        config,
        dataset,
        out,
        model,
        guide,
        objective,
        kl_scale,
        progress=progress,
        metrics=semi_supervised_metrics(config, dataset),
    )


def resume_run(
    run_dir: str | os.PathLike[str],
    *,
    epochs: int | None = None,
    progress: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Continue a run from its last checkpointed epoch, with the optimizer state, to the
    parameters an uninterrupted run reaches; returns the metrics as :func:`train_run`.

    Everything is rebuilt from the run's ``config.json``. Epochs ``last + 1 .. epochs``
    are trained (``epochs``: the config's total, or a new total, which is then written
    to ``config.json``), checkpointed as in training; the earlier history and training
    seconds in ``metrics.json`` are kept and the test evaluation is run again.

    :param data_dir: where the dataset files are now (default: the run's ``data_dir``);
        not written to the config. ``download`` as in :func:`train_run`.
    :param device: as in :func:`train_run`; any device, whichever the run was trained on
        (the optimizer state follows the parameters).
    :raises CheckpointError: for a missing or damaged run directory or checkpoint.
    :raises ConfigError: when there is nothing left to train, or ``epochs`` is below the
        epochs already trained.
    """
    if epochs is not None and epochs < 0:
        raise ConfigError(f"epochs must be >= 0, got {epochs}")
    device = resolve_device(device)
    run = Path(run_dir)
    metrics = _read_metrics(run / METRICS)
    stored, _, _, payload = load_run(run)  # checks config and checkpoint before any work
    start = int(payload["epoch"])
    total = stored.epochs if epochs is None else epochs
    if total < start:
        raise ConfigError(
            f"{run} has already trained {start} epochs; pass --epochs N with N > {start} "
            "to train further"
        )
    if total == start and "test" in metrics:
        raise ConfigError(
            f"{run} has finished: it has trained all {start} of its {total} epochs, so there "
            f"is nothing to resume; pass --epochs N with N > {start} to train further"
        )
    stored = replace(stored, epochs=total)
    config = stored  # what training reads: the stored settings, data found where told
    if data_dir is not None:
        config = replace(config, data_dir=str(Path(data_dir).resolve()))
    if download:
        config = replace(config, download=True)
    dataset = _run_dataset(config)
    objective = build_objective(config.objective, **config.objective_options)
    kl_scale = kl_scale_for(config)
    model, guide = _build_checked(
        config, dataset, objective, kl_scale, range(start + 1, total + 1), device
    )
    optimizer = adam(config.lr)  # fit's default; restores pyro.optim.Adam states too
    restore_checkpoint(payload, model, guide, optimizer)
    if is_main_process():
        write_json(run / CONFIG, stored.to_dict())
    return _train_and_test(
        config,
        dataset,
        run,
        model,
        guide,
        objective,
        kl_scale,
        start_epoch=start,
        optimizer=optimizer,
        metrics=metrics,
        progress=progress,
    )


def load_run(
    run_dir: str | os.PathLike[str], *, device: str | torch.device | None = None
) -> tuple[RunConfig, Any, Any, dict[str, Any]]:
    """Rebuild ``(config, model, guide, checkpoint)`` from a run directory, with model and
    guide on ``device`` (see :func:`train_run`); the checkpoint is read onto the CPU,
    whatever device it was written on, and copied into the moved modules."""
    device = resolve_device(device)
    run = Path(run_dir)
    config_path = run / CONFIG
    if not config_path.is_file():
        raise CheckpointError(
            f"{run} is not a run directory (no {CONFIG}); pass the --out directory of a "
            "`ppl-vae train` run"
        )
    try:
        config = RunConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as error:  # JSONDecodeError and ConfigError included
        raise CheckpointError(f"{config_path} is corrupt: {error}") from None
    if config.model is None:
        raise CheckpointError(f"{config_path} lacks the model settings")
    payload = load_checkpoint(run / CHECKPOINT)
    pyro.clear_param_store()
    model, guide = build_vae(config.model)
    move_to_device(device, model, guide)
    restore_checkpoint(payload, model, guide)
    return config, model, guide, payload


def _read_metrics(path: Path) -> dict[str, Any]:
    """The run's metrics so far; a damaged file is reported rather than overwritten."""
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        metrics = error
    if not isinstance(metrics, dict):
        raise CheckpointError(
            f"{path} is damaged ({metrics}); move it aside so evaluate can record its results"
        )
    return metrics


def evenly_spaced_rows(count: int, total: int) -> torch.Tensor:
    """Rows ``floor(i * total / count)`` for ``i < count`` (all ``total`` rows when ``count >=
    total``): a subset that keeps every part of data sorted by class represented."""
    count = min(count, total)
    return torch.arange(count) * total // count


class SplitData(NamedTuple):
    """A split of a run's data: ``name`` of the dataset, ``data``, ``labels`` (for
    conditional models, else None) and the split's ``rows`` that were kept."""

    name: str
    data: torch.Tensor
    labels: torch.Tensor | None
    rows: torch.Tensor


def run_split(
    config: RunConfig,
    split: str = "test",
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    seed: int = 0,
    num_data: int | None = None,
    classes: bool = False,
) -> SplitData:
    """The split as the run's model sees it (a :class:`SplitData`): the run's own
    dataset unless another is named, rescaled as in training, the training split
    transformed (e.g. dynamically binarized, with draws seeded by ``seed``), and labels where
    the model is conditional (else None). The tensors are on the CPU (so the transform's
    draws are the same whatever device the model is on); the estimators and diagnostics
    move them to the model's device.

    :param num_data: keep only this many datapoints, evenly spaced through the split (rows
        ``floor(i * N / num_data)``); the spacing keeps every part of a split sorted by
        class represented.
    :param classes: for an M2 run, ``labels`` are the split's labels, which its classifier
        is scored against (the model never reads them); else None.
    """
    if num_data is not None and num_data < 1:
        raise ConfigError(f"num_data must be positive, got {num_data}")
    data_config = replace(
        config,
        dataset=dataset or config.dataset,
        data=None if dataset else config.data,
        data_dir=data_dir if data_dir is not None else config.data_dir,
        download=download,
    )
    loaded = _run_dataset(data_config)  # rescaled as in training
    data = loaded.split(split)
    if split == "train" and loaded.train_transform is not None:  # e.g. dynamic binarization
        with rng_scope(data.device, seed):
            data = loaded.train_transform(data)
    labels = _classes(config, loaded, split) if classes else _labels(config, loaded, split)
    if labels is None and config.model.architecture == "conditional":
        raise ConfigError(f"the conditional model needs labels; {loaded.name} has none")
    rows = evenly_spaced_rows(data.shape[0] if num_data is None else num_data, data.shape[0])
    if rows.numel() < data.shape[0]:
        data = data[rows]
        labels = None if labels is None else labels[rows]
    return SplitData(loaded.name, data, labels, rows)


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    num_samples: int | None = None,
    seed: int | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    split: str = "test",
    num_data: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Re-evaluate a saved run on a split (of its own dataset unless another is named);
    the result is added to the run's ``metrics.json`` under ``evaluations``, with the
    ``device`` it ran on.

    :param num_data: evaluate only this many datapoints, evenly spaced through the split
        (see :func:`run_split`), e.g. to afford K = 5000 on a slow machine.
    :param device: where to evaluate (see :func:`train_run`), whichever device the run was
        trained on.
    """
    device = resolve_device(device)
    metrics_path = Path(run_dir) / METRICS
    metrics = _read_metrics(metrics_path)
    config, model, guide, payload = load_run(run_dir, device=device)
    k = num_samples or config.num_samples
    s = config.seed if seed is None else seed
    m2 = config.model.architecture == "m2"  # scores q(y | x) against the labels
    name, data, labels, _ = run_split(
        config,
        split,
        dataset=dataset,
        data_dir=data_dir,
        download=download,
        seed=s,
        num_data=num_data,
        classes=m2,
    )
    y, classes = (None, labels) if m2 else (labels, None)
    summary = _evaluate(model, guide, data, y, k, s, config.chunk_size, classes=classes)
    summary.update(
        dataset=name, split=split, epoch=int(payload["epoch"]), seed=s, device=str(device)
    )
    metrics.setdefault("evaluations", []).append(summary)
    write_json(metrics_path, metrics)
    return summary
