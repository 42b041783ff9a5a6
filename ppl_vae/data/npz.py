"""Reading ``.npz`` archives of arrays, with damaged files reported as DataError."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ppl_vae.errors import DataError

__all__ = ["read_npz_arrays"]

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def read_npz_arrays(path: Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (never unpickling objects): all of them, or exactly
    ``names``, in which case a missing one is an error listing what was found."""
    try:
        archive = np.load(path, allow_pickle=False)
    except _READ_ERRORS as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        expected = "" if names is None else f" {list(names)}"
        raise DataError(f"{path}: expected an .npz archive of arrays{expected}")
    with archive:
        wanted = list(archive.files if names is None else names)
        missing = [name for name in wanted if name not in archive.files]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {missing}; expected {wanted}, found {archive.files}"
            )
        try:
            return {name: np.asarray(archive[name]) for name in wanted}
        except _READ_ERRORS as error:
            raise DataError(f"{path}: not a readable .npz file ({error})") from error
