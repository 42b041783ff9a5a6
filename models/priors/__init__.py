"""Priors p(z): modules whose ``forward()`` returns a distribution with ``event_dim == 1``.

Parameters of fixed priors are buffers, so ``.to(device)`` and checkpoints carry them. One
module per prior; this package holds the registry.
"""

from models.priors.normal import StandardNormalPrior

__all__ = ["PRIORS", "StandardNormalPrior"]

#: Priors by name; each is constructed as ``PRIORS[name](latent_dim, **options)``.
PRIORS: dict[str, type] = {"normal": StandardNormalPrior}
