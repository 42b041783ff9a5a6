r"""Stochastic variational inference for any model/guide pair that keeps the contract.

:func:`fit` minimises any Pyro objective (:mod:`ppl_vae.objectives`), optionally with the
latent sites scaled by :math:`\beta` per epoch (:mod:`ppl_vae.kl_scaling`: the
:math:`\beta`-VAE objective and KL warm-up), and always *reports* the plain ELBO
(:math:`\beta = 1`) so runs with different objectives compare on one scale.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    Trace_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.elbo import ELBO
from tqdm.auto import tqdm

from ppl_vae import distributed as data_parallel
from ppl_vae.errors import ConfigError, ContractError, TrainingDivergedError
from ppl_vae.importance import rng_scope
from ppl_vae.kl_scaling import Beta, beta_at, check_betas_supported, scale_latents
from ppl_vae.optim import TorchOptim, as_torch_optim
from ppl_vae.params import claim_param_names
from ppl_vae.programs import program_args
from ppl_vae.seeding import derive_seed
from ppl_vae.steps import LegacySteps, Steps
from ppl_vae.validation import check_mask, module_dtype_device, validate_data, validate_labels

__all__ = ["EpochRecord", "FitResult", "FitOptimizer", "fit", "mean_elbo"]

#: What :func:`fit` accepts as ``optimizer``: a :class:`~ppl_vae.optim.TorchOptim` (the
#: default kind), a ``torch.optim.Optimizer`` over parameters you chose (wrapped with
#: :meth:`TorchOptim.wrap`), or a Pyro optimizer, which trains through ``SVI.step`` as
#: ``fit`` always did.
FitOptimizer = TorchOptim | torch.optim.Optimizer | pyro.optim.PyroOptim

#: Objectives whose loss is an unbiased estimate of minus the plain ELBO, so with
#: beta = 1 the running mean of the step losses is reported as the training ELBO.
_ELBO_ESTIMATORS = (Trace_ELBO, JitTrace_ELBO, TraceMeanField_ELBO, JitTraceMeanField_ELBO)


@dataclass(frozen=True)
class EpochRecord:
    r"""One epoch of training; ELBOs and objectives are means in nats per datapoint.

    ``train_elbo`` and ``valid_elbo`` are the plain ELBO (beta = 1) whatever was optimised
    (see :func:`fit` for how ``train_elbo`` is measured); ``train_objective`` is minus the
    loss SVI minimised, per datapoint and averaged over the epoch's steps (same sign as the
    ELBO: the IWAE or Rényi bound, or the beta-objective
    :math:`\mathbb{E}_q[\log p(x \mid z)] - \beta\,\mathrm{KL}`); ``beta`` is the scale
    of the latent sites during the epoch. ``train_objective`` is a running mean while the
    parameters move, so it lags an end-of-epoch ``train_elbo``: their difference is not the
    bound's gap. The last two default to ``None`` and ``1.0`` for records written before
    they existed.
    """

    epoch: int
    train_elbo: float
    valid_elbo: float | None
    seconds: float
    steps: int
    train_objective: float | None = None
    beta: float = 1.0


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch history, the objective per datapoint after
    every step (``step_objective``: minus the step's loss divided by the minibatch size),
    timings, and the optimizer (whose state a checkpoint saves)."""

    history: list[EpochRecord] = field(default_factory=list)
    step_objective: list[float] = field(default_factory=list)
    optimizer: TorchOptim | pyro.optim.PyroOptim | None = None
    seconds: float = 0.0

    @property
    def step_elbo(self) -> list[float]:
        """The older name of :attr:`step_objective` (the same list): per-step ELBO
        estimates when the objective is Trace_ELBO with beta = 1, else the objective's."""
        return self.step_objective

    @property
    def train_elbo(self) -> list[float]:
        return [record.train_elbo for record in self.history]

    @property
    def valid_elbo(self) -> list[float | None]:
        return [record.valid_elbo for record in self.history]

    @property
    def train_objective(self) -> list[float | None]:
        return [record.train_objective for record in self.history]

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "history": [asdict(r) for r in self.history]}


def _mean_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    batch_size: int,
    seed: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> float:
    loss = Trace_ELBO()
    total = 0.0
    with torch.no_grad(), rng_scope(x.device, seed):
        for begin in range(0, x.shape[0], batch_size):
            batch = x[begin : begin + batch_size]
            if transform is not None:
                batch = transform(batch)
            labels = None if y is None else y[begin : begin + batch_size]
            holes = None if mask is None else mask[begin : begin + batch_size]
            args, kwargs = program_args(batch, holes, labels)
            total += loss.loss(model, guide, *args, **kwargs)
    return -total / x.shape[0]


