"""Checkpoints of model, guide and optimizer state: written atomically, read safely.

A checkpoint is a ``torch.save`` file holding only tensors and plain containers, read back
with ``torch.load(..., weights_only=True)``: unpickling is restricted to those types, so a
checkpoint from a stranger cannot run code. Anything wrong with the file (missing,
truncated, not a checkpoint, from an incompatible model) raises :class:`CheckpointError`.
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

__all__ = ["FORMAT", "VERSION", "load_checkpoint", "restore_checkpoint", "save_checkpoint"]

FORMAT = "ppl_vae.checkpoint"
VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    guide: nn.Module,
    optimizer: pyro.optim.PyroOptim | None = None,
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
    optimizer: pyro.optim.PyroOptim | None = None,
) -> int:
    """Load a checkpoint's state into freshly built ``model``, ``guide`` (and
    ``optimizer``); returns the number of epochs the checkpoint had trained.

    Pyro's optimizers hold restored state until the first step that uses each parameter;
    ``optimizer.get_state()`` before that step does not include it, so continue training
    (as :func:`ppl_vae.training.fit` does) before saving again."""
    for role, module in (("model", model), ("guide", guide)):
        try:
            module.load_state_dict(payload[role])
        except (RuntimeError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"the checkpoint's {role} does not match the {role} built from the run's "
                f"config (different architecture or data shape?): {error}"
            ) from None
    if optimizer is not None and payload["optimizer"] is not None:
        optimizer.set_state(payload["optimizer"])
    return int(payload["epoch"])
