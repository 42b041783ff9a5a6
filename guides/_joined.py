"""Checks and defaults shared by the guides whose second network reads the encoder features
joined to another input: :class:`~guides.conditional.ConditionalGuide` (``cat(h,
onehot(y))``) and :class:`~guides.hierarchical.HierarchicalGuide` (``cat(h, z2)``)."""

from __future__ import annotations

from torch import nn

from guides.families import FAMILIES, Family

__all__ = ["check_joined_inputs", "family_or_normal"]


def check_joined_inputs(network: nn.Module, expected: int, *, name: str, reads: str) -> None:
    """Raise ``ValueError`` if ``network`` declares ``in_features`` other than ``expected``.

    :param name: what the message calls the network, e.g. ``"bottom network"``.
    :param reads: what it reads and how ``expected`` is counted, e.g. ``"cat(h, z2),
        encoder.feature_dim + encoder.latent_dim"``.
    """
    in_features = getattr(network, "in_features", expected)
    if in_features != expected:
        raise ValueError(f"the {name} takes {in_features} inputs; it reads {reads} = {expected}")


def family_or_normal(family: Family | None, latent_dim: int, feature_dim: int) -> Family:
    """``family``, or the diagonal Normal family for ``(latent_dim, feature_dim)`` if None."""
    return FAMILIES["normal"](latent_dim, feature_dim) if family is None else family