def mean_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    *,
    y: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    batch_size: int = 1000,
    seed: int = 0,
) -> float:
    r"""Mean ELBO per datapoint of already validated ``x`` with one draw per datapoint,
    batched through Pyro's :class:`~pyro.infer.Trace_ELBO`. Draws come from a generator
    seeded by ``seed`` and the caller's random stream is left untouched, so successive
    epochs are compared on common random numbers.

    :param y: validated labels ``(N,)`` for conditional programs, passed as the keyword
        ``y`` (see :func:`ppl_vae.validation.validate_labels`).
    :param mask: a checked per-element mask of ``x`` (:func:`ppl_vae.validation.check_mask`),
        ``True`` where observed, passed to model and guide: the ELBO is then a bound on
        :math:`\log p(x_{\text{obs}})`.
    """
    return _mean_elbo(model, guide, x, y, batch_size=batch_size, seed=seed, mask=mask)


def _check_options(epochs: int, batch_size: int, lr: float, start_epoch: int) -> None:
    if epochs < 0 or start_epoch < 0:
        raise ConfigError(f"epochs must be >= 0 (got {epochs}, start_epoch {start_epoch})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")


def _accepts_y(fn: Callable) -> bool:
    """Whether ``fn`` can take the keyword ``y`` (True when its signature is unknown)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind == p.VAR_KEYWORD
        or (p.name == "y" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        for p in parameters
    )


def _labels(
    model: Callable,
    guide: Callable,
    train_labels: Any,
    valid_labels: Any,
    num_train: int,
    x_valid: torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if train_labels is None:
        if valid_labels is not None:
            raise ConfigError("valid_labels were given without train_labels; pass both or none")
        return None, None
    if x_valid is None and valid_labels is not None:
        raise ConfigError("valid_labels were given without valid_data")
    if x_valid is not None and valid_labels is None:
        raise ConfigError(
            "train_labels were given, so the programs are conditional on y: pass "
            "valid_labels for valid_data too"
        )
    for role, fn in (("model", model), ("guide", guide)):
        if not _accepts_y(fn):
            raise ContractError(
                f"labels were given but the {role} does not take the keyword argument y; a "
                f"conditional {role} is called as {role}(x, y=labels)"
            )
    y_train = validate_labels(train_labels, num_train, model, name="training labels", device=device)
    y_valid = (
        None
        if x_valid is None
        else validate_labels(
            valid_labels, x_valid.shape[0], model, name="validation labels", device=device
        )
    )
    return y_train, y_valid


def _masks(
    train_mask: Any,
    valid_mask: Any,
    x_train: torch.Tensor,
    x_valid: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The checked per-element masks of the training and validation data (see :func:`fit`).

    :raises ConfigError: for a ``valid_mask`` without ``valid_data``.
    :raises DataError: for a mask that is not boolean, not of its data's shape, or that
        leaves a datapoint with no observed element.
    """
    if valid_mask is not None and x_valid is None:
        raise ConfigError("valid_mask was given without valid_data")
    m_train = None if train_mask is None else check_mask(train_mask, x_train, name="train_mask")
    m_valid = None if valid_mask is None else check_mask(valid_mask, x_valid, name="valid_mask")
    return m_train, m_valid


def _steps(
    loss_fn: ELBO, optimizer: FitOptimizer | None, lr: float, seed: int, distributed: bool | None
) -> Steps | LegacySteps:
    """The step runner for ``optimizer`` (see :func:`fit`)."""
    parallel = data_parallel.active(distributed)
    if isinstance(optimizer, pyro.optim.PyroOptim):
        if parallel:
            raise ConfigError(
                "data-parallel training needs the default optimizer or a "
                "ppl_vae.optim.TorchOptim, not a Pyro optimizer (one optimizer per parameter "
                "cannot be synchronised by DistributedDataParallel)"
            )
        return LegacySteps(loss_fn, optimizer)
    optimizer = as_torch_optim(
        optimizer,
        lr,
        accepted="a ppl_vae.optim.TorchOptim, a torch.optim.Optimizer or a pyro.optim optimizer",
    )
    if parallel:
        return data_parallel.DataParallelSteps(loss_fn, optimizer, seed=seed)
    return Steps(loss_fn, optimizer)


