"""Where datasets live on disk: the default data directory and a writable cache root."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "default_data_dir", "resolve_data_dir", "writable_root"]

#: Environment variable that overrides the default data directory.
DATA_DIR_ENV = "PPL_VAE_DATA"


def default_data_dir() -> Path:
    """Return the directory datasets are looked for (and downloaded to) by default.

    In order: ``$PPL_VAE_DATA`` if set and non-empty, else ``$XDG_CACHE_HOME/ppl_vae``,
    else ``~/.cache/ppl_vae``. The directory is not created.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "ppl_vae"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return ``data_dir`` as a :class:`~pathlib.Path`, or :func:`default_data_dir` if ``None``."""
    return default_data_dir() if data_dir is None else Path(data_dir).expanduser()


def _is_writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError:
        return False
    return True


def writable_root(preferred: Path) -> Path:
    """Return ``preferred`` (created if needed) when it is writable, else a per-user temp dir.

    The fallback, ``<tempdir>/ppl_vae-<uid>``, is stable across calls so a later load reuses
    what an earlier one wrote there.
    """
    if _is_writable(preferred):
        return preferred
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"ppl_vae-{uid}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback
