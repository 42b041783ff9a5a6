"""Guides by name: ``GUIDES[name](encoder, **options)`` builds q(z | x) of that family."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from guides.amortized import make_guide
from guides.families import FAMILIES
from guides.normal import DiagonalNormalGuide

__all__ = ["GUIDES"]

#: Guides by name; each is ``GUIDES[name](encoder, **options)``. The names are those of
#: :data:`guides.families.FAMILIES`; the options are the family's.
GUIDES: dict[str, Callable[..., nn.Module]] = {
    name: functools.partial(make_guide, name) for name in FAMILIES if name != "normal"
}
GUIDES["normal"] = DiagonalNormalGuide
