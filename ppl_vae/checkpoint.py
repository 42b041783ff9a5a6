"""Checkpoints of model, guide and optimizer state: written atomically, read safely.

A checkpoint is a ``torch.save`` file holding only tensors and plain containers, read back
with ``torch.load(..., weights_only=True)``: unpickling is restricted to those types, so a
checkpoint from a stranger cannot run code. Anything wrong with the file (missing,
truncated, not a checkpoint, from an incompatible model) raises :class:`CheckpointError`.

The optimizer entry is a dict from parameter-store name to that parameter's torch
optimizer ``state_dict``: the format of :meth:`pyro.optim.PyroOptim.get_state`, which
:class:`ppl_vae.optim.TorchOptim` (the optimizer of :func:`ppl_vae.training.fit`) reads and
writes too. Checkpoints written by either optimizer restore into either.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pyro.optim
import torch
from torch import nn

from ppl_vae.atomic import atomic_open
from ppl_vae.errors import CheckpointError
from ppl_vae.optim import TorchOptim
from ppl_vae.params import store_names

__all__ = ["FORMAT", "VERSION", "load_checkpoint", "restore_checkpoint", "save_checkpoint"]

FORMAT = "ppl_vae.checkpoint"
VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    guide: nn.Module,
    optimizer: TorchOptim | pyro.optim.PyroOptim | None = None,
    epoch: int = 0,
) -> None:
    """Write model, guide and optimizer state atomically to ``path``."""
    for role, module in (("model", model), ("guide", guide)):
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"save_checkpoint needs the {role} as a torch.nn.Module (e.g. a PyroModule); "
                f"got {type(module).__name__}"
            )
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "epoch": int(epoch),
        "model": model.state_dict(),
        "guide": guide.state_dict(),
        "optimizer": None if optimizer is None else optimizer.get_state(),
    }
    with atomic_open(path, "wb") as stream:
        torch.save(payload, stream)


def _refusal_reason(error: Exception) -> str:
    """The line of torch's weights-only refusal that names the offending object (torch's
    full text also suggests ``weights_only=False``, which is exactly what must not be done)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "WeightsUnpickler error" in line]
    return (named or lines or ["unsupported object"])[0]


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first with `ppl-vae train`")
    corrupt = (
        f"{path} is truncated or corrupt and cannot be read; retrain, or restore the file "
        "from a copy"
    )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(corrupt)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, so it was not "
            f"written by ppl_vae and is refused, since loading it could run code "
            f"({_refusal_reason(error)})"
        ) from None
    except Exception as error:  # noqa: BLE001 - any failure to parse means a damaged file
        raise CheckpointError(f"{corrupt} ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ppl_vae checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')}; this ppl_vae reads "
            f"version {VERSION}"
        )
    missing = {"model", "guide", "optimizer", "epoch"} - payload.keys()
    if missing:
        raise CheckpointError(f"{path} lacks the entries {sorted(missing)}")
    return payload


def restore_checkpoint(
    payload: dict[str, Any],
    model: nn.Module,
    guide: nn.Module,
    optimizer: TorchOptim | pyro.optim.PyroOptim | None = None,
) -> int:
    """Load a checkpoint's state into freshly built ``model``, ``guide`` (and
    ``optimizer``); returns the number of epochs the checkpoint had trained.

    Optimizers hold restored state until the first step that uses each parameter. A
    :class:`~ppl_vae.optim.TorchOptim` includes that waiting state in ``get_state()``; a
    Pyro optimizer does not, so with one continue training (as
    :func:`ppl_vae.training.fit` does) before saving again."""
    for role, module in (("model", model), ("guide", guide)):
        try:
            module.load_state_dict(payload[role])
        except (RuntimeError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"the checkpoint's {role} does not match the {role} built from the run's "
                f"config (different architecture or data shape?): {error}"
            ) from None
    if optimizer is not None and payload["optimizer"] is not None:
        optimizer.set_state(_renamed(payload["optimizer"], model, guide))
    return int(payload["epoch"])


def _state_shape(entry: Any) -> torch.Size | None:
    """The shape of the parameter an optimizer entry belongs to (its first tensor with
    dimensions, e.g. Adam's ``exp_avg``), or None."""
    try:
        states = entry["state"] if "state" in entry else entry["optimizer"]["state"]
        values = next(iter(states.values())).values()
    except (KeyError, TypeError, StopIteration, AttributeError):
        return None
    return next((v.shape for v in values if isinstance(v, torch.Tensor) and v.dim() > 0), None)


def _renamed(state: dict[str, Any], model: nn.Module, guide: nn.Module) -> dict[str, Any]:
    """Optimizer states keyed by the parameters' names in Pyro's store today.

    Checkpoints written before the encoders stopped slicing their networks (see
    :func:`models.networks.all_but_last`) key the hidden layers of an encoder by names
    relative to the slice, ``0.weight`` for ``encoder.net.0.weight``. Such an entry goes to
    the one parameter whose name ends in ``.0.weight``, has no entry of its own and has the
    entry's shape; entries that match no parameter or several are kept as they are (they
    then restore nothing, and those parameters start with fresh optimizer moments).
    """
    shapes = {name: p.shape for module in (model, guide) for name, p in store_names(module).items()}
    orphans = [name for name in state if name not in shapes]
    if not orphans:
        return state
    free = {name: shape for name, shape in shapes.items() if name not in state}
    out = {name: entry for name, entry in state.items() if name in shapes}
    for old in orphans:
        shape = _state_shape(state[old])
        matches = [
            name
            for name, param_shape in free.items()
            if name.endswith("." + old) and shape in (None, param_shape)
        ]
        if len(matches) == 1:
            out[matches[0]] = state[old]
            del free[matches[0]]
        else:
            out[old] = state[old]
    return out
