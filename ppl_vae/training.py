"""Stochastic variational inference for any model/guide pair that keeps the contract."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.elbo import ELBO
from tqdm.auto import tqdm

from ppl_vae.errors import ConfigError, TrainingDivergedError
from ppl_vae.params import claim_param_names
from ppl_vae.seeding import derive_seed
from ppl_vae.validation import module_dtype_device, validate_data

__all__ = ["EpochRecord", "FitResult", "fit", "mean_elbo"]


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training: ELBOs are means in nats per datapoint."""

    epoch: int
    train_elbo: float
    valid_elbo: float | None
    seconds: float
    steps: int


@dataclass
class FitResult:
    """What :func:`fit` returns: the per-epoch history, the objective per datapoint after
    every step (``step_elbo``, minus the loss divided by the minibatch size), timings, and
    the optimizer (whose state a checkpoint saves)."""

    history: list[EpochRecord] = field(default_factory=list)
    step_elbo: list[float] = field(default_factory=list)
    optimizer: pyro.optim.PyroOptim | None = None
    seconds: float = 0.0

    @property
    def train_elbo(self) -> list[float]:
        return [record.train_elbo for record in self.history]

    @property
    def valid_elbo(self) -> list[float | None]:
        return [record.valid_elbo for record in self.history]

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "history": [asdict(r) for r in self.history]}


@torch.no_grad()
def mean_elbo(
    model: Callable, guide: Callable, x: torch.Tensor, *, batch_size: int = 1000, seed: int = 0
) -> float:
    """Mean ELBO per datapoint of already validated ``x`` with one draw per datapoint,
    batched through Pyro's :class:`~pyro.infer.Trace_ELBO`. Draws come from a generator
    seeded by ``seed`` and the caller's random stream is left untouched, so successive
    epochs are compared on common random numbers."""
    loss = Trace_ELBO()
    total = 0.0
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for begin in range(0, x.shape[0], batch_size):
            total += loss.loss(model, guide, x[begin : begin + batch_size])
    return -total / x.shape[0]


def _check_options(epochs: int, batch_size: int, lr: float, start_epoch: int) -> None:
    if epochs < 0 or start_epoch < 0:
        raise ConfigError(f"epochs must be >= 0 (got {epochs}, start_epoch {start_epoch})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")


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
    optimizer: pyro.optim.PyroOptim | None = None,
    start_epoch: int = 0,
    progress: bool = True,
    on_epoch_end: Callable[[EpochRecord, pyro.optim.PyroOptim], None] | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` and ``guide`` by SVI on minibatches of ``train_data``.

    :param elbo: the objective; Pyro's ``Trace_ELBO()`` by default.
    :param optimizer: a Pyro optimizer; ``pyro.optim.Adam({"lr": lr})`` by default. Pass a
        restored one to continue training with its state.
    :param seed: seeds Pyro's samplers and the minibatch shuffling.
    :param start_epoch: number of epochs already done (for continued runs); training covers
        epochs ``start_epoch + 1 .. start_epoch + epochs`` and shuffles as an uninterrupted
        run would.
    :param on_epoch_end: called with each :class:`EpochRecord` and the optimizer, e.g. to
        write a checkpoint.
    :param batch_transform: applied to every minibatch before the step, e.g. dynamic
        binarization (``Dataset.train_transform``); draws use torch's generator, seeded per
        epoch. The support check then runs on transformed training data.
    :returns: a :class:`FitResult`; the training ELBO of an epoch is the mean over its
        minibatches of the objective's per-datapoint value (for ``Trace_ELBO``, the ELBO),
        the validation ELBO is always the plain ELBO (:func:`mean_elbo`).
    """
    _check_options(epochs, batch_size, lr, start_epoch)
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
    optimizer = optimizer or pyro.optim.Adam({"lr": lr})
    svi = SVI(model, guide, optimizer, loss=elbo or Trace_ELBO())

    num_data = x_train.shape[0]
    steps_per_epoch = math.ceil(num_data / batch_size)

    result = FitResult(optimizer=optimizer)
    started = time.perf_counter()
    bar = tqdm(
        total=epochs * steps_per_epoch, disable=not progress, unit="step", dynamic_ncols=True
    )
    for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
        epoch_start = time.perf_counter()
        # Each epoch's randomness depends on (seed, epoch) only, so a continued run
        # matches an uninterrupted one.
        pyro.set_rng_seed(derive_seed(seed, epoch))
        shuffle = torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
        order = torch.randperm(num_data, generator=shuffle).to(device)
        total_loss = 0.0
        for step, begin in enumerate(range(0, num_data, batch_size), start=1):
            batch = x_train[order[begin : begin + batch_size]]
            if batch_transform is not None:
                batch = batch_transform(batch)
            loss = svi.step(batch)
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"the loss became {loss} at epoch {epoch}, step {step}; lower the learning "
                    f"rate (now {lr:g}) or check the data and the model's parameter ranges"
                )
            total_loss += loss
            result.step_elbo.append(-loss / batch.shape[0])
            bar.update()
            if step % 10 == 0 or step == steps_per_epoch:
                seen = min(num_data, begin + batch_size)
                bar.set_postfix(epoch=epoch, elbo=f"{-total_loss / seen:.2f}")
        valid = None if x_valid is None else mean_elbo(model, guide, x_valid, seed=seed)
        record = EpochRecord(
            epoch=epoch,
            train_elbo=-total_loss / num_data,
            valid_elbo=valid,
            seconds=time.perf_counter() - epoch_start,
            steps=steps_per_epoch,
        )
        result.history.append(record)
        if valid is not None:
            bar.set_postfix(epoch=epoch, elbo=f"{record.train_elbo:.2f}", valid=f"{valid:.2f}")
        if on_epoch_end is not None:
            on_epoch_end(record, optimizer)
    bar.close()
    result.seconds = time.perf_counter() - started
    return result
