"""The interface of an amortized flow layer."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Transform

from guides.flows._checks import check_int

__all__ = ["AmortizedFlow"]


class AmortizedFlow(nn.Module):
    """A flow layer whose parameters are read off a context, the encoder features h(x).

    :meth:`condition` returns a *fresh* bijective ``Transform`` on vectors (event dim 1) for
    a context of shape ``(..., context_dim)``; the transform broadcasts that context over
    extra batch dimensions of its inputs on the left, e.g. ``(K, N, d)`` inputs against an
    ``(N, H)`` context. A fresh object per call means a fresh ``cache_size=1`` cache, so no
    cached pair outlives a parameter update.

    (Pyro's ``ConditionalTransformModule`` plays the same role, but its ``ABC`` metaclass
    clashes with :func:`pyro.nn.module.to_pyro_module_`, which amortized guides apply to
    all their submodules; so this is a plain ``nn.Module``.)

    :param latent_dim: dimension d of the vectors transformed.
    :param context_dim: size of the context.
    """

    def __init__(self, latent_dim: int, context_dim: int) -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim)
        self.context_dim = check_int("context_dim", context_dim)

    def condition(self, context: torch.Tensor) -> Transform:
        raise NotImplementedError
