"""Deterministic derivation of independent seeds from a master seed and counters."""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that is a fixed function of ``keys`` (e.g. ``(seed, epoch)``), with
    streams for different keys statistically independent (NumPy's ``SeedSequence`` hash).
    32 bits because ``pyro.set_rng_seed`` also seeds NumPy's legacy generator."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])
