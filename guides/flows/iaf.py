r"""Amortized inverse autoregressive flow (Kingma et al., 2016 [1]) on Pyro's transforms.

One layer maps :math:`z \in \mathbb{R}^d` through an autoregressive network that also reads
the encoder features :math:`h(x)` (the context, as in [1], section 4):

.. math::

    (m, s) = \mathrm{MADE}(z, h), \qquad
    f(z) = \sigma \odot z + (1 - \sigma) \odot m, \quad \sigma = \mathrm{sigmoid}(s + 2),
    \qquad \log\left|\det\frac{\partial f}{\partial z}\right| = \sum_j \log\sigma_j,

the numerically stable, LSTM-like update that [1] recommends (``stable=True``, the default;
the bias 2 starts :math:`\sigma` near 0.88, close to the identity), or the affine form
:math:`f(z) = e^{s} \odot z + m` with :math:`s` clamped to :math:`[-5, 3]` (eq. 10 of [1];
``stable=False``). :math:`m_j, s_j` depend on :math:`z` only through the coordinates before
j in the layer's order, so the Jacobian is triangular; the MADE [3] (Pyro's
``ConditionalAutoRegressiveNN``, with skip connections, so a *linear* dependence on
:math:`z_{<j}` and :math:`h` is represented exactly) masks its weights to that effect, and
``reverse=True`` reverses the order (stacks alternate, so every coordinate can depend on
every other one).

Sampling is one network pass per layer; scoring an arbitrary point inverts coordinate by
coordinate (d passes). Pyro's ``AffineAutoregressive`` caches its last pair, so the
guide's own samples are scored without inversion; :meth:`AmortizedIAF.condition` builds a
fresh transform each time so no cache outlives a parameter update.

References

[1] Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), *Improved Variational
    Inference with Inverse Autoregressive Flow*, NeurIPS.
[2] Pyro documentation, ``pyro.distributions.transforms.ConditionalAffineAutoregressive``.
[3] Germain, Gregor, Murray & Larochelle (2015), *MADE: Masked Autoencoder for Distribution
    Estimation*, ICML.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial

import torch
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from guides.flows._checks import check_bool, check_hidden
from guides.flows.base import AmortizedFlow
from models.transforms import DtypeSafeAffineAutoregressive

__all__ = ["AmortizedIAF", "made", "made_hidden"]


def made(
    latent_dim: int,
    context_dim: int,
    hidden: Sequence[int],
    param_dims: Sequence[int],
    *,
    reverse: bool,
) -> ConditionalAutoRegressiveNN:
    """A context-conditioned MADE with skip connections over ``latent_dim`` inputs, in the
    natural order or (``reverse=True``) the reversed one. ``hidden`` sizes must be at least
    ``latent_dim`` (checked by the caller, e.g. with :func:`made_hidden`)."""
    order = torch.arange(latent_dim)
    with warnings.catch_warnings():  # d = 1: a context-only affine map, which is intended
        warnings.filterwarnings("ignore", message=".*input_dim = 1", category=UserWarning)
        return ConditionalAutoRegressiveNN(
            latent_dim,
            context_dim,
            list(hidden),
            param_dims=list(param_dims),
            permutation=order.flip(0) if reverse else order,
            skip_connections=True,
            # Pyro's default is one ReLU instance shared by every network (a default
            # argument); to_pyro_module_ would turn that shared object into a PyroModule.
            nonlinearity=nn.ReLU(),
        )


def made_hidden(hidden: Sequence[int] | None, latent_dim: int) -> tuple[int, ...]:
    """The checked hidden sizes of a MADE over ``latent_dim`` inputs: at least one layer,
    each at least ``latent_dim``; ``None`` gives ``(10 * latent_dim,)`` (the width of Pyro's
    conditional helpers)."""
    sizes = check_hidden(
        "hidden", (10 * latent_dim,) if hidden is None else hidden, minimum=latent_dim
    )
    if not sizes:
        raise ValueError("hidden must name at least one layer (sizes >= latent_dim), got ()")
    return sizes


class AmortizedIAF(AmortizedFlow):
    """An IAF layer conditioned on the encoder features.

    :param latent_dim: dimension d of z.
    :param context_dim: size of the context (the encoder's ``feature_dim``).
    :param hidden: hidden layer sizes of the MADE, each at least ``latent_dim``; default
        ``(10 * latent_dim,)`` (the width of Pyro's conditional helpers).
    :param stable: the sigmoid-gated update of [1] (default) rather than the clamped affine.
    :param reverse: reverse the autoregressive order.
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        *,
        hidden: Sequence[int] | None = None,
        stable: bool = True,
        reverse: bool = False,
    ) -> None:
        super().__init__(latent_dim, context_dim)
        self.hidden = made_hidden(hidden, latent_dim)
        self.stable = check_bool("stable", stable)
        self.reverse = check_bool("reverse", reverse)
        self.arn = made(latent_dim, context_dim, self.hidden, [1, 1], reverse=reverse)

    def condition(self, context: torch.Tensor) -> DtypeSafeAffineAutoregressive:
        """A fresh Pyro ``AffineAutoregressive`` (new cache) reading ``context``
        ``(..., context_dim)``, broadcast over the inputs' extra batch dimensions."""
        net = partial(self.arn, context=context)
        net.permutation = self.arn.permutation  # type: ignore[attr-defined]
        net.get_permutation = self.arn.get_permutation  # type: ignore[attr-defined]
        return DtypeSafeAffineAutoregressive(net, stable=self.stable)
