"""First floor: amortized guides q(z|x), their posterior families and encoders. May import
models/."""

from guides.amortized import AmortizedGuide, make_guide
from guides.classifier import Classifier
from guides.conditional import ConditionalGuide
from guides.encoders import ENCODERS, ConvEncoder, MLPEncoder
from guides.families import FAMILIES, DiagonalNormal, Family
from guides.family_factory import make_family
from guides.hierarchical import HierarchicalGuide
from guides.local import LocalGuide
from guides.normal import DiagonalNormalGuide
from guides.registry import GUIDES
from guides.semi_supervised import SemiSupervisedGuide

__all__ = [
    "ENCODERS",
    "FAMILIES",
    "GUIDES",
    "AmortizedGuide",
    "Classifier",
    "ConditionalGuide",
    "ConvEncoder",
    "DiagonalNormal",
    "DiagonalNormalGuide",
    "Family",
    "HierarchicalGuide",
    "LocalGuide",
    "MLPEncoder",
    "SemiSupervisedGuide",
    "make_family",
    "make_guide",
]
