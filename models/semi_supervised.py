r"""The semi-supervised generative model M2 of Kingma et al. [1]: a label y that is observed
for some datapoints and latent for the rest.

.. math::

    y \sim \mathrm{Cat}(\pi), \qquad z \sim p_\lambda(z), \qquad
    x \mid y, z \sim p_\theta\!\left(x \mid \mathrm{dec}([z, \mathrm{onehot}(y)])\right).

The program is ``model(x, mask=None, *, y=None)``: with labels ``y`` (int64, shape ``(N,)``)
the site ``"y"`` is observed and the ELBO bounds :math:`\log p(x, y)`; without them ``"y"`` is
latent and the guide :class:`guides.semi_supervised.SemiSupervisedGuide` supplies
:math:`q(y \mid x)`, which :class:`~pyro.infer.TraceEnum_ELBO` sums out exactly, so the ELBO
bounds :math:`\log p(x)`. Labelled and unlabelled minibatches are separate calls, as in
Pyro's SS-VAE example (see :mod:`ppl_vae.semi_supervised` for the objective). The site also
asks for parallel enumeration, so with a guide that does not sample ``"y"`` TraceEnum_ELBO
sums it out in the model instead.

Everything else is the conditional VAE (:class:`~models.conditional.ConditionalVAE`): the
decoder reads ``cat(z, onehot(y))``, any registered prior and likelihood work, and the sites
``"y"``, ``"z"`` and ``"x"`` live in ``pyro.plate("data")`` on the rightmost batch dimension.

References

[1] Kingma, Rezende, Mohamed & Welling (2014), *Semi-supervised Learning with Deep
    Generative Models*, NeurIPS.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from models.conditional import ConditionalVAE, check_labels
from models.likelihoods import Likelihood
from models.masking import mask_datapoints, split_mask

__all__ = ["SemiSupervisedVAE", "check_class_probs"]


def check_class_probs(class_probs: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """``class_probs`` as a float tensor of ``num_classes`` positive probabilities summing to
    one (uniform when ``None``).

    :raises ValueError: for the wrong length, a non-positive entry or a sum other than one.
    """
    if class_probs is None:
        return torch.full((num_classes,), 1.0 / num_classes)
    probs = torch.as_tensor(class_probs, dtype=torch.get_default_dtype()).detach().clone()
    if tuple(probs.shape) != (num_classes,):
        raise ValueError(
            f"class_probs must hold one probability per class, shape ({num_classes},), got "
            f"{tuple(probs.shape)}"
        )
    if not bool(torch.isfinite(probs).all()) or bool((probs <= 0).any()):
        raise ValueError(f"class_probs must be positive, got {probs.tolist()}")
    if abs(float(probs.sum()) - 1.0) > 1e-6:
        raise ValueError(
            f"class_probs must sum to 1, got {float(probs.sum()):.6g}; divide by the sum"
        )
    return probs


class SemiSupervisedVAE(ConditionalVAE):
    r"""``model(x, mask=None, *, y=None)``: y ~ Cat(pi), z ~ prior, x | y, z ~
    likelihood(decoder(cat(z, onehot(y)))); y is observed when given, latent otherwise.

    :param prior: module whose ``forward()`` returns a distribution over z with
        ``event_dim == 1``.
    :param decoder: network from ``(..., latent_dim + num_classes)`` (z first) to
        ``(..., likelihood.num_params)``.
    :param likelihood: a :class:`~models.likelihoods.Likelihood`; it fixes ``data_shape``.
    :param num_classes: number of classes; labels are ``0 .. num_classes - 1``.
    :param class_probs: the fixed prior :math:`\pi` over classes (a buffer, not trained),
        e.g. the class frequencies of the labelled data; uniform by default, as in [1].
    """

    def __init__(
        self,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood: Likelihood,
        num_classes: int,
        class_probs: torch.Tensor | None = None,
    ) -> None:
        super().__init__(prior, decoder, likelihood, num_classes)
        self.register_buffer("class_probs", check_class_probs(class_probs, num_classes))

    def label_prior(self) -> dist.Categorical:
        r"""The prior :math:`p(y) = \mathrm{Cat}(\pi)`, batch shape ``()``."""
        return dist.Categorical(probs=self.class_probs)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the generative program with ``x`` observed, and ``y`` observed when given;
        returns z.

        :param mask: optional boolean tensor of shape ``(N,)`` or of ``x``'s shape: it masks
            the likelihood only (as for :class:`~models.vae.VAE`).
        :param y: int64 class labels of shape ``(N,)``, or ``None`` for unlabelled data.
        :raises ValueError: for bad labels (see :func:`~models.conditional.check_labels`).
        """
        if y is not None:
            y = check_labels(y, self.num_classes, x.shape[0])
        datapoint_mask, feature_mask = split_mask(mask, x)
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample(
                "y",
                self.label_prior(),
                obs=y,
                infer={} if y is not None else {"enumerate": "parallel"},
            )
            z = pyro.sample("z", self.prior())
            with mask_datapoints(datapoint_mask):
                pyro.sample("x", self.decode(z, y, feature_mask), obs=x)
        return z

    @torch.no_grad()
    def generate(
        self, num_samples: int, y: torch.Tensor | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Samples ``z ~ p(z)``, ``x ~ p(x | z, y)`` with ``y`` given (one class as an
        ``int``, or labels of shape ``(num_samples,)``) or drawn from ``p(y)``; returns ``(z,
        mean of p(x | z, y), x)``."""
        if y is None:
            y = self.label_prior().sample((num_samples,))
        return super().generate(num_samples, y)
