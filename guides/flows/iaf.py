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
from pyro.distributions.transforms import AffineAutoregressive
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from guides.flows._checks import check_bool, check_hidden
from guides.flows.base import AmortizedFlow

__all__ = ["AmortizedIAF", "made"]


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
    ``latent_dim`` (checked by the caller)."""
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
        self.hidden = check_hidden(
            "hidden", (10 * latent_dim,) if hidden is None else hidden, minimum=latent_dim
        )
        if not self.hidden:
            raise ValueError("hidden must name at least one layer (sizes >= latent_dim), got ()")
        self.stable = check_bool("stable", stable)
        self.reverse = check_bool("reverse", reverse)
        self.arn = made(latent_dim, context_dim, self.hidden, [1, 1], reverse=reverse)

    def condition(self, context: torch.Tensor) -> AffineAutoregressive:
        """A fresh Pyro ``AffineAutoregressive`` (new cache) reading ``context``
        ``(..., context_dim)``, broadcast over the inputs' extra batch dimensions."""
        net = partial(self.arn, context=context)
        net.permutation = self.arn.permutation  # type: ignore[attr-defined]
        net.get_permutation = self.arn.get_permutation  # type: ignore[attr-defined]
        return _AffineAutoregressive(net, stable=self.stable)


class _AffineAutoregressive(AffineAutoregressive):
    """Pyro's ``AffineAutoregressive`` with dtype-safe inverses: Pyro 1.9 starts them from
    ``torch.zeros`` in the *default* dtype, which fails for float64 modules under a float32
    default (and vice versa); here the zeros follow ``y``."""

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = [y.new_zeros(y.shape[:-1])] * y.size(-1)
        for idx in self.arn.permutation.tolist():
            mean, log_scale = self.arn(torch.stack(x, dim=-1))
            log_scale = clamp_preserve_gradients(
                log_scale, self.log_scale_min_clip, self.log_scale_max_clip
            )
            x[idx] = (y[..., idx] - mean[..., idx]) * torch.exp(-log_scale[..., idx])
        self._cached_log_scale = log_scale
        return torch.stack(x, dim=-1)

    def _inverse_stable(self, y: torch.Tensor) -> torch.Tensor:
        x = [y.new_zeros(y.shape[:-1])] * y.size(-1)
        for idx in self.arn.permutation.tolist():
            mean, logit_scale = self.arn(torch.stack(x, dim=-1))
            inverse_scale = 1 + torch.exp(-logit_scale[..., idx] - self.sigmoid_bias)
            x[idx] = inverse_scale * y[..., idx] + (1 - inverse_scale) * mean[..., idx]
        self._cached_log_scale = self.logsigmoid(logit_scale + self.sigmoid_bias)
        return torch.stack(x, dim=-1)
