"""Run settings from TOML files and ``KEY=VALUE`` command-line options.

A config file holds :class:`~ppl_vae.run.RunConfig` fields at top level, with the
likelihood's and prior's options as tables::

    dataset = "digits"
    likelihood = "negative_binomial"
    prior = "mixture"
    latent_dim = 16
    hidden = [256, 256]
    epochs = 100

    [prior_options]
    num_components = 10

Flags given on the command line override the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from ppl_vae.errors import ConfigError

__all__ = ["parse_option", "read_config_file"]


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of a TOML file as a dict; a missing or malformed file is a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None


def parse_option(text: str) -> tuple[str, Any]:
    """``"num_components=10"`` to ``("num_components", 10)``: the value is read as a TOML
    value (integer, float, boolean, quoted string, list), else kept as a bare string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ConfigError(f"expected an option as KEY=VALUE (e.g. num_components=10), got {text!r}")
    try:
        return key, tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return key, value.strip()
