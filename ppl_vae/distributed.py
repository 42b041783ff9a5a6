r"""Data-parallel training in several processes, launched by ``torchrun``.

::

    torchrun --nproc-per-node 2 -m ppl_vae.cli train --epochs 20 --batch-size 128

Each process (rank) holds the whole model, guide and training set. Every epoch all ranks
draw the same global permutation (the one a single process would draw), cut it into global
minibatches of ``batch_size`` rows and give rank ``r`` of ``W`` the rows ``r, r + W, r +
2W, ...`` of each one (:func:`shard`: ``DistributedSampler``'s strided split, applied to
every minibatch of the single-process order, so the global batch of each step is the
single-process one). A rank whose share of the last, short minibatch is empty contributes
a zero gradient.

Gradients are combined by :class:`torch.nn.parallel.DistributedDataParallel`: the module
it wraps, :class:`ShardLoss`, has the Pyro parameters themselves as its parameters and
computes the objective's ``differentiable_loss`` on the rank's shard times ``W``; DDP
averages over ranks, so every rank steps with the gradient of the *sum* of the shard
losses, which is the single-process loss of the global minibatch (Pyro's ELBO losses are
sums over datapoints). Objectives without a ``differentiable_loss`` (``iwae``, ``renyi``:
Pyro's ``RenyiELBO``) have their gradients summed by an explicit all-reduce instead.

Random draws: in data-parallel mode each rank reseeds Pyro before each step with
:func:`step_seed` ``(seed, epoch, step, rank)``, so a run is reproducible and equals a single
process that computes the ``W`` shard losses of each step with those seeds and sums them
(``tests/test_distributed.py`` checks this). It does *not* equal an ordinary
single-process run, whose draws follow one stream per epoch.

Only rank 0 writes (config, metrics, checkpoints) and shows a progress bar; every rank
computes the same per-epoch ELBO (the step losses are all-reduced). CPU processes use the
``gloo`` backend, CUDA ones ``nccl`` with one GPU per rank (``LOCAL_RANK``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from pyro.infer.elbo import ELBO
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppl_vae.errors import ConfigError, ContractError
from ppl_vae.optim import TorchOptim
from ppl_vae.seeding import derive_seed
from ppl_vae.steps import Steps, traced_params

__all__ = [
    "DataParallelSteps",
    "Launch",
    "ShardLoss",
    "active",
    "init_from_env",
    "is_main_process",
    "launch_from_env",
    "shard",
    "shutdown",
    "step_seed",
    "world",
]


@dataclass(frozen=True)
class Launch:
    """What ``torchrun`` tells a process: the number of processes, its rank among them and
    its rank on this machine."""

    world_size: int
    rank: int
    local_rank: int


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The :class:`Launch` described by ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (set by
    ``torchrun``), or ``None`` when they are absent or describe a single process."""
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)"
        ) from None
    if world_size <= 1:
        return None
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside 0..WORLD_SIZE-1 = {world_size - 1}")
    return Launch(world_size, rank, local_rank)


def _wants_cuda(device: str | torch.device | None) -> bool:
    name = str(device if device is not None else "cpu").strip().lower()
    return name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())