def fit(
    model: Callable,
    guide: Callable,
    train_data: Any,
    *,
    valid_data: Any = None,
    elbo: ELBO | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    optimizer: FitOptimizer | None = None,
    start_epoch: int = 0,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord, Any], None] | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    beta: Beta = 1.0,
    train_labels: Any = None,
    valid_labels: Any = None,
    distributed: bool | None = None,
    train_mask: Any = None,
    valid_mask: Any = None,
) -> FitResult:
    r"""Train ``model`` and ``guide`` by stochastic variational inference on minibatches of
    ``train_data``.

    Each step computes the objective's ``differentiable_loss`` on a minibatch, its
    gradients, and one optimizer step over every parameter the model and guide use
    (:mod:`ppl_vae.steps`): the gradients of ``SVI.step`` at less cost. The first step of a
    call runs with Pyro's validation as the caller set it (support, shape and model/guide
    checks), the others with validation off, since the data were checked up front; the
    caller's setting is restored afterwards.

    :param elbo: the objective; Pyro's ``Trace_ELBO()`` by default (see
        :func:`ppl_vae.objectives.build_objective` for the registered ones).
    :param optimizer: by default Adam with learning rate ``lr``, one torch optimizer over
        all parameters (:func:`ppl_vae.optim.adam`). Pass the optimizer of an earlier
        call or of a restored checkpoint to continue with its state: a
        :class:`~ppl_vae.optim.TorchOptim`; a ``torch.optim.Optimizer`` (only its
        parameters are trained); or a Pyro optimizer such as ``pyro.optim.Adam({"lr":
        lr})``, which trains through ``pyro.infer.SVI.step`` exactly as ``fit`` did before
        (one torch optimizer per parameter, validation left as set).
    :param seed: seeds Pyro's samplers and the minibatch shuffling.
    :param start_epoch: number of epochs already done (for continued runs); training covers
        epochs ``start_epoch + 1 .. start_epoch + epochs`` and shuffles as an uninterrupted
        run would.
    :param on_epoch_end: called with each :class:`EpochRecord` and the optimizer, e.g. to
        write a checkpoint (``optimizer.get_state()``).
    :param batch_transform: applied to every minibatch before the step, e.g. dynamic
        binarization (``Dataset.train_transform``); draws use torch's generator, seeded per
        epoch. The support check then runs on transformed training data.
    :param beta: the scale of every latent site of model and guide during an epoch, a
        constant or a schedule ``epoch -> beta`` over absolute 1-based epochs (e.g.
        :func:`ppl_vae.kl_scaling.kl_warmup`), applied with
        :class:`~ppl_vae.kl_scaling.ScaleLatents`; with Trace_ELBO the objective becomes
        :math:`\mathbb{E}_q[\log p(x \mid z)] - \beta\,\mathrm{KL}`. Rényi/IWAE
        objectives accept only beta = 1.
    :param train_labels: class labels ``(N,)`` for conditional programs, shuffled with the
        data and passed to model and guide as the keyword ``y``; then ``valid_labels`` are
        required with ``valid_data``.
    :param distributed: data-parallel training across the processes of an initialized
        ``torch.distributed`` process group (e.g. launched by ``torchrun``):
        ``batch_size`` is then the global minibatch, split among the ranks, with gradients
        summed by ``DistributedDataParallel`` (see :mod:`ppl_vae.distributed` for the
        sharding, the per-step seeds and what the result equals). ``None`` (default):
        whenever such a group of more than one process exists; ``False``: never.
        ``on_epoch_end`` runs on every rank; only rank 0 shows progress.
    :param train_mask: a boolean mask of ``train_data``'s shape, ``True`` where a value is
        observed, for training on partially observed data: the rows of each minibatch are
        passed to model and guide as ``model(x, mask)``, ``guide(x, mask)`` (sharded with
        the data in data-parallel training), so the objective is a bound on
        :math:`\log p(x_{\text{obs}})` and the values in the holes are never used (they
        must still be valid data: put any value of the support there). Every datapoint
        needs at least one observed element (:func:`ppl_vae.validation.check_mask`).
    :param valid_mask: the same for ``valid_data``: the validation ELBO is then that of
        :math:`\log p(x_{\text{obs}})`. Each mask applies to its own split only.
    :returns: a :class:`FitResult`. ``train_objective`` of an epoch is the mean over its
        steps of minus the loss per datapoint. ``train_elbo`` is the plain ELBO: the same
        running mean when the objective is an ELBO estimator (Trace_ELBO or
        TraceMeanField_ELBO) and beta = 1, as it always was; otherwise the ELBO of the
        training data after the epoch by :func:`mean_elbo` (one draw per datapoint, the
        same seed every epoch: common random numbers; ``batch_transform`` applied with
        fixed draws too), which costs one extra forward pass over the training data. The
        validation ELBO is always :func:`mean_elbo`.
    """
    _check_options(epochs, batch_size, lr, start_epoch)
    epoch_range = range(start_epoch + 1, start_epoch + epochs + 1)
    betas = {epoch: beta_at(beta, epoch) for epoch in epoch_range}
    loss_fn = elbo or Trace_ELBO()
    check_betas_supported(loss_fn, betas.values())
    steps = _steps(loss_fn, optimizer, lr, seed, distributed)
    parallel = isinstance(steps, data_parallel.DataParallelSteps)
    claim_param_names(model, guide)
    dtype, device = module_dtype_device(model, guide)
    x_train = validate_data(
        train_data,
        model if batch_transform is None else None,
        name="training data",
        dtype=dtype,
        device=device,
    )
    if batch_transform is not None:
        validate_data(batch_transform(x_train), model, name="transformed training data")
    x_valid = (
        None
        if valid_data is None
        else validate_data(valid_data, model, name="validation data", dtype=dtype, device=device)
    )
    y_train, y_valid = _labels(
        model, guide, train_labels, valid_labels, x_train.shape[0], x_valid, device
    )
    m_train, m_valid = _masks(train_mask, valid_mask, x_train, x_valid)
    is_elbo = isinstance(loss_fn, _ELBO_ESTIMATORS)

    num_data = x_train.shape[0]
    steps_per_epoch = math.ceil(num_data / batch_size)

    def make_batch(rows: torch.Tensor) -> tuple[tuple, dict[str, Any]]:
        batch = x_train[rows]
        if batch_transform is not None:
            batch = batch_transform(batch)
        return program_args(
            batch,
            None if m_train is None else m_train[rows],
            None if y_train is None else y_train[rows],
        )

    result = FitResult(optimizer=steps.optimizer)
    started = time.perf_counter()
    show = progress and data_parallel.is_main_process()
    bar = tqdm(total=epochs * steps_per_epoch, disable=not show, unit="step", dynamic_ncols=True)
    for epoch in epoch_range:
        epoch_start = time.perf_counter()
        epoch_beta = betas[epoch]
        steps.set_programs(scale_latents(model, epoch_beta), scale_latents(guide, epoch_beta))
        # Each epoch's randomness depends on (seed, epoch) only, so a continued run
        # matches an uninterrupted one.
        pyro.set_rng_seed(derive_seed(seed, epoch))
        shuffle = torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
        order = torch.randperm(num_data, generator=shuffle).to(device)
        total_loss = 0.0
        with contextlib.ExitStack() as unchecked:
            checking = True
            for step, begin in enumerate(range(0, num_data, batch_size), start=1):
                if checking and steps.traced:
                    # checked once on the first step; the data were validated up front
                    unchecked.enter_context(pyro.validation_enabled(False))
                    checking = False
                rows = order[begin : begin + batch_size]
                if parallel:
                    loss = steps(rows, make_batch, epoch, step)
                else:
                    loss = steps(*make_batch(rows))
                if not math.isfinite(loss):
                    raise TrainingDivergedError(
                        f"the loss became {loss} at epoch {epoch}, step {step}; lower the "
                        f"learning rate (now {lr:g}) or check the data and the model's "
                        "parameter ranges"
                    )
                total_loss += loss
                result.step_objective.append(-loss / rows.shape[0])
                bar.update()
                if step % 10 == 0 or step == steps_per_epoch:
                    seen = min(num_data, begin + batch_size)
                    bar.set_postfix(epoch=epoch, objective=f"{-total_loss / seen:.2f}")
        objective = -total_loss / num_data
        if is_elbo and epoch_beta == 1.0:
            train_elbo = objective
        else:
            train_elbo = _mean_elbo(
                model,
                guide,
                x_train,
                y_train,
                batch_size=1000,
                seed=seed,
                transform=batch_transform,
                mask=m_train,
            )
        valid = (
            None
            if x_valid is None
            else mean_elbo(model, guide, x_valid, y=y_valid, mask=m_valid, seed=seed)
        )
        record = EpochRecord(
            epoch=epoch,
            train_elbo=train_elbo,
            valid_elbo=valid,
            seconds=time.perf_counter() - epoch_start,
            steps=steps_per_epoch,
            train_objective=objective,
            beta=epoch_beta,
        )
        result.history.append(record)
        bar.set_postfix(
            epoch=epoch,
            elbo=f"{train_elbo:.2f}",
            **({} if valid is None else {"valid": f"{valid:.2f}"}),
        )
        if on_epoch_end is not None:
            on_epoch_end(record, steps.optimizer)
    bar.close()
    result.seconds = time.perf_counter() - started
    return result
