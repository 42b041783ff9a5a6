"""Posterior families q(z | x) by name: ``FAMILIES[name](latent_dim, feature_dim, **options)``."""

from guides.families.base import Family
from guides.families.flow import (
    FlowFamily,
    IAFFamily,
    PlanarFamily,
    SplineFamily,
    SylvesterFamily,
)
from guides.families.gaussian import DiagonalNormal, FullRankNormal, LowRankNormal

#: Families by name; each is ``FAMILIES[name](latent_dim, feature_dim, **options)``.
FAMILIES: dict[str, type[Family]] = {
    "normal": DiagonalNormal,
    "lowrank_normal": LowRankNormal,
    "fullrank_normal": FullRankNormal,
    "iaf": IAFFamily,
    "planar": PlanarFamily,
    "sylvester": SylvesterFamily,
    "spline": SplineFamily,
}

__all__ = [
    "FAMILIES",
    "DiagonalNormal",
    "Family",
    "FlowFamily",
    "FullRankNormal",
    "IAFFamily",
    "LowRankNormal",
    "PlanarFamily",
    "SplineFamily",
    "SylvesterFamily",
]
