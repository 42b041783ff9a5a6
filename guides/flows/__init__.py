"""Amortized normalizing-flow layers: each is an :class:`AmortizedFlow` whose
``condition(h)`` returns a fresh transform reading its parameters off the encoder features
``h(x)``; :mod:`guides.families.flow` stacks them into posterior families."""

from guides.flows.base import AmortizedFlow
from guides.flows.iaf import AmortizedIAF
from guides.flows.planar import AmortizedPlanar, PlanarTransform
from guides.flows.spline import AmortizedSpline
from guides.flows.sylvester import AmortizedSylvester, SylvesterTransform

__all__ = [
    "AmortizedFlow",
    "AmortizedIAF",
    "AmortizedPlanar",
    "AmortizedSpline",
    "AmortizedSylvester",
    "PlanarTransform",
    "SylvesterTransform",
]
