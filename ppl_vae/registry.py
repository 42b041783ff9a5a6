"""Name lookup in the dict registries of models/ and guides/ with a helpful error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from ppl_vae.errors import UnknownNameError

__all__ = ["lookup"]

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``registry[name]``; an unknown name raises :class:`UnknownNameError`.

    :param kind: what the registry holds, e.g. ``"likelihood"``, used in the message.
    """
    try:
        return registry[name]
    except KeyError:
        choices = ", ".join(sorted(registry))
        raise UnknownNameError(f"unknown {kind} {name!r}; choose one of: {choices}") from None
