r"""One torch optimizer over all the parameters a model/guide pair uses.

Pyro's optimizers (:class:`pyro.optim.PyroOptim`) build one ``torch.optim`` optimizer per
parameter tensor and step them one by one; :class:`TorchOptim` holds a *single* torch
optimizer over every parameter, so a step is one call (for Adam, PyTorch's fused
multi-tensor kernel where the device has one) instead of one Python loop per tensor.

The parameters are the unconstrained tensors of Pyro's parameter store, as for SVI:
:func:`ppl_vae.training.fit` traces the first step of each call and hands the parameters
it saw to :meth:`TorchOptim.add`, and later adds any parameter created afterwards as a new
parameter group. Constrained ``pyro.param`` values are therefore optimised in
unconstrained space, exactly as SVI does.

The state is read and written in :class:`~pyro.optim.PyroOptim`'s format: a dict from
parameter-store name to that parameter's torch ``state_dict`` (``{"state": {0: ...},
"param_groups": [{..., "params": [0]}]}``). Checkpoints written with a Pyro optimizer
therefore restore into a :class:`TorchOptim` and the other way round.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import pyro
import torch
from torch.optim import Optimizer

from ppl_vae.errors import ConfigError

__all__ = ["TorchOptim", "adam", "as_torch_optim"]

#: Options that choose an optimizer's implementation rather than its arithmetic; a
#: restored state never overrides them (an old checkpoint says ``foreach=None``).
_IMPLEMENTATION = frozenset({"foreach", "fused", "capturable", "differentiable"})

#: Device types whose PyTorch builds have fused optimizer kernels.
_FUSED_DEVICES = frozenset({"cpu", "cuda", "mps", "xpu"})


def _accepts(constructor: Any, option: str) -> bool:
    try:
        return option in inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        return False


def _hyperparameters(group: Mapping[str, Any]) -> dict[str, Any]:
    """A saved param group's arithmetic settings (lr, betas, ...): no tensors list, no
    implementation flags."""
    return {k: v for k, v in group.items() if k != "params" and k not in _IMPLEMENTATION}


def _frozen(hyper: Mapping[str, Any]) -> tuple:
    """A hashable key of hyperparameters (lists such as betas become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in hyper.items()))


