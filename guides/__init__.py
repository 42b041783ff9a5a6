"""First floor: amortized guides q(z|x), their posterior families and encoders. May import
models/."""

from guides.amortized import AmortizedGuide, make_guide
from guides.encoders import ENCODERS, MLPEncoder
from guides.families import FAMILIES, DiagonalNormal, Family
from guides.normal import DiagonalNormalGuide
from guides.registry import GUIDES

__all__ = [
    "ENCODERS",
    "FAMILIES",
    "GUIDES",
    "AmortizedGuide",
    "DiagonalNormal",
    "DiagonalNormalGuide",
    "Family",
    "MLPEncoder",
    "make_guide",
]
