"""Errors the engine raises on bad input, each with a message that names the fix.

Every error derives from :class:`PplVaeError`, so the command line can print the
message alone (no traceback) and a Python caller can catch one family.
"""

from __future__ import annotations

__all__ = [
    "PplVaeError",
    "DataError",
    "DatasetNotFoundError",
    "UnknownNameError",
    "ConfigError",
    "CheckpointError",
    "ContractError",
    "TrainingDivergedError",
]


class PplVaeError(Exception):
    """Base class of every error ppl_vae raises on purpose."""


class DataError(PplVaeError, ValueError):
    """Data that cannot be used as given: wrong shape, NaN, outside a likelihood's support."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's files are missing; the message says where we looked and how to get them."""


class UnknownNameError(PplVaeError, ValueError):
    """A registry lookup with a name that is not registered; the message lists the choices."""


class ConfigError(PplVaeError, ValueError):
    """An inconsistent or invalid configuration value."""


class CheckpointError(PplVaeError):
    """A checkpoint or run directory that is missing, truncated, corrupt or incompatible."""


class ContractError(PplVaeError):
    """A model/guide pair that breaks the contract the engine relies on (see DESIGN.md)."""


class TrainingDivergedError(PplVaeError):
    """The training loss became NaN or infinite."""
