"""Statically binarized MNIST (Larochelle & Murray, 2011): 50000/10000/10000 images, no labels.

Read from ``binarized_mnist.npz`` (uint8 arrays ``train``, ``valid``, ``test``) or from the
original text files ``binarized_mnist_{train,valid,test}.amat`` (whitespace-separated 0/1, one
image per row), which :func:`download_binarized_mnist` fetches.
"""

from __future__ import annotations

import math
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ppl_vae.atomic import atomic_open
from ppl_vae.data.dataset import SPLITS, Dataset
from ppl_vae.data.npz import read_npz_arrays
from ppl_vae.data.paths import resolve_data_dir
from ppl_vae.errors import DataError, DatasetNotFoundError

__all__ = [
    "BASE_URL",
    "NPZ_NAME",
    "SUBDIR",
    "amat_name",
    "download_binarized_mnist",
    "load_binarized_mnist",
    "read_amat",
    "read_npz",
]

#: Where the canonical ``.amat`` files are published.
BASE_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
#: The single-file form: uint8 arrays ``train``, ``valid``, ``test`` of 0/1.
NPZ_NAME = "binarized_mnist.npz"
#: Sub-directory of the data directory that downloads go to (and that is searched).
SUBDIR = "binarized_mnist"


def amat_name(split: str) -> str:
    """The file name of one split in the original text format."""
    return f"binarized_mnist_{split}.amat"


