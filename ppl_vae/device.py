"""Which device a command runs on: ``--device cpu | cuda | cuda:N | auto``.

The device is a choice of each command, never part of a run's stored settings: a run
trained on a GPU evaluates, diagnoses and resumes on the CPU and the other way round.
Models and guides are built on the CPU (so a seed gives the same initial weights on every
device), then moved with ``.to(device)``; the engine (training, estimators, diagnostics)
puts the data on the device of the model's parameters, and checkpoints are read onto the
CPU first (``map_location="cpu"``) and copied into the moved modules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ppl_vae.errors import ConfigError

__all__ = ["DEFAULT_DEVICE", "DEVICE_CHOICES", "move_to_device", "resolve_device"]

#: The default of ``--device`` and of the Python API's ``device=None``: the CPU, so a run
#: gives the same numbers wherever it runs unless a device is asked for. ``"auto"`` picks
#: CUDA when it is usable; runs on a GPU differ from CPU runs by floating-point rounding
#: and by the GPU's own random stream, so they are not bit-for-bit reproducible on the CPU.
DEFAULT_DEVICE = "cpu"

#: What ``--device`` accepts (``cuda:N`` names the N-th visible GPU).
DEVICE_CHOICES = ("cpu", "cuda", "cuda:N", "auto")


def _cuda_unavailable() -> str:
    built = torch.version.cuda
    why = (
        f"torch {torch.__version__} was built without CUDA"
        if built is None
        else f"no GPU is visible to torch {torch.__version__} (built for CUDA {built}; "
        "check the driver and CUDA_VISIBLE_DEVICES)"
    )
    return f"torch.cuda.is_available() is False: {why}"


def _check_cuda(text: str, device: torch.device) -> torch.device:
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {text} was asked for but {_cuda_unavailable()}; use --device cpu "
            "(or auto, which falls back to the CPU)"
        )
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= count:
        raise ConfigError(
            f"--device {text} names GPU {index} but only {count} GPU(s) are visible "
            f"(cuda:0 .. cuda:{count - 1}); pick one of those or use --device cuda"
        )
    return torch.device("cuda", index)


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The :class:`torch.device` named by ``name``, checked to be usable here.

    :param name: ``"cpu"``; ``"cuda"`` (the current GPU) or ``"cuda:N"``; ``"auto"``: CUDA
        when available, else the CPU; a :class:`torch.device`; ``None`` for
        :data:`DEFAULT_DEVICE`. CUDA devices come back with their index, e.g. ``cuda:0``.
        Apple's ``"mps"`` is refused: it has no float64, in which the estimators reduce the
        importance weights, and its random stream is not seeded by
        :func:`ppl_vae.importance.rng_scope`.
    :raises ConfigError: for an unknown name, or a device this machine cannot use; the
        message says what to pass instead.
    """
    if name is None:
        name = DEFAULT_DEVICE
    if isinstance(name, torch.device):
        device, text = name, str(name)
    elif isinstance(name, str):
        text = name.strip().lower()
        if text == "auto":
            if torch.cuda.is_available():
                return _check_cuda(text, torch.device("cuda"))
            return torch.device("cpu")
        try:
            device = torch.device(text)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            raise ConfigError(
                f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)} "
                "(e.g. --device cuda:0)"
            )
    else:
        raise ConfigError(
            f"device must be a name such as 'cpu' or 'cuda', or a torch.device; got "
            f"{type(name).__name__}"
        )
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        return _check_cuda(text, device)
    if device.type == "mps":
        raise ConfigError(
            f"--device {text} is not supported: Apple's MPS has no float64, which the "
            "estimators need, and its random stream is not seeded by ppl_vae; use --device cpu"
        )
    raise ConfigError(
        f"device {text!r} is not supported; choose one of {', '.join(DEVICE_CHOICES)}"
    )


def move_to_device(device: torch.device, *modules: Any) -> None:
    """Move every :class:`torch.nn.Module` among ``modules`` (parameters and buffers: the
    priors' fixed parameters, VampPrior pseudo-inputs, flows' masks and permutations) to
    ``device`` in place; plain functions are left alone.

    Parameters keep their identity (``Module.to`` swaps their data), so Pyro's parameter
    store and an optimizer built afterwards see the moved tensors."""
    for module in modules:
        if isinstance(module, nn.Module):
            module.to(device)