def init_from_env(device: str | torch.device | None = None) -> Launch | None:
    """Join the process group ``torchrun`` describes; returns its :class:`Launch`, or
    ``None`` when there is nothing to join (a single process, or a group already
    initialized by the caller). The backend is ``nccl`` when ``device`` is CUDA
    (``"cuda"``, or ``"auto"`` with a GPU present), each rank then on GPU ``LOCAL_RANK`` (so
    ``"cuda"`` resolves to it); ``gloo`` otherwise."""
    launch = launch_from_env()
    if launch is None or not dist.is_available() or dist.is_initialized():
        return None
    cuda = _wants_cuda(device)
    if cuda:
        torch.cuda.set_device(launch.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return launch


def shutdown() -> None:
    """Leave the process group (the one :func:`init_from_env` joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the one that writes and prints."""
    return world()[0] == 0


def active(distributed: bool | None = None) -> bool:
    """Whether :func:`ppl_vae.training.fit` trains data-parallel: by default (``None``)
    when a process group of more than one process is initialized; ``False`` never;
    ``True`` requires one."""
    running = world()[1] > 1
    if distributed and not running:
        raise ConfigError(
            "distributed=True needs an initialized process group of several processes; "
            "launch with torchrun (see ppl_vae.distributed)"
        )
    return running and distributed is not False


def shard(rows: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s rows of a global minibatch: ``rows[rank::world_size]``."""
    return rows[rank::world_size]


def step_seed(seed: int, epoch: int, step: int, rank: int) -> int:
    """The seed of Pyro's draws for ``rank``'s shard at ``step`` (1-based) of ``epoch``."""
    return derive_seed(seed, epoch, step, rank)


class ShardLoss(nn.Module):
    """The module :class:`~torch.nn.parallel.DistributedDataParallel` wraps.

    Its parameters are the Pyro parameters themselves (the store's unconstrained tensors,
    registered without copying, so DDP's gradient hooks sit on the tensors the loss
    reads); ``forward(args, kwargs)`` returns ``world_size`` times the objective's
    ``differentiable_loss`` of ``programs`` on the shard (``args is None``: an empty shard,
    a zero loss that still reaches every parameter). The unscaled value is kept in
    ``local_loss``.
    """

    def __init__(self, elbo: ELBO, params: list[torch.Tensor], world_size: int) -> None:
        super().__init__()
        for i, param in enumerate(params):
            self._parameters[f"param{i}"] = param  # not a copy: no nn.Parameter wrapper
        self.elbo = elbo
        self.world_size = world_size
        self.programs: tuple[Callable | None, Callable | None] = (None, None)
        self.local_loss = 0.0

    def forward(self, args: tuple | None, kwargs: dict[str, Any] | None) -> torch.Tensor:
        if args is None:
            self.local_loss = 0.0
            return sum(p.sum() for p in self._parameters.values()) * 0.0
        model, guide = self.programs
        loss = self.elbo.differentiable_loss(model, guide, *args, **kwargs)
        self.local_loss = loss.item()
        return loss * self.world_size


def _sum(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class DataParallelSteps(Steps):
    """Data-parallel gradient steps (see module docs) for :func:`ppl_vae.training.fit`.

    ``steps(rows, make_batch, epoch, step)`` takes the rows of the *global* minibatch
    and a function building the program arguments of some rows; it returns the loss of the
    whole global minibatch (summed over ranks).

    :param seed: the run's seed, from which each step's draws are seeded.
    """

    def __init__(self, elbo: ELBO, optimizer: TorchOptim, *, seed: int) -> None:
        super().__init__(elbo, optimizer)
        self.rank, self.world_size = world()
        self.seed = seed
        self._params: list[torch.Tensor] = []
        self._ddp: DistributedDataParallel | None = None

    def _discover(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """Find the parameters with one forward pass (no gradients; its draws are
        discarded since every step reseeds), then give every rank rank 0's values."""
        with torch.no_grad(), poutine.trace(param_only=True) as capture:
            if self.differentiable:
                self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
            else:
                self.elbo.loss(self.model, self.guide, *args, **kwargs)
        params = traced_params(capture.trace)
        if self.optimizer.auto_add:
            self.optimizer.add(params)
        self.optimizer.name(params)
        self._params = [p for p in self.optimizer.params() if p.requires_grad]
        if not self._params:
            raise ContractError("the model and guide have no parameters to train")
        self._names = set(self._store.keys())
        if self.differentiable:
            module = ShardLoss(self.elbo, self._params, self.world_size)
            device = self._params[0].device
            self._ddp = DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None
            )
        else:
            with torch.no_grad():
                for param in self._params:
                    dist.broadcast(param, src=0)

    def add_new_params(self) -> None:
        store = self._store._params
        if store.keys() == self._names:
            return
        new = [n for n, p in store.items() if n not in self._names and p.grad is not None]
        if new:
            raise ContractError(
                f"the parameters {new[:3]} were created after the first step; "
                "data-parallel training needs every parameter to exist from the first step "
                "(DistributedDataParallel syncs a fixed set)"
            )
        self._names = set(store)

    def _all_reduce_grads(self) -> None:
        grads = []
        for param in self._params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grads.append(param.grad.reshape(-1))
        flat = torch.cat(grads)
        dist.all_reduce(flat)  # sum: the gradient of the summed shard losses
        offset = 0
        for param in self._params:
            n = param.numel()
            param.grad.copy_(flat[offset : offset + n].view_as(param.grad))
            offset += n

    def __call__(  # type: ignore[override]
        self,
        rows: torch.Tensor,
        make_batch: Callable[[torch.Tensor], tuple[tuple, dict[str, Any]]],
        epoch: int,
        step: int,
    ) -> float:
        if not self.traced:
            self._discover(*make_batch(rows[:1]))
        mine = shard(rows, self.rank, self.world_size)
        pyro.set_rng_seed(step_seed(self.seed, epoch, step, self.rank))
        args, kwargs = make_batch(mine) if mine.numel() else (None, None)
        if self._ddp is not None:
            module = self._ddp.module
            module.programs = (self.model, self.guide)
            self._ddp(args, kwargs).backward()
            local = module.local_loss
        else:
            local = 0.0 if args is None else self.gradients(args, kwargs)
            self._all_reduce_grads()
        self.add_new_params()
        (total,) = _sum([local], self._params[0].device)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return total
