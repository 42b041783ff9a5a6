"""Keep Pyro's global parameter store consistent with the modules the engine is handed.

A :class:`~pyro.nn.PyroModule` registers each parameter in Pyro's global parameter store
under its attribute path (``decoder.net.0.weight``), and when a name is already there the
store's tensor silently *replaces* the module's own. Building a second model in the same
process would therefore train or evaluate the first model's weights. The engine treats the
module as the source of truth: stale store entries under its names are dropped before use.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
from torch import nn

from ppl_vae.errors import ContractError

__all__ = ["claim_param_names", "store_names"]

_UNCONSTRAINED = "_unconstrained"


def store_names(module: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of a PyroModule by the name Pyro's parameter store gives them (a
    constrained ``PyroParam`` drops its ``_unconstrained`` suffix)."""
    names = {}
    for name, param in module.named_parameters():
        if name.endswith(_UNCONSTRAINED):
            name = name[: -len(_UNCONSTRAINED)]
        names[name] = param
    return names


def claim_param_names(model: Callable, guide: Callable) -> None:
    """Drop store entries that shadow the parameters of ``model`` and ``guide``.

    Raises :class:`ContractError` when model and guide (both top-level modules, so both
    unprefixed) use the same parameter name for different tensors: Pyro would conflate them.
    """
    model_names = store_names(model) if isinstance(model, nn.Module) else {}
    guide_names = store_names(guide) if isinstance(guide, nn.Module) else {}
    clash = sorted(
        name
        for name in model_names.keys() & guide_names.keys()
        if model_names[name] is not guide_names[name]
    )
    if clash:
        raise ContractError(
            f"model and guide both have parameters named {clash[:3]}; Pyro's parameter store "
            "would treat them as one. Rename the submodules of one of them"
        )
    store = pyro.get_param_store()
    for name, param in {**model_names, **guide_names}.items():
        if name in store and store._params[name] is not param:
            del store[name]
