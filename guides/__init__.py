"""First floor: amortized guides q(z|x) and their encoders. May import models/."""

from guides.encoders import ENCODERS, MLPEncoder
from guides.normal import GUIDES, DiagonalNormalGuide

__all__ = ["ENCODERS", "GUIDES", "DiagonalNormalGuide", "MLPEncoder"]
