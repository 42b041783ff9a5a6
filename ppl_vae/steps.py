r"""Gradient steps on a model/guide pair: the loss, its gradients, one optimizer step.

:class:`Steps` is what :func:`ppl_vae.training.fit` runs per minibatch by default. It
does what :meth:`pyro.infer.SVI.step` does, without SVI's per-step bookkeeping:

- the loss is ``elbo.differentiable_loss(model, guide, *args)`` followed by
  ``backward()`` (for objectives without a ``differentiable_loss``, such as Pyro's
  ``RenyiELBO`` behind ``iwae``/``renyi``, their ``loss_and_grads``, which does the
  backward pass itself); the gradients are those SVI computes;
- the parameters are found as SVI finds them, by tracing the ``pyro.param`` statements of
  a step under ``poutine.trace(param_only=True)``, but only on the first step, not on
  every one; a parameter created later (Pyro's store grows during a step) is added to the
  optimizer then, as a new parameter group;
- one :class:`~ppl_vae.optim.TorchOptim` steps all of them.

:class:`LegacySteps` is ``SVI.step`` itself, used when ``fit`` is handed a Pyro optimizer
(:class:`pyro.optim.PyroOptim`), so old code keeps its exact behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.infer.elbo import ELBO

from ppl_vae.optim import TorchOptim

__all__ = ["LegacySteps", "Steps", "traced_params", "uses_differentiable_loss"]


def _owner(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def uses_differentiable_loss(elbo: ELBO) -> bool:
    """Whether ``elbo``'s gradients come from its ``differentiable_loss`` (True) or only from
    its ``loss_and_grads`` (False): the latter when there is no ``differentiable_loss``
    (``RenyiELBO``) or a subclass overrides ``loss_and_grads`` below the class that defines
    ``differentiable_loss`` (a user's ELBO that only customises ``loss_and_grads``)."""
    cls = type(elbo)
    differentiable = _owner(cls, "differentiable_loss")
    if differentiable is None:
        return False
    with_grads = _owner(cls, "loss_and_grads")
    return with_grads is None or issubclass(differentiable, with_grads)


def traced_params(trace: poutine.Trace) -> dict[str, torch.Tensor]:
    """The unconstrained parameters of a ``param_only`` trace by store name (as SVI)."""
    return {
        name: site["value"].unconstrained()
        for name, site in trace.nodes.items()
        if site["type"] == "param"
    }


class Steps:
    """Gradient steps with one :class:`~ppl_vae.optim.TorchOptim` (see module docs).

    :param elbo: the objective.
    :param optimizer: the optimizer; parameters are added to it unless it wraps a fixed
        torch optimizer (:meth:`TorchOptim.wrap`).
    """

    def __init__(self, elbo: ELBO, optimizer: TorchOptim) -> None:
        self.elbo = elbo
        self.optimizer = optimizer
        self.differentiable = uses_differentiable_loss(elbo)
        self._store = pyro.get_param_store()
        self._names: set[str] | None = None  # store names at the last look; None: trace
        self.model: Callable | None = None
        self.guide: Callable | None = None

    def set_programs(self, model: Callable, guide: Callable) -> None:
        """The (possibly rescaled) model and guide of the coming steps."""
        self.model, self.guide = model, guide

    @property
    def traced(self) -> bool:
        """Whether the parameters were collected (the first step has run)."""
        return self._names is not None

    def gradients(self, args: tuple, kwargs: dict[str, Any]) -> float:
        """The loss of one minibatch, with its gradients accumulated into ``.grad``."""
        if self.differentiable:
            loss = self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
            if not isinstance(loss, torch.Tensor):  # a program without sample sites
                return float(loss)
            if loss.requires_grad:
                loss.backward()
            return loss.item()
        return float(self.elbo.loss_and_grads(self.model, self.guide, *args, **kwargs))

    def collect(self, args: tuple, kwargs: dict[str, Any]) -> float:
        """:meth:`gradients` under a parameter trace; the parameters seen join the
        optimizer."""
        with poutine.trace(param_only=True) as capture:
            loss = self.gradients(args, kwargs)
        params = traced_params(capture.trace)
        if self.optimizer.auto_add:
            self.optimizer.add(params)
        self.optimizer.name(params)
        self._names = set(self._store.keys())
        return loss

    def add_new_params(self) -> None:
        """Add parameters created since the last look (the store grew) that have
        gradients: they were used by the step that created them."""
        store = self._store._params
        if store.keys() == self._names or not self.optimizer.auto_add:
            return
        new = {
            name: p
            for name, p in store.items()
            if name not in self._names and p.grad is not None and p not in self.optimizer
        }
        self.optimizer.add(new)
        self._names = set(store)

    def __call__(self, args: tuple, kwargs: dict[str, Any]) -> float:
        """One step on a minibatch; returns its loss."""
        if self._names is None:
            loss = self.collect(args, kwargs)
        else:
            loss = self.gradients(args, kwargs)
            self.add_new_params()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss


class LegacySteps:
    """``SVI.step`` with a Pyro optimizer: the behaviour of ``fit`` before
    :class:`Steps` (one torch optimizer per parameter, a parameter trace every step)."""

    traced = False  # validation is left as the caller set it, as it always was

    def __init__(self, elbo: ELBO, optimizer: pyro.optim.PyroOptim) -> None:
        self.elbo = elbo
        self.optimizer = optimizer
        self._svi: SVI | None = None

    def set_programs(self, model: Callable, guide: Callable) -> None:
        self._svi = SVI(model, guide, self.optimizer, loss=self.elbo)

    def __call__(self, args: tuple, kwargs: dict[str, Any]) -> float:
        return self._svi.step(*args, **kwargs)