def _check_binary(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Check a 2-D array of 0/1 with a square feature count; return it as uint8."""
    if array.ndim != 2 or array.shape[0] == 0:
        raise DataError(f"{path}: {what} must be a non-empty 2-D array, got shape {array.shape}")
    side = math.isqrt(array.shape[1])
    if side * side != array.shape[1] or side == 0:
        raise DataError(
            f"{path}: {what} has {array.shape[1]} features per row, not a square image size"
        )
    bad = (array != 0) & (array != 1)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {what} must hold only 0/1, found {array[row, col]!r} at row {row + 1}, "
            f"column {col + 1}"
        )
    return array.astype(np.uint8, copy=False)


def _parse_binary_rows(text: bytes) -> np.ndarray | None:
    """Fast path for the canonical layout: single-character 0/1 tokens, equal-length rows.

    Returns ``None`` for anything else, so the caller can fall back to a slower parser that
    explains what is wrong.
    """
    lines = [line for line in text.split(b"\n") if line.strip()]
    if not lines or any(pair in line for line in lines for pair in (b"00", b"01", b"10", b"11")):
        return None
    rows = [line.translate(None, delete=b" \t\r") for line in lines]
    width = len(rows[0])
    if any(len(row) != width for row in rows):
        return None
    values = np.frombuffer(b"".join(rows), dtype=np.uint8) - np.uint8(ord("0"))
    if (values > 1).any():
        return None
    return values.reshape(len(rows), width)


def read_amat(path: Path) -> np.ndarray:
    """Read one ``.amat`` file into a uint8 array ``(rows, features)``.

    :raises DataError: naming the file, for ragged rows, non-numbers, values other than 0/1,
        an empty file or a feature count that is not a perfect square.
    """
    array = _parse_binary_rows(path.read_bytes())
    if array is None:
        try:
            array = np.loadtxt(path, dtype=np.float32, ndmin=2)
        except ValueError as error:
            raise DataError(f"{path}: not a valid binarized MNIST .amat file ({error})") from error
    return _check_binary(array, path, "the file")


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read ``binarized_mnist.npz`` into uint8 arrays keyed ``train``, ``valid``, ``test``.

    :raises DataError: naming the file, if it is unreadable, lacks a split, or holds anything
        but 0/1 rows of one square feature count.
    """
    arrays = read_npz_arrays(path, SPLITS)
    return {split: _check_binary(arrays[split], path, f"array {split!r}") for split in SPLITS}


def download_binarized_mnist(data_dir: Path, *, base_url: str | None = None) -> Path:
    """Fetch the three ``.amat`` files into ``data_dir/binarized_mnist/`` and return that folder.

    Files already there are kept. Each file is written to a temporary file in the same folder
    and moved into place with :func:`os.replace`, so an interrupted download never leaves a
    truncated file under the final name.

    :param base_url: where the files live; defaults to :data:`BASE_URL` (read at call time).
        Any URL :func:`urllib.request.urlopen` accepts works, ``file://`` included.
    :raises DatasetNotFoundError: if a file cannot be fetched.
    """
    base = (base_url or BASE_URL).rstrip("/")
    target = Path(data_dir) / SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        final = target / amat_name(split)
        if final.is_file():
            continue
        url = f"{base}/{amat_name(split)}"
        try:
            with (
                atomic_open(final, "wb") as out,
                urllib.request.urlopen(url, timeout=60) as response,
            ):
                shutil.copyfileobj(response, out)
        except OSError as error:  # urllib.error.URLError is an OSError
            raise DatasetNotFoundError(
                f"could not download {url} to {final}: {error}. On a machine without network, "
                f"copy {NPZ_NAME} or the .amat files into {data_dir} instead."
            ) from error
    return target


def _amat_dir(directory: Path) -> Path | None:
    if all((directory / amat_name(split)).is_file() for split in SPLITS):
        return directory
    return None


def load_binarized_mnist(
    data_dir: Path | None = None, download: bool = False, *, base_url: str | None = None
) -> Dataset:
    """Load static binarized MNIST from ``data_dir`` (default :func:`default_data_dir`).

    Looked for, in order: ``data_dir/binarized_mnist.npz``,
    ``data_dir/binarized_mnist/binarized_mnist.npz``, the three ``.amat`` files in
    ``data_dir`` and the three ``.amat`` files in ``data_dir/binarized_mnist/``. With
    ``download=True`` and nothing found, the ``.amat`` files are fetched from ``base_url``
    (default :data:`BASE_URL`) into ``data_dir/binarized_mnist/``.

    Values are 0/1 as float32; ``image_shape`` is ``(1, s, s)`` with ``s * s`` features (28 for
    the real data); ``max_value`` is 1; there are no labels.

    :raises DatasetNotFoundError: if nothing is found (and ``download`` is off); the message
        lists every place looked and how to get the data.
    :raises DataError: naming the file, if a file is corrupt.
    """
    root = resolve_data_dir(data_dir)
    npz_candidates = [root / NPZ_NAME, root / SUBDIR / NPZ_NAME]
    amat_candidates = [root, root / SUBDIR]

    source: Path | None = next((path for path in npz_candidates if path.is_file()), None)
    if source is not None:
        arrays = read_npz(source)
    else:
        source = next((d for d in amat_candidates if _amat_dir(d) is not None), None)
        if source is None and download:
            source = download_binarized_mnist(root, base_url=base_url)
        if source is None:
            looked = [str(path) for path in npz_candidates]
            looked += [f"{d}/binarized_mnist_{{train,valid,test}}.amat" for d in amat_candidates]
            raise DatasetNotFoundError(
                "binarized_mnist not found. Looked for:\n  "
                + "\n  ".join(looked)
                + f"\nTo get it: put {NPZ_NAME} (uint8 arrays train/valid/test) or the three "
                "binarized_mnist_{train,valid,test}.amat files in one of those places, point "
                "--data-dir (data_dir=...) at a folder that holds them, or pass --download "
                f"(download=True) on a machine with network to fetch them from {BASE_URL}."
            )
        arrays = {split: read_amat(source / amat_name(split)) for split in SPLITS}

    widths = {split: arrays[split].shape[1] for split in SPLITS}
    if len(set(widths.values())) != 1:
        raise DataError(f"{source}: the splits disagree on the number of features: {widths}")
    features = widths["train"]
    side = math.isqrt(features)
    tensors = {split: torch.from_numpy(arrays[split].astype(np.float32)) for split in SPLITS}
    return Dataset(
        name="binarized_mnist",
        train=tensors["train"],
        valid=tensors["valid"],
        test=tensors["test"],
        data_shape=(features,),
        image_shape=(1, side, side),
        max_value=1.0,
        default_likelihood="bernoulli",
        source=str(source),
    )