def _single_state(entry: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, hyperparameters)`` of one parameter's saved entry in PyroOptim's format
    (a torch state_dict over one tensor; a scheduler-wrapped one is unwrapped)."""
    if "state" not in entry and isinstance(entry.get("optimizer"), Mapping):
        entry = entry["optimizer"]
    states = entry.get("state") or {}
    groups = entry.get("param_groups") or [{}]
    state = dict(next(iter(states.values()))) if states else {}
    return state, _hyperparameters(groups[0])


class TorchOptim:
    """A torch optimizer over the parameters a model/guide pair uses, keyed by their names
    in Pyro's parameter store.

    ``TorchOptim(torch.optim.Adam, {"lr": 1e-3})`` reads like
    ``pyro.optim.Adam({"lr": 1e-3})`` but steps all parameters with one optimizer. For
    optimizers with a ``fused`` option (Adam, AdamW, SGD, ...) the fused kernel is used
    when every parameter is a floating tensor on a device that has it, unless
    ``optim_args`` sets ``fused`` or ``foreach`` itself; otherwise PyTorch's default
    implementation. Fused Adam does the same arithmetic as the per-tensor loop up to
    floating-point rounding.

    :param optim_constructor: a ``torch.optim.Optimizer`` class.
    :param optim_args: its keyword arguments (``lr``, ``betas``, ...).
    """

    def __init__(
        self,
        optim_constructor: type[Optimizer] = torch.optim.Adam,
        optim_args: Mapping[str, Any] | None = None,
    ) -> None:
        if not (isinstance(optim_constructor, type) and issubclass(optim_constructor, Optimizer)):
            raise TypeError(
                "optim_constructor must be a torch.optim.Optimizer class, got "
                f"{optim_constructor!r}"
            )
        self.optim_constructor = optim_constructor
        self.optim_args = dict(optim_args or {})
        self._optimizer: Optimizer | None = None
        self._names: dict[torch.Tensor, str | None] = {}
        self._pending: dict[str, Any] = {}
        self._auto_add = True

    @classmethod
    def wrap(cls, optimizer: Optimizer) -> TorchOptim:
        """Use an existing torch optimizer as it is: its parameters (looked up in Pyro's
        parameter store for their names) and only those are trained; :func:`fit` adds no
        others."""
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        wrapped = cls(type(optimizer), optimizer.defaults)
        wrapped._optimizer = optimizer
        wrapped._auto_add = False
        for p in (p for g in optimizer.param_groups for p in g["params"]):
            wrapped._names[p] = None  # named from the store when seen (see name())
        return wrapped

    # ---------------------------------------------------------------- parameters

    @property
    def optimizer(self) -> Optimizer | None:
        """The torch optimizer (``None`` until parameters were added)."""
        return self._optimizer

    @property
    def auto_add(self) -> bool:
        """Whether :func:`fit` adds the parameters it finds (False for :meth:`wrap`)."""
        return self._auto_add

    def __contains__(self, param: torch.Tensor) -> bool:
        return param in self._names

    def params(self) -> list[torch.Tensor]:
        """The parameters held, in the order they were added."""
        return list(self._names)

    def name(self, named_params: Mapping[str, torch.Tensor]) -> None:
        """Record the store names of parameters held but not named yet (those of a wrapped
        torch optimizer, named when a step's trace shows them)."""
        for name, param in named_params.items():
            if param in self._names and self._names[param] is None:
                self._names[param] = name

    def _name_of(self, param: torch.Tensor, index: int) -> str:
        name = self._names.get(param)
        if name is None:
            name = pyro.get_param_store()._param_to_name.get(param, f"param{index}")
        return name

    def add(self, named_params: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]):
        """Add parameters not held yet (unconstrained leaf tensors, by store name) as one new
        parameter group (more than one where restored states carry different
        hyperparameters), restoring any state :meth:`set_state` holds for their names."""
        items = named_params.items() if isinstance(named_params, Mapping) else named_params
        new = [(name, p) for name, p in items if p not in self._names]
        if not new:
            return
        groups: dict[tuple, list[torch.Tensor]] = {}
        restored: dict[torch.Tensor, dict[str, Any]] = {}
        hypers: dict[tuple, dict[str, Any]] = {}
        for name, param in new:
            self._names[param] = name
            entry = self._pending.pop(name, None)
            hyper: dict[str, Any] = {}
            if entry is not None:
                state, hyper = _single_state(entry)
                if state:
                    restored[param] = state
            key = _frozen(hyper)
            hypers[key] = hyper
            groups.setdefault(key, []).append(param)
        for key, params in groups.items():
            group = {"params": params, **hypers[key]}
            if self._optimizer is None:
                self._optimizer = self._build([group])
            else:
                self._optimizer.add_param_group(group)
        for param, state in restored.items():
            self._optimizer.state[param] = self._cast(param, state)

    def _build(self, groups: list[dict[str, Any]]) -> Optimizer:
        args = dict(self.optim_args)
        params = [p for g in groups for p in g["params"]]
        wants_default = "fused" not in args and "foreach" not in args
        if (
            wants_default
            and _accepts(self.optim_constructor, "fused")
            and all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in params)
        ):
            try:
                return self.optim_constructor(groups, **args, fused=True)
            except (RuntimeError, ValueError, TypeError):
                pass  # no fused kernel for this device, dtype or torch build
        return self.optim_constructor(groups, **args)

    def _group_of(self, param: torch.Tensor) -> dict[str, Any]:
        return next(g for g in self._optimizer.param_groups if any(p is param for p in g["params"]))

    def _cast(self, param: torch.Tensor, state: Mapping[str, Any]) -> dict[str, Any]:
        """Saved state onto the parameter's device and dtype, as ``load_state_dict`` does
        (copies, never views of the checkpoint's tensors)."""
        group = self._group_of(param)
        on_device = bool(group.get("fused") or group.get("capturable"))
        out = {}
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                if key == "step" and on_device:
                    value = torch.tensor(float(value))
                else:
                    out[key] = value
                    continue
            if key == "step":
                out[key] = (
                    value.to(dtype=torch.float32, device=param.device, copy=True)
                    if on_device
                    else value.clone()
                )
            elif param.is_floating_point() and value.is_floating_point():
                out[key] = value.to(dtype=param.dtype, device=param.device, copy=True)
            else:
                out[key] = value.to(device=param.device, copy=True)
        return out

    # ---------------------------------------------------------------------- steps

    def step(self) -> None:
        """One optimizer step over the parameters that have gradients."""
        if self._optimizer is not None:
            self._optimizer.step()

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none``), so an unused parameter is not stepped."""
        if self._optimizer is not None:
            self._optimizer.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------------- state

    def get_state(self) -> dict[str, Any]:
        """The state in :meth:`pyro.optim.PyroOptim.get_state`'s format: parameter name to
        a one-tensor torch ``state_dict``; restored states of parameters not yet seen are
        included as they were given."""
        out = dict(self._pending)
        if self._optimizer is None:
            return out
        index = 0
        for group in self._optimizer.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            for param in group["params"]:
                state = self._optimizer.state.get(param)
                index += 1
                out[self._name_of(param, index - 1)] = {
                    "state": {0: dict(state)} if state else {},
                    "param_groups": [{**settings, "params": [0]}],
                }
        return out

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`get_state` or :meth:`pyro.optim.PyroOptim.get_state`.
        Parameters held now take their saved moments at once (their hyperparameters stay);
        the others get state and hyperparameters when they are added."""
        live = {name: param for param, name in self._names.items() if name is not None}
        for name, entry in state.items():
            if name in live and self._optimizer is not None:
                saved, _ = _single_state(entry)
                param = live[name]
                self._optimizer.state.pop(param, None)
                if saved:
                    self._optimizer.state[param] = self._cast(param, saved)
            else:
                self._pending[name] = entry


def adam(lr: float) -> TorchOptim:
    """:func:`ppl_vae.training.fit`'s default optimizer: Adam with learning rate ``lr``
    and PyTorch's other defaults, one optimizer over all parameters."""
    return TorchOptim(torch.optim.Adam, {"lr": lr})


def as_torch_optim(
    optimizer: TorchOptim | Optimizer | None,
    lr: float,
    *,
    accepted: str = "a ppl_vae.optim.TorchOptim or a torch.optim.Optimizer",
) -> TorchOptim:
    """The :class:`TorchOptim` a training loop steps with: :func:`adam` with ``lr`` for
    ``None``, a torch optimizer wrapped as it is (:meth:`TorchOptim.wrap`), a
    :class:`TorchOptim` itself.

    :param accepted: what the caller accepts, for the error message.
    :raises ConfigError: for anything else.
    """
    if optimizer is None:
        return adam(lr)
    if isinstance(optimizer, Optimizer):
        return TorchOptim.wrap(optimizer)
    if not isinstance(optimizer, TorchOptim):
        raise ConfigError(f"optimizer must be {accepted}, got {type(optimizer).__name__}")
    return optimizer
