"""Posterior families q(z | x) by name: ``FAMILIES[name](latent_dim, feature_dim, **options)``."""

from guides.families.base import Family
from guides.families.gaussian import DiagonalNormal

#: Families by name; each is ``FAMILIES[name](latent_dim, feature_dim, **options)``.
FAMILIES: dict[str, type[Family]] = {"normal": DiagonalNormal}

__all__ = ["FAMILIES", "DiagonalNormal", "Family"]
