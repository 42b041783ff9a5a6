"""Freezing the parameters of a trained model/guide pair while a diagnostic runs on it, and
leaving the caller's state as it was found afterwards.

A diagnostic that optimises or differentiates something else (a per-datapoint guide, NUTS
on the latents) must not move the pair's parameters nor leave them changed in any other
way: :func:`frozen_parameters` saves and restores Pyro's parameter store and each
parameter's ``requires_grad`` flag and ``.grad``, and the modules' train/eval modes;
:func:`freeze_program` and :func:`freeze_parameters` stop gradients inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyro
import torch
from pyro import poutine
from torch import nn

from ppl_vae.importance import rng_scope
from ppl_vae.params import claim_param_names

__all__ = ["freeze_parameters", "freeze_program", "frozen_parameters", "module_parameters"]


def module_parameters(*programs: Callable | None) -> list[torch.Tensor]:
    """The parameters of those ``programs`` that are modules (plain functions have none)."""
    return [p for fn in programs if isinstance(fn, nn.Module) for p in fn.parameters()]


def _stop_gradients(tensors: Iterable[Any]) -> None:
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_leaf:
            tensor.requires_grad_(False)


@contextlib.contextmanager
def frozen_parameters(
    model: Callable | None, guide: Callable, *, eval_mode: bool = False
) -> Iterator[None]:
    """Run the block with the parameters of ``model`` and ``guide`` owned by their modules
    (:func:`~ppl_vae.params.claim_param_names`), in eval mode where ``eval_mode``. On exit,
    however the block ends, restore what the caller had:

    * Pyro's parameter store, exactly: the same names, tensors and constraint objects;
    * for every parameter of the two modules and every tensor in the store, its
      ``requires_grad`` flag and its ``.grad``;
    * the train/eval mode of every submodule of the two.

    Parameter values are not saved: the block stops their gradients with
    :func:`freeze_program` or :func:`freeze_parameters` and must not assign to them.
    """
    store = pyro.get_param_store()
    saved = (dict(store._params), dict(store._constraints), dict(store._param_to_name))
    tensors = {id(t): t for t in [*module_parameters(model, guide), *store._params.values()]}
    flags = {key: (t.requires_grad, t.grad) for key, t in tensors.items()}
    modules = [p for p in (model, guide) if isinstance(p, nn.Module)]
    modes = [(sub, sub.training) for module in modules for sub in module.modules()]
    try:
        claim_param_names(model, guide)
        if eval_mode:
            for module in modules:
                module.eval()
        yield
    finally:
        for key, tensor in tensors.items():
            requires_grad, grad = flags[key]
            tensor.requires_grad_(requires_grad)
            if tensor.grad is not grad:
                tensor.grad = grad
        for current, previous in zip(
            (store._params, store._constraints, store._param_to_name), saved, strict=True
        ):
            current.clear()
            current.update(previous)
        for sub, mode in modes:
            sub.train(mode)


def freeze_program(program: Callable, args: tuple, kwargs: dict) -> None:
    """Set ``requires_grad=False`` on every parameter of ``program``: its module parameters
    and whatever its ``pyro.param`` statements return. One run on ``(args, kwargs)`` (no
    gradients, the caller's random stream untouched) registers them all in the store first,
    since registering a new name turns ``requires_grad`` back on."""
    with torch.no_grad(), rng_scope(args[0].device):
        trace = poutine.trace(program, param_only=True).get_trace(*args, **kwargs)
    tensors = module_parameters(program)
    for site in trace.nodes.values():
        value = site["value"]
        unconstrained = getattr(value, "unconstrained", None)
        tensors.append(unconstrained() if callable(unconstrained) else value)
    _stop_gradients(tensors)


def freeze_parameters(*programs: Callable | None) -> None:
    """Set ``requires_grad=False`` on the module parameters of ``programs`` and on every
    tensor in Pyro's parameter store; call it once the programs have run, so that their
    ``pyro.param`` statements have registered their tensors."""
    stored = [tensor for _, tensor in pyro.get_param_store().named_parameters()]
    _stop_gradients([*module_parameters(*programs), *stored])
