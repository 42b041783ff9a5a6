"""Atomic file writes: write a temporary file beside the target, fsync, then rename.

A reader (or a crash) sees either the old file or the complete new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "write_json"]


def _mode_for(target: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual ``0o666 & ~umask``
    (``mkstemp`` itself creates files readable by their owner only)."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file in ``path``'s directory; on a clean exit it replaces ``path``
    (``os.replace``, atomic on POSIX); on an error it is removed and ``path`` is untouched."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    try:
        os.chmod(temp_name, _mode_for(target))
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path, "w") as stream:
        json.dump(data, stream, indent=2, sort_keys=False)
        stream.write("\n")
