r"""The VampPrior: a uniform mixture of the guide's posteriors at learned pseudo-inputs.

.. math::

    p_\lambda(z) = \frac{1}{C} \sum_{c=1}^{C} q_\phi(z \mid u_c), \qquad
    q_\phi(z \mid u) = \mathcal{N}\!\left(z;\ \mu_\phi(u),\ \mathrm{diag}\,\sigma_\phi(u)^2\right),

where :math:`u_1, \dots, u_C` are learned *pseudo-inputs* with the shape of one datapoint and
:math:`\mu_\phi, \sigma_\phi` is the guide's own encoder [1]. The optimal prior for a fixed
encoder is the aggregate posterior :math:`\frac{1}{N}\sum_n q_\phi(z \mid x_n)`; the VampPrior
approximates it with :math:`C \ll N` pseudo-inputs, and sharing :math:`\phi` couples prior and
posterior. The density is a :class:`~models.priors.diagonal_mixture.DiagonalNormalMixture`:
``log_prob`` is a ``logsumexp`` over the C components through one matrix product (memory R x C
for R points, not R x C x d) and broadcasts over any sample shape; ``sample()`` works (there is
no ``rsample``, which the prior does not need).

Because models/ never imports guides/, the encoder is handed to the constructor; it must be
the *same module object* the guide uses (the builder passes it when the class says
``needs_encoder = True``), so its parameters receive gradients from both the prior and the
guide. The encoder is registered as a submodule, so it also appears in this prior's (and the
model's) ``state_dict``.

Pseudo-inputs live in data space (the encoder applies its own ``input_scale``). They start
either as ``num_components`` rows drawn at random without replacement from ``pseudo_init``
(training examples, as in [1]'s "data init") or, without it, as uniform noise on
:math:`[0, \text{input\_max}]` (``input_max`` is the data's largest value: 1 for binary
pixels, 16 for the digits' counts). They are not constrained to the data's range.

``TraceMeanField_ELBO`` finds no closed-form KL from a Normal to this mixture and falls back to
the sampled KL.

References

[1] Tomczak & Welling (2018), *VAE with a VampPrior*, AISTATS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.priors._checks import check_latent_dim, check_positive
from models.priors.diagonal_mixture import DiagonalNormalMixture

__all__ = ["VampPrior"]


class VampPrior(nn.Module):
    r"""The VampPrior :math:`\frac{1}{C}\sum_c q(z \mid u_c)` over ``C = num_components``.

    :param latent_dim: dimension d of z; must match the encoder's output.
    :param encoder: module with ``encoder(u) -> (loc, scale)``, each of shape
        ``(..., latent_dim)``: the guide's encoder, the same object.
    :param data_shape: shape of one datapoint (and of one pseudo-input), e.g. ``(64,)``.
    :param num_components: the number C of pseudo-inputs.
    :param pseudo_init: optional tensor of training examples, shape ``(M, *data_shape)`` with
        ``M >= num_components``; C distinct rows, chosen at random, start the pseudo-inputs.
    :param input_max: without ``pseudo_init``, pseudo-inputs start uniform on
        ``[0, input_max]``.
    """

    #: Tells the builder to pass ``encoder=`` (the guide's) and ``data_shape=``.
    needs_encoder = True

    def __init__(
        self,
        latent_dim: int,
        *,
        encoder: nn.Module,
        data_shape: Sequence[int],
        num_components: int = 50,
        pseudo_init: torch.Tensor | None = None,
        input_max: float = 1.0,
    ) -> None:
        super().__init__()
        self.latent_dim = check_latent_dim(latent_dim)
        if not callable(encoder):
            raise ValueError(f"encoder must be a module mapping u to (loc, scale), got {encoder!r}")
        if isinstance(num_components, bool) or not isinstance(num_components, int):
            raise ValueError(f"num_components must be an integer, got {num_components!r}")
        if num_components < 1:
            raise ValueError(f"num_components must be positive, got {num_components}")
        self.data_shape = tuple(int(s) for s in data_shape)
        if not self.data_shape or any(s < 1 for s in self.data_shape):
            raise ValueError(f"data_shape must be non-empty and positive, got {data_shape!r}")
        self.num_components = num_components
        self.encoder = encoder
        shape = (num_components, *self.data_shape)
        if pseudo_init is None:
            init = torch.rand(shape) * check_positive("input_max", input_max)
        else:
            pseudo_init = torch.as_tensor(pseudo_init)
            if tuple(pseudo_init.shape[1:]) != self.data_shape:
                raise ValueError(
                    f"pseudo_init must have shape (M, *data_shape) = (M, "
                    f"{', '.join(map(str, self.data_shape))}), got {tuple(pseudo_init.shape)}"
                )
            if pseudo_init.shape[0] < num_components:
                raise ValueError(
                    f"pseudo_init has {pseudo_init.shape[0]} examples, fewer than "
                    f"num_components = {num_components}"
                )
            rows = torch.randperm(pseudo_init.shape[0])[:num_components]
            init = pseudo_init[rows].to(torch.get_default_dtype())
        self.pseudo_inputs = nn.Parameter(init.detach().clone())
        self.register_buffer("logits", torch.zeros(num_components))
        with torch.no_grad():
            loc, _ = encoder(self.pseudo_inputs)
        if loc.shape != (num_components, latent_dim):
            raise ValueError(
                f"the encoder maps pseudo-inputs to loc of shape {tuple(loc.shape)}; expected "
                f"({num_components}, {latent_dim}) for latent_dim = {latent_dim}"
            )

    def forward(self) -> DiagonalNormalMixture:
        loc, scale = self.encoder(self.pseudo_inputs)
        return DiagonalNormalMixture(self.logits, loc, scale)
