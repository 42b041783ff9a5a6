r"""A conditional VAE for labelled data, :math:`p(z)\, p(x \mid z, y)` with the label observed.

.. math::

    z \sim p_\lambda(z), \qquad
    x \mid z, y \sim p_\theta\!\left(x \mid \mathrm{dec}([z, \mathrm{onehot}(y)])\right),

the conditional generative model of Kingma et al. [1] (their M2 with the label always
observed) and Sohn et al. [2] (the CVAE, here with an unconditional prior :math:`p(z)`). The
guide :class:`guides.conditional.ConditionalGuide` is :math:`q(z \mid x, y)`; the ELBO
bounds :math:`\log p(x \mid y)`. With the label fixed, ``generate(num_samples, y)`` draws
class-conditional samples, and decoding one ``z`` with each class separates style (z) from
content (y).

Labels are the keyword ``y``, int64 class indices of shape ``(N,)``: the engine calls
``model(x, y=labels)`` and ``model(x, mask, y=labels)`` (see :mod:`ppl_vae.programs`).

References

[1] Kingma, Rezende, Mohamed & Welling (2014), *Semi-supervised Learning with Deep
    Generative Models*, NeurIPS.
[2] Sohn, Lee & Yan (2015), *Learning Structured Output Representation using Deep
    Conditional Generative Models*, NeurIPS.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from models.likelihoods import Likelihood
from models.likelihoods.base import check_decoder_outputs, likelihood_of_flat
from models.masking import mask_datapoints, split_mask

__all__ = ["ConditionalVAE", "check_labels", "check_num_classes", "one_hot"]


def check_num_classes(num_classes: int) -> int:
    """``num_classes`` unchanged if it is a positive ``int`` (booleans are not).

    :raises ValueError: otherwise.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def check_labels(y: torch.Tensor | None, num_classes: int, num_data: int) -> torch.Tensor:
    """``y`` as int64 class indices of shape ``(num_data,)``.

    :raises ValueError: naming the fix, if labels are missing, not an integer tensor, of the
        wrong shape, or outside ``0 .. num_classes - 1``.
    """
    if y is None:
        raise ValueError(
            "this conditional program needs class labels: call it as fn(x, y=labels) with "
            f"labels an int64 tensor of shape ({num_data},) (in training, pass train_labels=)"
        )
    if not isinstance(y, torch.Tensor):
        raise ValueError(
            f"labels must be a torch tensor of int64 class indices, got {type(y).__name__}; "
            "convert with torch.as_tensor(labels, dtype=torch.int64)"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer class indices (int64), got dtype {y.dtype}; "
            "convert with y.long()"
        )
    if tuple(y.shape) != (num_data,):
        raise ValueError(
            f"labels must hold one class index per datapoint, shape ({num_data},), got "
            f"{tuple(y.shape)}"
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), got values "
            f"from {int(y.min())} to {int(y.max())}; build the model with num_classes="
            f"{max(int(y.max()) + 1, num_classes)} or re-index the labels from 0"
        )
    return y.long()


def one_hot(y: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """``onehot(y)`` in ``like``'s dtype, expanded to ``like``'s batch shape: labels of shape
    ``(N,)`` against latents of shape ``(K, N, d)`` give ``(K, N, num_classes)``."""
    codes = F.one_hot(y, num_classes).to(dtype=like.dtype, device=like.device)
    batch = torch.broadcast_shapes(like.shape[:-1], codes.shape[:-1])
    return codes.expand(*batch, num_classes)


class ConditionalVAE(PyroModule):
    """``model(x, mask=None, *, y)``: z ~ prior, x | z, y ~ likelihood(decoder(cat(z,
    onehot(y)))).

    :param prior: module whose ``forward()`` returns a distribution over z with
        ``event_dim == 1``.
    :param decoder: network from ``(..., latent_dim + num_classes)`` (z first) to
        ``(..., likelihood.num_params)``.
    :param likelihood: a :class:`~models.likelihoods.Likelihood`; it fixes ``data_shape``.
    :param num_classes: number of classes; labels are ``0 .. num_classes - 1``.
    """

    def __init__(
        self, prior: nn.Module, decoder: nn.Module, likelihood: Likelihood, num_classes: int
    ) -> None:
        super().__init__()
        check_num_classes(num_classes)
        check_decoder_outputs(decoder, likelihood)
        latent_dim = getattr(prior, "latent_dim", None)
        decoder_in = getattr(decoder, "latent_dim", None)
        if latent_dim is not None and decoder_in is not None:
            if decoder_in != latent_dim + num_classes:
                raise ValueError(
                    f"the decoder takes {decoder_in} inputs; a conditional VAE's decoder "
                    f"takes latent_dim + num_classes = {latent_dim} + {num_classes}"
                )
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        to_pyro_module_(self)  # plain nn.Module parts emit pyro.param statements

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one datapoint, e.g. ``(64,)``."""
        return self.likelihood.data_shape

    def decode(
        self, z: torch.Tensor, y: torch.Tensor, feature_mask: torch.Tensor | None = None
    ) -> dist.Distribution:
        r""":math:`p(x \mid z, y)` for latents ``(..., latent_dim)`` and checked labels whose
        shape broadcasts against ``z.shape[:-1]``."""
        codes = one_hot(y, self.num_classes, z)
        params = self.decoder(torch.cat([z.expand(*codes.shape[:-1], -1), codes], dim=-1))
        return likelihood_of_flat(self.likelihood, params, feature_mask)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the generative program with ``x`` and the labels ``y`` observed; returns z.

        :param mask: optional boolean tensor of shape ``(N,)`` or of ``x``'s shape, as for
            :class:`~models.vae.VAE`: it masks the likelihood only.
        :param y: int64 class labels of shape ``(N,)``; required (keyword).
        :raises ValueError: for missing or bad labels (see :func:`check_labels`).
        """
        y = check_labels(y, self.num_classes, x.shape[0])
        datapoint_mask, feature_mask = split_mask(mask, x)
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            with mask_datapoints(datapoint_mask):
                pyro.sample("x", self.decode(z, y, feature_mask), obs=x)
        return z

    @torch.no_grad()
    def generate(
        self, num_samples: int, y: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class-conditional samples ``z ~ p(z)``, ``x ~ p(x | z, y)``; returns ``(z, mean of
        p(x | z, y), x)``.

        :param y: one class for all samples (an ``int``) or labels of shape
            ``(num_samples,)``.
        """
        z = self.prior().sample((num_samples,))
        if isinstance(y, int) and not isinstance(y, bool):
            y = torch.full((num_samples,), y, dtype=torch.int64, device=z.device)
        y = check_labels(y, self.num_classes, num_samples)
        px = self.decode(z, y.to(z.device))
        return z, px.mean, px.sample()
