"""Build a posterior family by its registry name, checking its options first."""

from __future__ import annotations

import inspect
from typing import Any

from guides.families import FAMILIES, Family

__all__ = ["make_family"]


def make_family(name: str, latent_dim: int, feature_dim: int, **options: Any) -> Family:
    """``FAMILIES[name](latent_dim, feature_dim, **options)``.

    :raises ValueError: for an unknown name (the message lists the registered ones) or an
        option the family does not take (the message lists its options).
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown posterior family {name!r}; choose one of {sorted(FAMILIES)}")
    family_class = FAMILIES[name]
    accepted = list(inspect.signature(family_class).parameters)[2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"family {name!r} has no option {unknown[0]!r}; its options are {accepted}"
        )
    return family_class(latent_dim, feature_dim, **options)
