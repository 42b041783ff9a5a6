r"""The classifier :math:`q(y \mid x)` of a semi-supervised guide: a network's features
followed by a linear softmax read-out.

.. math::

    h = h_\phi(x), \qquad q(y \mid x) = \mathrm{Cat}\!\left(\mathrm{softmax}(W h + b)\right).

The body is any network with ``features(x) -> h`` and ``feature_dim``: the encoders of
:data:`guides.encoders.ENCODERS` (an MLP, or a convolutional network for images) serve as
they are; :meth:`Classifier.build` removes their Gaussian head, which would take no part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from guides.encoders import ENCODERS
from models.conditional import check_num_classes

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """``classifier(x) -> logits`` of shape ``(..., num_classes)``; :meth:`distribution`
    returns :math:`q(y \\mid x)` as a :class:`~pyro.distributions.Categorical`.

    :param body: network with ``features(x) -> h`` and ``feature_dim``, e.g.
        :class:`~guides.encoders.MLPEncoder`.
    :param num_classes: number of classes.
    """

    def __init__(self, body: nn.Module, num_classes: int) -> None:
        super().__init__()
        check_num_classes(num_classes)
        self.body = body
        self.num_classes = num_classes
        self.head = nn.Linear(int(body.feature_dim), num_classes)

    @classmethod
    def build(
        cls,
        data_shape: Sequence[int],
        num_classes: int,
        *,
        encoder: str = "mlp",
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        input_scale: float = 1.0,
        **options: Any,
    ) -> Classifier:
        """A classifier whose body is the encoder registered as ``encoder`` (its
        ``features`` stage), e.g. ``Classifier.build((64,), 10, hidden=(256,))``.

        :param options: further encoder options, e.g. ``image_shape=(1, 8, 8)`` for
            ``encoder="conv"``.
        :raises ValueError: for an unknown encoder.
        """
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(ENCODERS)}")
        body = ENCODERS[encoder](
            data_shape, 1, hidden=hidden, activation=activation, input_scale=input_scale, **options
        )
        return cls.from_encoder(body, num_classes)

    @classmethod
    def from_encoder(cls, encoder: nn.Module, num_classes: int) -> Classifier:
        """A classifier on the features of an encoder of :data:`~guides.encoders.ENCODERS`
        (anything whose ``features`` reads ``net[:-1]``); the encoder's Gaussian head,
        ``net[-1]``, would take no part and is removed."""
        encoder.net[-1] = nn.Identity()
        return cls(encoder, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body.features(x))

    def distribution(self, x: torch.Tensor) -> dist.Categorical:
        r""":math:`q(y \mid x)` for a batch ``x``: batch shape ``(N,)``."""
        return dist.Categorical(logits=self(x))
